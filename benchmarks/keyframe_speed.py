"""Keyframe writing speed (CPU, the bpy module): 10 objects x 10 channels x 1000 frames of smooth motion reduced
to Bézier keys within a tolerance and written with foreach_set (issue 5 target: <= 0.2 s). One figure a line."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bpy  # noqa: E402
import numpy as np  # noqa: E402

from blender_addon.animate.keyframes import channel_container, keyframe_count, reduce_keys, write_keys  # noqa: E402

OBJECTS, FRAMES = 10, 1000
GROUPS = (("location", 3, 1e-3), ("rotation_quaternion", 4, 1e-4), ("scale", 3, 1e-3))   # 10 channels


def motion(seed: int) -> dict[str, np.ndarray]:
    """Smooth per-channel curves: a few sines with random periods of 100-400 frames per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(FRAMES, dtype=np.float64)[:, None]
    out = {}
    for name, channels, _ in GROUPS:
        period = rng.uniform(100, 400, (3, channels))
        amp = rng.uniform(0.2, 1.0, (3, channels))
        out[name] = sum(amp[i] * np.sin(2 * np.pi * t / period[i] + i) for i in range(3))
    return out


def main() -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    objects = []
    for i in range(OBJECTS):
        obj = bpy.data.objects.new(f"bench_{i}", None)
        bpy.context.scene.collection.objects.link(obj)
        objects.append(obj)
    curves = [motion(i) for i in range(OBJECTS)]
    times = np.arange(1, FRAMES + 1, dtype=np.float64)

    best_total = best_reduce = np.inf
    for _ in range(3):
        start = time.perf_counter()
        reduced = [{name: reduce_keys(times, c[name], tol) for name, _, tol in GROUPS} for c in curves]
        mid = time.perf_counter()
        for obj, keys in zip(objects, reduced):
            container = channel_container(obj)
            for name, k in keys.items():
                write_keys(container, name, k, group="Object Transforms")
        end = time.perf_counter()
        best_total, best_reduce = min(best_total, end - start), min(best_reduce, mid - start)
    keys = sum(keyframe_count(obj) for obj in objects)
    print(f"keyframes_10obj_10ch_1000f_total_s: {best_total:.4f}")
    print(f"keyframes_reduce_s: {best_reduce:.4f}")
    print(f"keyframes_write_s: {best_total - best_reduce:.4f}")
    print(f"keyframes_written: {keys}")
    print(f"keyframes_dense_samples: {OBJECTS * 10 * FRAMES}")


if __name__ == "__main__":
    main()
