"""Motion lifting speed, with the recovered motion's accuracy beside every timing, through the "animate" request:

1. rigid lifting of a 49-frame 480x270 video of a ~50k-Gaussian segment in a 300k scene, our own render with
   its true depth handed in (oracle depth; target <= 3 s on an H200);
2. (unless --skip-cpu) issue 17's CPU case: a 24-frame 160x120 mp4 of a uniformly coloured 4k-Gaussian sphere
   translating in the image plane, drawn by another splat renderer (tests/video_sources.py), no depth model,
   motion "auto", on the CPU (target <= 60 s on 2 cores).

    python benchmarks/motion_speed.py [--gaussians 50000] [--frames 49] [--width 480] [--height 270]
        [--device auto] [--lifting KEY=VALUE[,KEY=VALUE] ...] [--skip-cpu] [--skip-gpu]
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
    parser.add_argument("--device", default="auto")
    parser.add_argument("--lifting", nargs="*", default=[], metavar="KEY=VALUE",
                        help="GPU case: more LiftOptions settings to time beside the defaults, each a run of its own "
                             "(e.g. tracking_steps=3,refine_steps=4)")
    parser.add_argument("--skip-cpu", action="store_true", help="leave out the CPU case of issue 17")
    parser.add_argument("--skip-gpu", action="store_true", help="only the CPU case of issue 17")
    args = parser.parse_args()
    if not args.skip_gpu:
        oracle_depth_case(args)
    if not args.skip_cpu:
        foreign_video_cpu_case()


def foreign_video_cpu_case() -> None:
    import os

    import torch

    from engine import fallbacks
    from tests.video_sources import draw_motion, object_scene, steady_motion, track_errors, write_mp4

    frames = 24
    scene = object_scene("sphere", False, 160, 120, object_count=4000, ground_count=2000)
    truth = steady_motion(scene, frames, sideways=0.6)
    video, _ = draw_motion(scene, truth)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ANIMATE_GAUSSIANS_OFFLINE"] = "1"            # no depth model: the no_depth path
        os.environ["ANIMATE_GAUSSIANS_MODELS"] = str(Path(tmp) / "no_models")
        os.environ.pop("ANIMATE_GAUSSIANS_MODEL_DEPTH_ANYTHING_V2_SMALL", None)
        clip = write_mp4(video, Path(tmp) / "sphere.mp4")
        path = scene.write(Path(tmp) / "scene.ply")
        params = {"ply_path": str(path), "prompt": "", "generator": "video", "frames": frames, "fps": 24,
                  "width": scene.width, "height": scene.height, "device": "cpu", "motion": "auto",
                  "video_path": str(clip), "options": {}}
        arrays = {"indices": scene.indices, "viewmat": scene.viewmat, "K": scene.K, "file_to_world": np.eye(4)}
        t0 = time.perf_counter()
        with fallbacks.collecting(params) as warnings:
            result, out = handle_animate(None, params, arrays)
        seconds = time.perf_counter() - t0
    errors = track_errors(scene, truth, out["transforms"])
    print("cpu_case: issue 17 sphere, 24 frames 160x120 mp4 by another renderer, 4k Gaussians, no depth, auto")
    print(f"cpu_threads: {torch.get_num_threads()}")
    print(f"cpu_sphere_lift_s: {seconds:.2f}")
    print(f"cpu_sphere_motion: {result['motion']}")
    print(f"cpu_sphere_warnings: {','.join(w['code'] for w in warnings) or 'none'}")
    print(f"cpu_sphere_image_plane_error_of_size: {errors['image_plane']:.4f}")
    print(f"cpu_sphere_view_ray_drift_of_size: {errors['view_ray']:.4f}")
    print(f"cpu_sphere_jitter_of_size: {errors['jitter']:.4f}")


def oracle_depth_case(args) -> None:

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
        settings = [{}] + [{k: float(v) if "." in v else int(v) for k, v in (kv.split("=") for kv in s.split(","))}
                           for s in args.lifting]
        for extra in settings:
            label = "" if not extra else "_" + "_".join(f"{k}_{v}" for k, v in extra.items())
            if extra:
                print(f"lifting options: {extra}")
            params = {"ply_path": str(path), "prompt": "", "generator": "video", "frames": args.frames, "fps": 24,
                      "width": args.width, "height": args.height, "device": device, "motion": "rigid",
                      "options": {"lifting": extra}}
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
            print(f"rigid_lift_{args.frames}_frames_oracle_depth{label}_s: {seconds:.2f}")
            print(f"rigid_lift{label}_median_translation_error_of_size: {np.median(trans):.4f}")
            print(f"rigid_lift{label}_median_rotation_error_deg: {np.median(rot):.3f}")
            print(f"rigid_lift{label}_max_rotation_error_deg: {np.max(rot):.3f}")


if __name__ == "__main__":
    main()
