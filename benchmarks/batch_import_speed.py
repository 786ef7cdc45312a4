"""A 1M-Gaussian SH-3 .ply imported by a whole batch process, against Blender's own PLY importer the same way.

Each side runs as `blender -b -P script -- …` would (tools/blender_emulator.py): ours is
`batch.py --ply FILE`; Blender's is a script calling `bpy.ops.wm.ply_import`. A process's time minus the same
process importing a 1-Gaussian file is the import's share (start-up, add-on registration and exit cancel out;
what the import leaves to do at exit — freeing the mesh — stays in; neither side ends its process early). Both
sides run in the bpy module, so both allocate with glibc's malloc (Blender's own Linux builds link jemalloc).
Rounds alternate the two sides so drifting load hits both; medians, and the range of the rounds' ratios. Beside
it, the import alone timed inside the same processes (ours from its --report's import step, written by both of
its processes; Blender's around the operator), which a loaded machine moves far less.
Goal (issue 15): ours ≤ 0.3× Blender's.

Run: .venv/bin/python benchmarks/batch_import_speed.py [--count N] [--runs R]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.import_speed import benchmark_file  # noqa: E402

EMULATOR = ROOT / "tools" / "blender_emulator.py"
BATCH = ROOT / "blender_addon" / "batch.py"
BLENDER_IMPORT = """import sys
import time
import bpy
start = time.perf_counter()
bpy.ops.wm.ply_import(filepath=sys.argv[sys.argv.index("--") + 1])
print("import seconds:", time.perf_counter() - start)
assert len(bpy.context.active_object.data.vertices) > 0
"""
REPORT = Path(tempfile.gettempdir()) / "animate_gaussians_batch_import_report.json"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_seconds(script: Path, *args: str) -> tuple[float, float, float]:
    """(wall, CPU) seconds of one whole process, and the import's own seconds inside it (batch.py's report
    step, or the time around Blender's operator)."""
    start, start_cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run([sys.executable, str(EMULATOR), "-b", "-P", str(script), "--", *args],
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    seconds, cpu = time.perf_counter() - start, _children_cpu() - start_cpu
    if done.returncode != 0:
        raise SystemExit(f"{script.name} {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    if script == BATCH:
        steps = json.loads(REPORT.read_text())["steps"]
        inside = next(step["seconds"] for step in steps if step["name"] == "import_ply")
    else:
        inside = float(done.stdout.split("import seconds:")[1].split()[0])
    return seconds, cpu, inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    big, tiny = benchmark_file(args.count), benchmark_file(1)
    blender_script = Path(tempfile.gettempdir()) / "animate_gaussians_blender_ply_import.py"
    blender_script.write_text(BLENDER_IMPORT)
    sides = {"ours": (BATCH, ("--report", str(REPORT), "--ply")), "blender": (blender_script, ())}
    shares: dict[str, list[float]] = {name: [] for name in sides}
    cpu_shares: dict[str, list[float]] = {name: [] for name in sides}
    wholes: dict[str, list[float]] = {name: [] for name in sides}
    insides: dict[str, list[float]] = {name: [] for name in sides}
    for round_index in range(args.runs + 1):   # the first round warms the page cache
        for name, (script, flag) in sides.items():
            whole, whole_cpu, inside = _process_seconds(script, *flag, str(big))
            empty, empty_cpu, _ = _process_seconds(script, *flag, str(tiny))
            if round_index:
                shares[name].append(whole - empty)
                cpu_shares[name].append(whole_cpu - empty_cpu)
                wholes[name].append(whole)
                insides[name].append(inside)
    ours, blender = (statistics.median(shares[n]) for n in ("ours", "blender"))
    ours_cpu, blender_cpu = (statistics.median(cpu_shares[n]) for n in ("ours", "blender"))
    print(f"file: {args.count:,} Gaussians, SH degree 3, {big.stat().st_size / 1e6:.1f} MB")
    print(f"batch.py --ply process s (median): {statistics.median(wholes['ours']):.2f}")
    print(f"batch.py --ply import share s (process minus a 1-Gaussian import): {ours:.2f}")
    print(f"bpy.ops.wm.ply_import process s (median): {statistics.median(wholes['blender']):.2f}")
    print(f"bpy.ops.wm.ply_import import share s: {blender:.2f}")
    print(f"ours / Blender's PLY import: {ours / blender:.2f}x (goal <= 0.3x)")
    rounds = [o / b for o, b in zip(shares["ours"], shares["blender"])]
    print(f"ours / Blender's PLY import, range over rounds: {min(rounds):.2f}-{max(rounds):.2f}x")
    # CPU time of the same processes: steadier than wall time on a machine loaded by other work
    print(f"batch.py --ply import share CPU s: {ours_cpu:.2f}")
    print(f"bpy.ops.wm.ply_import import share CPU s: {blender_cpu:.2f}")
    print(f"ours / Blender's PLY import, CPU time: {ours_cpu / blender_cpu:.2f}x")
    # The import alone, timed inside the same processes: no start-up or exit in it, so it moves far less with
    # the load than a difference of two whole processes does.
    ours_in, blender_in = (statistics.median(insides[n]) for n in ("ours", "blender"))
    print(f"batch.py --ply import step s, inside the process (report): {ours_in:.2f}")
    print(f"bpy.ops.wm.ply_import s, inside the process: {blender_in:.2f}")
    print(f"ours / Blender's PLY import, inside the process: {ours_in / blender_in:.2f}x")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
