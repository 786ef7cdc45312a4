"""Import time of the same 1M-Gaussian SH-3 scene as .ply, .spz and .compressed.ply, in one run, to a ready
Gaussian object (decode + Blender attributes + display). Goal: .spz and .compressed.ply within 1.5× of .ply.
Also the decode alone (engine.formats, no Blender), and the same files decoded by gsply when it is installed.

Run: .venv/bin/python benchmarks/format_import_speed.py [--count N] [--runs R] [--decode-only]
(--decode-only needs no bpy: the engine's decode alone, e.g. on the device machine)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _files(count: int) -> dict[str, Path]:
    from engine.formats import write_scene
    from engine.synthetic_scene import make_random_gaussians

    folder = Path(tempfile.gettempdir())
    paths = {ext: folder / f"animate_gaussians_formats_{count}_sh3{ext}" for ext in (".ply", ".spz", ".compressed.ply")}
    if not all(p.exists() for p in paths.values()):
        g = make_random_gaussians(count, sh_degree=3, seed=0)
        for path in paths.values():
            write_scene(path, g)
    return paths


def _time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _decode_only(paths: dict[str, Path], runs: int) -> None:
    """The engine's side (scene_cache decodes the file Render Splats and segmentation send): interleaved rounds,
    medians of wall and CPU time per format."""
    from engine.formats import read_scene

    wall: dict[str, list[float]] = {ext: [] for ext in paths}
    cpu: dict[str, list[float]] = {ext: [] for ext in paths}
    for round_index in range(runs + 1):   # the first round warms the page cache
        for ext, path in paths.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            read_scene(path)
            if round_index:
                wall[ext].append(time.perf_counter() - start)
                cpu[ext].append(time.process_time() - start_cpu)
    for ext in paths:
        print(f"decode {ext} s: {statistics.median(wall[ext]):.3f} (CPU {statistics.median(cpu[ext]):.3f})")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    from engine.formats import inflate
    print(f".spz inflater: {inflate.BACKEND}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--decode-only", action="store_true",
                        help="only what the engine does with these files (no bpy needed): decode each format")
    args = parser.parse_args()
    if args.decode_only:
        _decode_only(_files(args.count), args.runs)
        return

    import bpy

    import blender_addon
    from blender_addon.io import gaussian_object
    from engine.formats import inflate, read_scene

    paths = _files(args.count)
    blender_addon.register()

    def blender_import(path: Path) -> None:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        obj = gaussian_object.import_ply(path)
        bpy.context.evaluated_depsgraph_get()
        assert len(obj.data.vertices) == args.count

    # Interleaved rounds (ply, spz, compressed, ply, ...) so load that drifts during the run hits every format
    # alike; medians per format. The first round warms the page cache and is not counted.
    # CPU time (all threads) beside the wall time: on a machine loaded by other work, the wall time of each
    # import depends on the share of the cores it gets; the CPU time says how much work it did.
    imports: dict[str, list[float]] = {ext: [] for ext in paths}
    cpu: dict[str, list[float]] = {ext: [] for ext in paths}
    decodes: dict[str, list[float]] = {ext: [] for ext in paths}
    for round_index in range(args.runs + 1):
        for ext, path in paths.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            blender_import(path)
            imported, imported_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            start = time.perf_counter()
            read_scene(path)
            if round_index:
                imports[ext].append(imported)
                cpu[ext].append(imported_cpu)
                decodes[ext].append(time.perf_counter() - start)
    results = {ext: statistics.median(v) for ext, v in imports.items()}
    cpu_results = {ext: statistics.median(v) for ext, v in cpu.items()}
    for ext, path in paths.items():
        print(f"{ext:16s} {path.stat().st_size / 1e6:8.1f} MB  import {results[ext]:6.2f} s  "
              f"(CPU {cpu_results[ext]:5.2f} s)  decode only {statistics.median(decodes[ext]):6.2f} s", flush=True)
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f".spz inflater: {inflate.BACKEND} (engine/formats/inflate.py; the extension bundles isal)")
    for ext in (".spz", ".compressed.ply"):
        ratio = results[ext] / results[".ply"]
        print(f"{ext} / .ply import time: {ratio:.2f}x  (goal <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'})")
        print(f"{ext} / .ply import CPU time: {cpu_results[ext] / cpu_results['.ply']:.2f}x")
    try:
        import gsply
    except ImportError:
        return
    gsply.read_spz(paths[".spz"])   # compile its kernels outside the timing
    gsply.plyread(paths[".compressed.ply"])
    print(f"gsply decode: .spz {_time(lambda: gsply.read_spz(paths['.spz']), args.runs):.2f} s, .compressed.ply "
          f"{_time(lambda: gsply.plyread(paths['.compressed.ply']), args.runs):.2f} s")
    blender_addon.unregister()


if __name__ == "__main__":
    main()
