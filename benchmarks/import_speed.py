"""Import speed and memory of a 1M-Gaussian SH-3 .ply: ours (to a ready, evaluated object with its display)
against Blender's own PLY importer on the same file. One figure per line.

Run: .venv/bin/python benchmarks/import_speed.py [--count N] [--runs R]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def benchmark_file(count: int) -> Path:
    """The 1M-style random SH-3 .ply the import benchmarks share (written once into the temp folder)."""
    from engine.ply import write_gaussians
    from engine.synthetic_scene import make_random_gaussians

    path = Path(tempfile.gettempdir()) / f"animate_gaussians_bench_{count}_sh3.ply"
    if not path.exists():
        write_gaussians(path, make_random_gaussians(count, sh_degree=3, seed=0))
    return path


def _vm_hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _vm_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _reset_hwm() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


def _memory_run(path: str) -> None:
    """In a fresh process (child mode): peak RSS increase of one import, printed as bytes."""
    import bpy
    import blender_addon
    from blender_addon.io import gaussian_object

    blender_addon.register()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    _reset_hwm()
    base = _vm_rss_bytes()
    obj = gaussian_object.import_ply(path)
    bpy.context.evaluated_depsgraph_get()
    print(_vm_hwm_bytes() - base, len(obj.data.vertices))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_run(args.memory_child)
        return

    path = benchmark_file(args.count)
    size = path.stat().st_size
    # Memory first, in a fresh process, so earlier runs' freed memory does not hide the peak.
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(path)], check=True,
                         capture_output=True, text=True).stdout.split()
    peak, imported = int(out[-2]), int(out[-1])
    assert imported == args.count, (imported, args.count)

    import bpy
    import blender_addon
    from blender_addon.io import gaussian_object

    blender_addon.register()
    ours, blender = [], []
    for _ in range(args.runs):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        start = time.perf_counter()
        obj = gaussian_object.import_ply(path)
        obj.evaluated_get(bpy.context.evaluated_depsgraph_get())   # display built and evaluated
        ours.append(time.perf_counter() - start)
        assert len(obj.data.vertices) == args.count
    for _ in range(max(1, args.runs // 2)):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        start = time.perf_counter()
        bpy.ops.wm.ply_import(filepath=str(path))
        blender.append(time.perf_counter() - start)

    print(f"file: {args.count:,} Gaussians, SH degree 3, {size / 1e6:.1f} MB")
    print(f"ours_import_median_s: {statistics.median(ours):.3f}")
    print(f"ours_import_first_run_s: {ours[0]:.3f}")
    print(f"blender_ply_import_median_s: {statistics.median(blender):.3f}")
    print(f"ours_peak_memory_delta_MB: {peak / 1e6:.1f}")
    print(f"ours_peak_memory_over_file_size: {peak / size:.2f}")


if __name__ == "__main__":
    main()
