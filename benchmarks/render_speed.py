"""Splat rendering speed: raw gsplat vs the engine's render path, and a 240-frame 1080p render job to MP4.

    python benchmarks/render_speed.py [--gaussians 1000000] [--frames 240] [--skip-process]

Prints one figure per line. Needs CUDA and gsplat for the GPU figures; on a CPU-only machine it measures the
torch rasterizer on a small scene instead.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.cameras import intrinsics_from_fov, look_at  # noqa: E402
from engine.render import render_gaussians  # noqa: E402
from engine.render.job import handle_render, load_objects, posed_gaussians  # noqa: E402
from engine.render.rasterizer import gsplat_available  # noqa: E402
from engine.synthetic_scene import make_primitives_scene, make_random_gaussians  # noqa: E402


class QuietContext:
    def progress(self, fraction: float, stage: str) -> None:
        pass

    def check_cancelled(self) -> None:
        pass


def orbit(frames: int, radius: float, height: float) -> np.ndarray:
    """World-to-camera matrices of a camera circling the origin (Blender world: z up)."""
    angles = np.linspace(0, np.pi / 2, frames)
    return np.stack([look_at((radius * np.sin(a), -radius * np.cos(a), height), (0.0, 0.0, 0.0))
                     for a in angles]).astype(np.float32)


def timed(fn, repeats: int) -> float:
    """Median milliseconds of fn() over `repeats` runs, synchronising CUDA around each."""
    samples = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1e3)
    return float(np.median(samples))


def gpu_benchmarks(n: int, frames: int, run_process: bool) -> None:
    from gsplat import rasterization

    W, H = 1920, 1080
    tmp = Path(tempfile.mkdtemp(prefix="render_speed_"))
    try:
        ply = tmp / "random.ply"
        from engine.ply import write_gaussians
        write_gaussians(ply, make_random_gaussians(n, sh_degree=3, seed=0, extent=2.0))
        axis = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
        viewmats = orbit(frames, 7.0, 2.0)
        K = intrinsics_from_fov(W, H, 60.0).astype(np.float32)
        device = torch.device("cuda")
        g = load_objects(QuietContext(), [{"name": "random", "ply_path": str(ply)}], device)
        print(f"gaussians: {g.count}")

        # Raw gsplat: tensors already in gsplat's form, one call per frame.
        means, quats, scales, sh = posed_gaussians(g, axis[None])
        vm = torch.from_numpy(viewmats[0]).to(device)
        Kt = torch.from_numpy(K).to(device)

        def raw():
            rasterization(means, quats, scales, g.opacities, sh, vm[None], Kt[None], W, H, sh_degree=3,
                          render_mode="RGB+ED")

        def engine_render():
            render_gaussians(means, quats, scales, g.opacities, sh, vm, Kt, W, H, sh_degree=3, backend="gsplat")

        def engine_frame():  # what the job does per frame on the device: move every object, then render
            m, q, s, c = posed_gaussians(g, axis[None])
            render_gaussians(m, q, s, g.opacities, c, vm, Kt, W, H, sh_degree=3, backend="gsplat")

        for fn in (raw, engine_render, engine_frame):
            timed(fn, 5)
        raw_ms, render_ms, frame_ms = timed(raw, 50), timed(engine_render, 50), timed(engine_frame, 50)
        print(f"raw gsplat.rasterization 1080p ms/frame: {raw_ms:.2f}")
        print(f"engine render_gaussians 1080p ms/frame: {render_ms:.2f}")
        print(f"engine render_gaussians / raw: {render_ms / raw_ms:.3f}")
        print(f"engine frame (transform + render) ms/frame: {frame_ms:.2f}")
        print(f"engine frame / raw: {frame_ms / raw_ms:.3f}")
        print(f"transform of all gaussians (posed_gaussians) ms: {timed(lambda: posed_gaussians(g, axis[None]), 20):.2f}")
        from cuda_ext import pack_object_parameters
        start = time.perf_counter()
        for _ in range(20):
            pack_object_parameters(axis[None])
        print(f"of which host-side pack_object_parameters ms: {(time.perf_counter() - start) / 20 * 1e3:.2f}")

        params = {"width": W, "height": H, "fps": 24, "frames": list(range(1, frames + 1)), "near": 0.01,
                  "far": 1000.0, "device": "cuda", "background": [0.0, 0.0, 0.0], "write_video": True,
                  "objects": [{"name": "random", "ply_path": str(ply)}]}
        arrays = {"viewmats": viewmats, "Ks": np.repeat(K[None], frames, 0),
                  "object_matrices": np.repeat(axis[None, None], frames, 0).astype(np.float32)}

        # Raw end to end: gsplat per frame + the same bytes to host, no files (the floor for the job).
        def raw_loop():
            for i in range(frames):
                out, _, _ = rasterization(means, quats, scales, g.opacities, sh,
                                          torch.from_numpy(viewmats[i]).to(device)[None], Kt[None], W, H,
                                          sh_degree=3, render_mode="RGB+ED")
                (out[0, ..., :3].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        raw_loop_s = timed(raw_loop, 1) / 1e3
        print(f"raw gsplat {frames} frames 1080p to host memory s: {raw_loop_s:.2f}")

        spin = np.repeat(axis[None, None], frames, 0)
        for i, angle in enumerate(np.linspace(0, np.pi / 3, frames)):
            c, s_ = np.cos(angle), np.sin(angle)
            spin[i, 0, :3, :3] = np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]]) @ axis[:3, :3]
        for label, write_video, matrices in (("PNGs only, static object", False, arrays["object_matrices"]),
                                             ("PNGs + MP4, static object", True, arrays["object_matrices"]),
                                             ("PNGs + MP4, object moving every frame", True, spin)):
            out_dir = tmp / "job"
            start = time.perf_counter()
            result, _ = handle_render(QuietContext(), {**params, "out_dir": str(out_dir), "write_video": write_video},
                                      {**arrays, "object_matrices": matrices.astype(np.float32)})
            wall = time.perf_counter() - start
            print(f"render job {frames} frames 1080p {label} wall s: {wall:.2f}")
            if write_video:
                print(f"render job {label} video bytes: {Path(result['video']).stat().st_size}")
            shutil.rmtree(out_dir)

        if run_process:
            from blender_addon.engine_link.engine_client import EngineClient

            client = EngineClient(python=sys.executable)
            try:
                start = time.perf_counter()
                client.wait_ready(120)
                print(f"engine process start to hello s: {time.perf_counter() - start:.2f}")
                out_dir = tmp / "process"
                start = time.perf_counter()
                client.request("render", {**params, "out_dir": str(out_dir)}, arrays)
                print(f"engine process render request {frames} frames 1080p PNGs + MP4 wall s (first, incl. "
                      f"scene load): {time.perf_counter() - start:.2f}")
                shutil.rmtree(out_dir)
                start = time.perf_counter()
                client.request("render", {**params, "out_dir": str(out_dir)}, arrays)
                print(f"engine process render request {frames} frames 1080p PNGs + MP4 wall s (second): "
                      f"{time.perf_counter() - start:.2f}")
            finally:
                client.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_benchmarks() -> None:
    scene = make_primitives_scene(gaussians_per_object=5000, sh_degree=3)
    g = scene.gaussians
    sh = np.concatenate([g.sh_dc[:, None], g.sh_rest], axis=1)
    viewmat = look_at((0.0, -2.5, -4.0), (0.0, -0.3, 0.0), up=(0.0, -1.0, 0.0))
    for W, H in ((256, 256), (640, 360)):
        K = intrinsics_from_fov(W, H, 60.0)
        samples = []
        for _ in range(3):
            start = time.perf_counter()
            render_gaussians(g.means, g.quats_wxyz, np.exp(g.log_scales), g.opacities(), sh, viewmat, K, W, H,
                             backend="cpu")
            samples.append(time.perf_counter() - start)
        print(f"torch rasterizer (CPU, {torch.get_num_threads()} threads) {g.count} gaussians {W}x{H} s: "
              f"{min(samples):.3f}")
    rand = make_random_gaussians(20000, sh_degree=3, extent=1.0)
    K = intrinsics_from_fov(256, 256, 60.0)
    viewmat = look_at((0.0, 0.0, -4.0), (0.0, 0.0, 0.0), up=(0.0, -1.0, 0.0))
    samples = []
    for _ in range(3):
        start = time.perf_counter()
        render_gaussians(rand.means, rand.quats_wxyz, np.exp(rand.log_scales) * 3, rand.opacities(),
                         np.concatenate([rand.sh_dc[:, None], rand.sh_rest], 1), viewmat, K, 256, 256, backend="cpu")
        samples.append(time.perf_counter() - start)
    print(f"torch rasterizer (CPU) 20000 random gaussians 256x256 s: {min(samples):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=1_000_000)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--skip-process", action="store_true", help="skip the run through the engine process")
    parser.add_argument("--cpu", action="store_true", help="only the CPU figures")
    args = parser.parse_args()
    if not args.cpu and gsplat_available():
        gpu_benchmarks(args.gaussians, args.frames, not args.skip_process)
    else:
        cpu_benchmarks()


if __name__ == "__main__":
    main()
