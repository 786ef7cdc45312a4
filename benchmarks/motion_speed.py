"""Motion lifting speed: rigid lifting of a 49-frame video of a ~50k-Gaussian segment at 480x270 (target
<= 10 s on an H100), through the "animate" request, with the recovered motion's accuracy.

    python benchmarks/motion_speed.py [--gaussians 50000] [--frames 49] [--width 480] [--height 270]
        [--iterations 40] [--device auto]
Prints one figure per line ("name: value").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.cameras import intrinsics_from_fov, look_at  # noqa: E402
from engine.motion.frames import render_motion_video  # noqa: E402
from engine.motion.handler import handle_animate  # noqa: E402
from engine.synthetic_scene import UP, make_primitives_scene  # noqa: E402
from tests.motion_fixtures import about, rotation, rotation_error_deg  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=50000, help="Gaussians in the moving segment")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=270)
    parser.add_argument("--iterations", type=int, nargs="*", default=[40, 20])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import torch
    device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    backend = "gsplat" if device == "cuda" else "cpu"
    scene = make_primitives_scene(gaussians_per_object=args.gaussians, sh_degree=3, seed=0)
    box = scene.object("green_box")
    indices = np.flatnonzero(scene.labels == 2)
    viewmat = look_at(box.center + np.array([0.5, -1.5, -1.7]), box.center, up=UP)
    K = intrinsics_from_fov(args.width, args.height, 55.0)
    center = scene.gaussians.means[indices].mean(0).astype(np.float64)
    u = np.linspace(0.0, 1.0, args.frames)
    truth = np.stack([about(rotation(-UP, 60.0 * s), center, (0.4 * s, -0.1 * np.sin(np.pi * s), 0.2 * s))
                      for s in u])
    t0 = time.perf_counter()
    video, depth = render_motion_video(scene.gaussians, indices, truth, viewmat, K, args.width, args.height,
                                       backend=backend)
    print(f"device: {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'}")
    print(f"segment_gaussians: {len(indices)}")
    print(f"scene_gaussians: {scene.gaussians.count}")
    print(f"render_video_s: {time.perf_counter() - t0:.2f}")
    print("inputs: the engine's own render of a known motion and its true depth (oracle depth, no depth model)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene.ply"
        scene.write(path)
        for iterations in args.iterations:
            params = {"ply_path": str(path), "prompt": "", "generator": "video", "frames": args.frames, "fps": 24,
                      "width": args.width, "height": args.height, "device": device, "motion": "rigid",
                      "options": {"lifting": {"iterations": iterations}}}
            arrays = {"indices": indices, "viewmat": viewmat, "K": K, "file_to_world": np.eye(4), "video": video,
                      "depth": depth}
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            result, out = handle_animate(None, params, arrays)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            pts = scene.gaussians.means[indices].astype(np.float64)
            trans = [np.linalg.norm((pts @ a[:3, :3].T + a[:3, 3]).mean(0) - (pts @ b[:3, :3].T + b[:3, 3]).mean(0))
                     / box.size for a, b in zip(out["transforms"][1:], truth[1:])]
            rot = [rotation_error_deg(a, b) for a, b in zip(out["transforms"][1:], truth[1:])]
            print(f"rigid_lift_{args.frames}_frames_{iterations}_iterations_s: {seconds:.2f}")
            print(f"rigid_lift_{iterations}_iterations_median_translation_error_of_size: {np.median(trans):.4f}")
            print(f"rigid_lift_{iterations}_iterations_median_rotation_error_deg: {np.median(rot):.3f}")
            print(f"rigid_lift_{iterations}_iterations_max_rotation_error_deg: {np.max(rot):.3f}")


if __name__ == "__main__":
    main()
