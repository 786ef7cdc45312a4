"""The engine's half of F12 and of a viewport redraw, through a real engine process, without Blender.

    python benchmarks/render_engine_device.py [--gaussians 1000000] [--width 1920] [--height 1080] [--repeats 7]

Why a second script beside render_engine_speed.py: that one drives F12 through the bpy module, and bpy exists
only for Python 3.11 (Blender ≤ 5.0) and 3.13 (5.1+), while the GPU device runs Python 3.12. This one sends the
same requests the render engine sends (render_request.build_pixels_request's params: return_pixels, passes,
shared memory) and the one Render Splats sends for the same frame (PNG written), so the engine side of the F12
ratio is measured on the GPU; the Blender side of F12 (building the request, writing the passes into the
RenderResult, saving the image) is what render_engine_speed.py's `f12_ms - engine_request_ms` adds on a CPU.
Prints one figure per line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blender_addon.engine_link.engine_client import EngineClient  # noqa: E402
from benchmarks.timing import median_ms  # noqa: E402
from engine import shared_pixels  # noqa: E402
from engine.cameras import intrinsics_from_fov, look_at  # noqa: E402
from engine.ply import write_gaussians  # noqa: E402
from engine.synthetic_scene import make_random_gaussians  # noqa: E402


def request(ply: Path, width: int, height: int, device: str) -> tuple[dict, dict]:
    viewmat = look_at((0.0, -7.0, 2.0), (0.0, 0.0, 0.0)).astype(np.float32)
    K = intrinsics_from_fov(width, height, 50.0).astype(np.float32)
    params = {"width": width, "height": height, "fps": 24.0, "frames": [1], "near": 0.1, "far": 100.0,
              "device": device, "background": [0.05, 0.05, 0.05],
              "objects": [{"name": "scene", "ply_path": str(ply)}]}
    arrays = {"viewmats": viewmat[None], "Ks": K[None], "object_matrices": np.eye(4, dtype=np.float32)[None, None]}
    return params, arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gaussians", type=int, default=1_000_000)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="render_engine_device_"))
    ply = tmp / "random.ply"
    write_gaussians(ply, make_random_gaussians(args.gaussians, sh_degree=3, seed=0, extent=2.0))
    client = EngineClient(python=sys.executable)
    try:
        hello = client.wait_ready(120)
        print(f"engine backend: {hello.get('backend')}")
        base, arrays = request(ply, args.width, args.height, args.device)
        own = dict(base, out_dir=str(tmp / "splats"), write_video=False)          # Render Splats, one frame
        figures: dict[str, float] = {}
        client.request("render", own, arrays)                                      # loads and caches the scene
        figures["render_splats_request_ms"] = median_ms(lambda: client.request("render", own, arrays), args.repeats)

        for label, scale, passes in (("f12", 1.0, ("combined", "depth")), ("viewport", 1.0, ("combined",)),
                                     ("viewport_navigate", 0.5, ("combined",))):
            w, h = int(args.width * scale), int(args.height * scale)
            params, arr = request(ply, w, h, args.device)
            params.update(return_pixels=True, write_video=False, passes=list(passes))
            shapes = shared_pixels.pass_shapes(passes, 1, h, w)
            buffer = shared_pixels.PixelBuffer()
            params["shared_memory"] = buffer.name_for(shared_pixels.nbytes(shapes))

            def round_trip():
                answer = client.request("render", params, arr)[0]
                assert answer.get("shared_memory"), "the engine did not use the shared segment"
                views = buffer.views(shapes)
                for name in passes:          # what render()/view_draw copy out of the segment
                    np.ascontiguousarray(views[name][0])

            round_trip()
            figures[f"{label}_request_ms"] = median_ms(round_trip, args.repeats)
            buffer.close()
        figures["f12_engine_over_render_splats"] = figures["f12_request_ms"] / figures["render_splats_request_ms"]
    finally:
        client.stop()
    print(f"gaussians: {args.gaussians}, {args.width}x{args.height}, median of {args.repeats}")
    for key, value in figures.items():
        print(f"{key}: {value:.2f}")


if __name__ == "__main__":
    main()
