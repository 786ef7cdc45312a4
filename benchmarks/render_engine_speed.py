"""Gaussian Splats render engine speed, in the bpy module with the engine process: F12 of a frame against the
engine's own render request for the same frame (Render Splats, PNG out), and the pieces of a viewport redraw.

    python benchmarks/render_engine_speed.py [--gaussians 1000000] [--width 1920] [--height 1080]
                                             [--device auto|cpu|cuda] [--repeats 5] [--json PATH]
    python benchmarks/render_engine_speed.py --gaussians 20000 --width 320 --height 180 --device cpu   # CPU check

Targets (issue 16, on the GPU device): F12 ≤ 1.5× the engine's own request; a 1080p viewport redraw (request,
render, transfer, texture upload) ≤ 30 ms. Prints one figure per line; --json writes them too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bpy  # noqa: E402

from benchmarks.timing import median_ms  # noqa: E402
from blender_addon.engine_link import engine_client  # noqa: E402
from blender_addon.render import render_splats  # noqa: E402
from blender_addon.io.gaussian_object import import_ply  # noqa: E402
from blender_addon.render.render_region import pass_pixels, scaled_camera  # noqa: E402
from blender_addon.render.render_request import build_pixels_request  # noqa: E402
from blender_addon.render.splat_render_engine import ENGINE_ID  # noqa: E402
from engine import shared_pixels  # noqa: E402
from engine.ply import write_gaussians  # noqa: E402
from engine.synthetic_scene import make_random_gaussians  # noqa: E402


def build_scene(ply: Path, width: int, height: int) -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    import_ply(ply, bpy.context)
    camera = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(camera)
    camera.location = (0.0, -7.0, 2.0)
    camera.rotation_euler = (np.radians(78.0), 0.0, 0.0)
    scene.camera = camera
    scene.frame_start = scene.frame_end = scene.frame_current = 1
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = width, height, 100
    scene.render.engine = ENGINE_ID
    scene.view_settings.view_transform = "Standard"
    return scene


def texture_upload_ms(combined: np.ndarray, repeats: int) -> float | None:
    """gpu.types.Buffer + GPUTexture of a frame, when this Blender has a GPU context (None otherwise)."""
    try:
        import gpu

        h, w = combined.shape[:2]

        def upload():
            data = gpu.types.Buffer("FLOAT", w * h * 4, pass_pixels(combined))
            gpu.types.GPUTexture((w, h), format="RGBA16F", data=data)

        upload()
    except Exception as exc:   # background Blender without a GPU backend
        print(f"texture upload: not measured ({type(exc).__name__}: {exc})")
        return None
    return median_ms(upload, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gaussians", type=int, default=1_000_000)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--python", default=sys.executable, help="the engine's interpreter")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import blender_addon

    blender_addon.register()
    client = engine_client.EngineClient(python=args.python)
    engine_client.get_client = lambda: client
    engine_client.preferred_device = lambda: args.device
    figures: dict[str, float | int | str | None] = {"gaussians": args.gaussians, "width": args.width,
                                                    "height": args.height}
    tmp = Path(tempfile.mkdtemp(prefix="render_engine_speed_"))
    try:
        ply = tmp / "random.ply"
        write_gaussians(ply, make_random_gaussians(args.gaussians, sh_degree=3, seed=0, extent=2.0))
        t = time.perf_counter()
        scene = build_scene(ply, args.width, args.height)
        print(f"import: {time.perf_counter() - t:.1f} s")
        client.wait_ready(120)

        def own_request():
            render_splats.render_splats_blocking(scene, tmp / "splats", None, args.device, write_video=False,
                                                 client=client)

        def f12():
            scene.render.filepath = str(tmp / "f12.png")
            bpy.ops.render.render(write_still=True)

        def f12_no_file():
            bpy.ops.render.render()

        own_request()   # loads the scene into the engine (file cache, device cache)
        f12()
        figures["engine_request_ms"] = median_ms(own_request, args.repeats)
        figures["f12_ms"] = median_ms(f12, args.repeats)
        figures["f12_no_file_ms"] = median_ms(f12_no_file, args.repeats)
        figures["f12_over_request"] = figures["f12_ms"] / figures["engine_request_ms"]

        # The viewport: a perspective view as a redraw asks for it (full size and navigating at half size).
        depsgraph = bpy.context.evaluated_depsgraph_get()
        from blender_addon.render.camera_data import camera_from_blender
        viewmat, K, near, far = camera_from_blender(scene, scene.camera, args.width, args.height)
        for label, scale, passes in (("f12_engine", 1.0, ("combined", "depth")), ("viewport", 1.0, ("combined",)),
                                     ("viewport_navigate", 0.5, ("combined",))):
            K_s, w, h = scaled_camera(K, args.width, args.height, scale)
            shapes = shared_pixels.pass_shapes(passes, 1, h, w)
            buffer = shared_pixels.PixelBuffer()
            name = buffer.name_for(shared_pixels.nbytes(shapes))
            build = lambda shm=None: build_pixels_request(  # noqa: E731
                scene, depsgraph, (viewmat, K_s, near, far), w, h, args.device, viewport=label != "f12_engine",
                passes=passes, shared_memory=shm)
            params, arrays = build()
            params_shm, _ = build(name)
            answer = {}

            def round_trip():
                answer["pixels"] = client.request("render", params, arrays)[1]

            def round_trip_shm():
                client.request("render", params_shm, arrays)
                answer["shared"] = float(buffer.views(shapes)["combined"][0, 0, 0, 0])

            round_trip()
            round_trip_shm()
            figures[f"{label}_request_build_ms"] = median_ms(build, args.repeats)
            figures[f"{label}_render_pipe_ms"] = median_ms(round_trip, args.repeats)
            figures[f"{label}_render_transfer_ms"] = median_ms(round_trip_shm, args.repeats)   # what view_draw does
            buffer.close()
            if label == "f12_engine":   # what F12 adds around the engine's answer: Blender's side alone
                figures["f12_blender_side_ms"] = figures["f12_ms"] - figures[f"{label}_render_transfer_ms"]
                continue
            upload = texture_upload_ms(answer["pixels"]["combined"][0], args.repeats)
            figures[f"{label}_texture_upload_ms"] = upload
            figures[f"{label}_redraw_ms"] = (figures[f"{label}_request_build_ms"]
                                             + figures[f"{label}_render_transfer_ms"] + (upload or 0.0))
        figures["backend"] = client.request("render", params, arrays)[0].get("backend")
        # What the pipe adds to a frame, whatever renders it: a Combined pass there and back (echo), halved.
        combined = np.zeros((args.height, args.width, 4), np.float32)
        figures["pipe_combined_one_way_ms"] = median_ms(lambda: client.request("echo", {}, {"c": combined}),
                                                        args.repeats) / 2
    finally:
        client.stop()
    for key, value in figures.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
