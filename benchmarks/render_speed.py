"""Splat rendering speed: raw gsplat vs the engine's frame, a 240-frame 1080p render job to PNGs + MP4, and
the engine process's first render request. One figure per line, the accuracy beside the speed.

    python benchmarks/render_speed.py [--gaussians 1000000] [--frames 240] [--skip-process | --process-only] [--cpu]

Needs CUDA and gsplat for the GPU figures. On a CPU-only machine (or with --cpu) it measures the torch
rasterizer on small scenes and the host side of frame writing (Pillow's PNG encoder per thread count, the
GPU encoder's host part, ffmpeg's x264 fed RGB or yuv420p).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.cameras import intrinsics_from_fov, look_at  # noqa: E402
from engine.render import render_gaussians  # noqa: E402
from engine.render.job import handle_render, load_objects, posed_gaussians  # noqa: E402
from engine.render.png import DeflateCode, PendingPng, encode_png  # noqa: E402
from engine.render.posing import ScenePoser  # noqa: E402
from engine.render.rasterizer import gsplat_available  # noqa: E402
from engine.render.video import X264_PRESET, Mp4Writer, video_backend, yuv420p_frame  # noqa: E402
from engine.synthetic_scene import make_primitives_scene, make_random_gaussians  # noqa: E402

W, H = 1920, 1080
AXIS = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


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


def spin(angle: float, scale: float = 1.0) -> np.ndarray:
    """A turn about Blender's z (and a uniform scale) applied after the axis conversion."""
    m = np.eye(4)
    c, s = np.cos(angle), np.sin(angle)
    m[:3, :3] = scale * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return m @ AXIS


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


def to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def frame_benchmarks(ply: Path, n: int) -> None:
    """A frame: raw gsplat, the engine's renderer, and the engine's frame when an object moves (three cases),
    each with its largest difference from transforming every Gaussian by its object's matrix (8-bit levels)."""
    from gsplat import rasterization

    device = torch.device("cuda")
    K = torch.from_numpy(intrinsics_from_fov(W, H, 60.0).astype(np.float32)).to(device)
    view = orbit(1, 7.0, 2.0)
    g = load_objects(QuietContext(), [{"name": "random", "ply_path": str(ply)}], device)
    print(f"gaussians: {g.count}")
    means, quats, scales, sh = posed_gaussians(g, AXIS[None])
    vm = torch.from_numpy(view[0]).to(device)

    def raw():
        rasterization(means, quats, scales, g.opacities, sh, vm[None], K[None], W, H, sh_degree=3,
                      render_mode="RGB+ED")

    def back_to_back(fn, frames: int = 50) -> float:
        """ms per frame of `frames` calls in a row with one synchronisation at the end: what a render job's
        loop gets, where a frame's host work (posing included) overlaps the previous frame's kernels."""
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(frames):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1e3 / frames

    def engine_render():
        render_gaussians(means, quats, scales, g.opacities, sh, vm, K, W, H, sh_degree=3, backend="gsplat")

    for fn in (raw, engine_render):
        timed(fn, 5)
    raw_ms, render_ms = timed(raw, 50), timed(engine_render, 50)
    raw_stream_ms = float(np.median([back_to_back(raw) for _ in range(5)]))
    print(f"raw gsplat.rasterization 1080p ms/frame: {raw_ms:.2f}")
    print(f"engine render_gaussians 1080p ms/frame: {render_ms:.2f}")
    print(f"engine render_gaussians / raw: {render_ms / raw_ms:.3f}")

    # The three ways an object moves every frame, posed as the job poses them (engine/render/posing.py).
    rows = np.arange(n)
    split = load_objects(QuietContext(), [{"name": "scene", "ply_path": str(ply)},
                                          {"name": "segment", "ply_path": str(ply)}], device,
                         {0: rows[n // 10:], 1: rows[:n // 10]})
    cases = (("a lone object moves (its motion goes into the camera)", g,
              np.stack([[spin(0.0)], [spin(0.3)]])),
             (f"a {n // 10}-Gaussian segment moves in the scene (its rows transformed)", split,
              np.stack([[AXIS, spin(0.0)], [AXIS, spin(0.3)]])),
             ("a scaled object moves (its motion and scale go into the camera)", g,
              np.stack([[spin(0.0, 1.2)], [spin(0.3, 1.2)]])))
    views = np.repeat(view, 2, 0)
    for label, gs, matrices in cases:
        poser = ScenePoser(gs, matrices, views)
        state = {"i": 0}

        def engine_frame():
            state["i"] ^= 1
            m, q, s, c, v = poser.pose(state["i"])
            render_gaussians(m, q, s, gs.opacities, c, v, K, W, H, sh_degree=3, backend="gsplat")

        timed(engine_frame, 5)
        frame_ms = timed(engine_frame, 50)
        stream_ms = float(np.median([back_to_back(engine_frame) for _ in range(5)]))
        with torch.no_grad():
            m, q, s, c, v = poser.pose(1)
            fast = to_uint8(render_gaussians(m, q, s, gs.opacities, c, v, K, W, H, sh_degree=3).rgb)
            everything = posed_gaussians(gs, matrices[1])
            full = to_uint8(render_gaussians(*everything[:3], gs.opacities, everything[3], vm, K, W, H,
                                             sh_degree=3).rgb)
        diff = int((fast.int() - full.int()).abs().max())
        print(f"engine frame, {label} ms/frame: {frame_ms:.2f}")
        print(f"engine frame with a moving object / raw gsplat, {label}: {frame_ms / raw_ms:.3f} "
              f"(max difference from transforming every Gaussian: {diff}/255)")
        print(f"engine frames back to back with a moving object / raw gsplat back to back, {label}: "
              f"{stream_ms / raw_stream_ms:.3f} ({stream_ms:.2f} vs {raw_stream_ms:.2f} ms/frame, 50 frames, "
              f"one synchronisation)")


def encoder_benchmarks(ply: Path, frames: int) -> list[torch.Tensor]:
    """PNG encoding on the GPU (speed, and size against Pillow's level 1) and x264 alone; returns a few
    rendered 1080p frames (uint8, on the GPU)."""
    from PIL import Image

    device = torch.device("cuda")
    K = torch.from_numpy(intrinsics_from_fov(W, H, 60.0).astype(np.float32)).to(device)
    g = load_objects(QuietContext(), [{"name": "random", "ply_path": str(ply)}], device)
    means, quats, scales, sh = posed_gaussians(g, AXIS[None])
    shots = []
    for vm in orbit(8, 7.0, 2.0):
        out = render_gaussians(means, quats, scales, g.opacities, sh, torch.from_numpy(vm).to(device), K, W, H,
                               sh_degree=3, backend="gsplat")
        shots.append(to_uint8(out.rgb))
    frame = shots[0]
    png_ms = timed(lambda: encode_png(frame).deflate.cpu(), 20)
    encoded = encode_png(frame)
    data = io.BytesIO()
    data.writelines(encoded.file_parts(encoded.deflate.cpu().numpy()))
    exact = np.array_equal(np.asarray(Image.open(io.BytesIO(data.getvalue()))), frame.cpu().numpy())
    pillow = io.BytesIO()
    host = frame.cpu().numpy()
    start = time.perf_counter()
    Image.fromarray(host).save(pillow, format="PNG", compress_level=1)
    pillow_ms = (time.perf_counter() - start) * 1e3
    print(f"PNG encode on the GPU 1080p ms/frame (one frame alone, its host round trip included): {png_ms:.2f} "
          f"(decodes to the same pixels: {exact})")
    print(f"PNG bytes per 1080p frame: ours {len(data.getvalue()) / 1e6:.2f} MB, Pillow level 1 "
          f"{len(pillow.getvalue()) / 1e6:.2f} MB ({pillow_ms:.0f} ms on one CPU thread)")

    backend = video_backend()
    print(f"MP4 encoder: {backend}" + (f" (libx264 preset {X264_PRESET}, crf 18, yuv420p made on the GPU)"
                                       if backend == "imageio-ffmpeg" else " (mp4v)"))
    if backend == "imageio-ffmpeg":
        yuv = [yuv420p_frame(f).cpu().numpy() for f in shots]
        tmp = Path(tempfile.mkdtemp(prefix="x264_"))
        for preset in ("veryfast", "superfast"):
            with Mp4Writer(tmp / "alone.mp4", W, H, 24, input_format="yuv420p", preset=preset) as writer:
                start = time.perf_counter()
                for i in range(frames):
                    writer.write(yuv[i % len(yuv)])
            fps = frames / (time.perf_counter() - start)
            print(f"MP4 encoder alone (x264 {preset}, {os.cpu_count()} CPU threads) {frames} frames 1080p fps: "
                  f"{fps:.0f}")
        shutil.rmtree(tmp, ignore_errors=True)
    return shots


JOB_REPEATS = 3   # each job row is the median of this many runs: one run moved by up to 0.4 s from host noise


def repeated_job(params: dict, arrays: dict, out_dir: Path, keep: bool = False) -> tuple[dict, str]:
    """handle_render run JOB_REPEATS times into out_dir (emptied between runs; the last run's files are kept
    when `keep`): its last result and "median (min-max)" of the wall seconds."""
    walls = []
    for i in range(JOB_REPEATS):
        start = time.perf_counter()
        result, _ = handle_render(QuietContext(), params, arrays)
        walls.append(time.perf_counter() - start)
        if not (keep and i == JOB_REPEATS - 1):
            shutil.rmtree(out_dir)
    return result, f"{np.median(walls):.2f} ({min(walls):.2f}-{max(walls):.2f})"


def job_request(ply: Path, frames: int) -> dict:
    """The render request of the job figures: `frames` 1080p frames of an orbit, the scene's one object static."""
    K = intrinsics_from_fov(W, H, 60.0).astype(np.float32)
    params = {"width": W, "height": H, "fps": 24, "frames": list(range(1, frames + 1)), "near": 0.01,
              "far": 1000.0, "device": "cuda", "background": [0.0, 0.0, 0.0],
              "objects": [{"name": "random", "ply_path": str(ply)}]}
    arrays = {"viewmats": orbit(frames, 7.0, 2.0), "Ks": np.repeat(K[None], frames, 0),
              "object_matrices": np.repeat(AXIS[None, None], frames, 0).astype(np.float32)}
    return {"params": params, "arrays": arrays}


def job_benchmarks(ply: Path, frames: int, tmp: Path) -> dict:
    """The render job: raw gsplat to host memory (its floor), then PNGs + MP4 with a static and a moving
    object, PNGs only and MP4 only; frame 1's PNG checked against the pixels rendered, the video's PSNR."""
    from gsplat import rasterization
    from PIL import Image

    device = torch.device("cuda")
    viewmats = orbit(frames, 7.0, 2.0)
    K = intrinsics_from_fov(W, H, 60.0).astype(np.float32)
    g = load_objects(QuietContext(), [{"name": "random", "ply_path": str(ply)}], device)
    means, quats, scales, sh = posed_gaussians(g, AXIS[None])
    Kt = torch.from_numpy(K).to(device)

    def raw_loop():
        for i in range(frames):
            out, _, _ = rasterization(means, quats, scales, g.opacities, sh,
                                      torch.from_numpy(viewmats[i]).to(device)[None], Kt[None], W, H,
                                      sh_degree=3, render_mode="RGB+ED")
            (out[0, ..., :3].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    raw_loop()
    print(f"raw gsplat {frames} frames 1080p to host memory s: {timed(raw_loop, 1) / 1e3:.2f}")

    request = job_request(ply, frames)
    params, arrays = request["params"], request["arrays"]
    static = arrays["object_matrices"]
    moving = np.stack([[spin(a)] for a in np.linspace(0, np.pi / 3, frames)]).astype(np.float32)
    # Frame 1 as the engine renders it, to check the PNG against (lossless) and the video (PSNR).
    with torch.no_grad():
        m, q, s, c, v = ScenePoser(g, static[:1], viewmats[:1]).pose(0)
        frame1 = to_uint8(render_gaussians(m, q, s, g.opacities, c, v, Kt, W, H, near=0.01, far=1000.0,
                                           background=torch.zeros(3, device=device), sh_degree=3).rgb).cpu().numpy()
    handle_render(QuietContext(), {**params, "out_dir": str(tmp / "warm"), "frames": [1]},   # first-use costs
                  {k: v[:1] for k, v in arrays.items()})
    # The scene split into a 900k static part and a 100k segment that turns every frame: its rows are
    # transformed on every frame (the lone object above moves through the camera instead).
    n = g.count
    split_params = {**params, "objects": [{"name": "scene", "ply_path": str(ply)},
                                          {"name": "segment", "ply_path": str(ply)}]}
    split_arrays = {**arrays, "indices_0": np.arange(n // 10, n), "indices_1": np.arange(n // 10),
                    "object_matrices": np.stack([[AXIS, spin(a)] for a in np.linspace(0, np.pi / 3, frames)]
                                                ).astype(np.float32)}
    handle_render(QuietContext(), {**split_params, "out_dir": str(tmp / "warm"), "frames": [1]},
                  {k: v[:1] if k in ("viewmats", "Ks", "object_matrices") else v for k, v in split_arrays.items()})
    out_dir = tmp / "job"
    result, walls = repeated_job({**split_params, "out_dir": str(out_dir)}, split_arrays, out_dir)
    print(f"render job {frames} frames 1080p PNGs + MP4, a {n // 10}-Gaussian segment moving every frame wall s: "
          f"{walls} ({len(result['frames'])} PNGs)")
    for label, extra, matrices in (("PNGs + MP4, static object", {}, static),
                                   ("PNGs + MP4, object moving every frame", {}, moving),
                                   ("PNGs only, static object", {"write_video": False}, static),
                                   ("MP4 only, static object", {"frame_format": "none"}, static),
                                   ("PNGs (Pillow) + MP4, static object", {"png_encoder": "pillow"}, static),
                                   ("PNGs (Pillow) only, static object",
                                    {"write_video": False, "png_encoder": "pillow"}, static)):
        out_dir = tmp / "job"
        result, walls = repeated_job({**params, "out_dir": str(out_dir), **extra},
                                     {**arrays, "object_matrices": matrices}, out_dir, keep=True)
        notes = []
        if result["frames"]:
            sizes = [Path(p).stat().st_size for p in result["frames"]]
            notes.append(f"{np.mean(sizes) / 1e6:.2f} MB per PNG")
            if matrices is static:
                same = np.array_equal(np.asarray(Image.open(result["frames"][0])), frame1)
                notes.append(f"frame 1 PNG equals the rendered pixels: {same}")
        if result["video"]:
            decoded = first_video_frame(result["video"]).astype(np.float64)
            mse = np.mean((decoded - frame1) ** 2) if matrices is static else None
            notes.append(f"{Path(result['video']).stat().st_size / 1e6:.1f} MB MP4"
                         + (f", frame 1 PSNR {10 * np.log10(255 ** 2 / max(mse, 1e-12)):.1f} dB" if mse else ""))
        print(f"render job {frames} frames 1080p {label} wall s: {walls} ({'; '.join(notes)})")
        shutil.rmtree(out_dir)
    return request


def first_video_frame(path: str) -> np.ndarray:
    try:
        import imageio_ffmpeg
    except ImportError:
        import cv2
        ok, frame = cv2.VideoCapture(path).read()
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    reader = imageio_ffmpeg.read_frames(path)
    width, height = next(reader)["size"]
    frame = np.frombuffer(next(reader), np.uint8).reshape(height, width, 3)
    reader.close()
    return frame


def process_benchmarks(request: dict, frames: int, tmp: Path) -> None:
    """The engine process: start → hello → warm (torch, CUDA, gsplat, the render job loaded in the
    background), then the first render request (scene load included) and a second; and, from a fresh
    engine, a render request sent right after hello (paying the imports itself); and, from a fresh engine,
    what an import in Blender's UI does (start + preload, engine_link/engine_preload.py) before the first
    render request."""
    from blender_addon.engine_link.engine_client import EngineClient

    params, arrays = request["params"], request["arrays"]
    client = EngineClient(python=sys.executable)
    try:
        start = time.perf_counter()
        client.wait_ready(120)
        print(f"engine process start to hello s: {time.perf_counter() - start:.2f}")
        warm, _ = client.request("warm_up", {"timeout": 300}, timeout=300)
        steps = ", ".join(f"{k} {v:.2f}" for k, v in warm["seconds"].items())
        print(f"engine process start to warm s: {time.perf_counter() - start:.2f} ({steps})")
        for which in ("first, after the warm-up, incl. scene load: the 1M .ply read and uploaded", "second"):
            out_dir = tmp / "process"
            start = time.perf_counter()
            client.request("render", {**params, "out_dir": str(out_dir)}, arrays, timeout=600)
            print(f"engine process render request {frames} frames 1080p PNGs + MP4 wall s ({which}): "
                  f"{time.perf_counter() - start:.2f}")
            shutil.rmtree(out_dir)
    finally:
        client.stop()
    client = EngineClient(python=sys.executable)
    try:   # what an import in Blender's UI does: start the engine and send the preload at once, not waiting
        start = time.perf_counter()
        index = {k: v for k, v in arrays.items() if k.startswith("indices_")}   # the rows, as the render sends
        preload_id = client.submit("preload", {"objects": params["objects"], "device": params["device"]}, index)
        done, _ = client.wait(preload_id, timeout=600)
        steps = ", ".join(f"{k} {v:.2f}" for k, v in done["seconds"].items())
        print(f"engine process start to import's preload done (warm, scene read and on the device) s: "
              f"{time.perf_counter() - start:.2f} ({steps})")
        out_dir = tmp / "preloaded"
        start = time.perf_counter()
        result, _ = client.request("render", {**params, "out_dir": str(out_dir)}, arrays, timeout=600)
        print(f"engine process render request {frames} frames 1080p PNGs + MP4 wall s (first, after the import's "
              f"preload; Gaussians found on the device: {result['preloaded']}): {time.perf_counter() - start:.2f}")
        shutil.rmtree(out_dir)
    finally:
        client.stop()
    client = EngineClient(python=sys.executable)
    try:
        start = time.perf_counter()
        client.wait_ready(120)
        out_dir = tmp / "cold"
        client.request("render", {**params, "out_dir": str(out_dir)}, arrays, timeout=600)
        print(f"engine process start to first render request done, sent right after hello (imports, CUDA, scene "
              f"load, {frames} frames) s: {time.perf_counter() - start:.2f}")
        shutil.rmtree(out_dir)
    finally:
        client.stop()


def gpu_benchmarks(n: int, frames: int, run_process: bool, process_only: bool = False) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="render_speed_"))
    try:
        ply = tmp / "random.ply"
        from engine.ply import write_gaussians
        write_gaussians(ply, make_random_gaussians(n, sh_degree=3, seed=0, extent=2.0))
        if process_only:
            process_benchmarks(job_request(ply, frames), frames, tmp)
            return
        frame_benchmarks(ply, n)
        encoder_benchmarks(ply, frames)
        request = job_benchmarks(ply, frames, tmp)
        if run_process:
            process_benchmarks(request, frames, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_rasterizer_benchmarks() -> None:
    scene = make_primitives_scene(gaussians_per_object=5000, sh_degree=3)
    g = scene.gaussians
    sh = np.concatenate([g.sh_dc[:, None], g.sh_rest], axis=1)
    viewmat = look_at((0.0, -2.5, -4.0), (0.0, -0.3, 0.0), up=(0.0, -1.0, 0.0))
    for width, height in ((256, 256), (640, 360)):
        K = intrinsics_from_fov(width, height, 60.0)
        samples = []
        for _ in range(3):
            start = time.perf_counter()
            render_gaussians(g.means, g.quats_wxyz, np.exp(g.log_scales), g.opacities(), sh, viewmat, K, width,
                             height, backend="cpu")
            samples.append(time.perf_counter() - start)
        print(f"torch rasterizer (CPU, {torch.get_num_threads()} threads) {g.count} gaussians {width}x{height} s: "
              f"{min(samples):.3f}")


def host_writing_benchmarks(frames: int) -> None:
    """What writing frames costs the CPU, on a 1080p image made from a 480×270 CPU render (upscaled 4×)."""
    from PIL import Image

    rand = make_random_gaussians(20000, sh_degree=3, seed=0, extent=2.0)
    K = intrinsics_from_fov(480, 270, 60.0)
    viewmat = look_at((0.0, -7.0, 2.0), (0.0, 0.0, 0.0))
    out = render_gaussians(rand.means @ AXIS[:3, :3].T.astype(np.float32), rand.quats_wxyz,
                           np.exp(rand.log_scales), rand.opacities(),
                           np.concatenate([rand.sh_dc[:, None], rand.sh_rest], 1), viewmat, K, 480, 270,
                           backend="cpu")
    small = to_uint8(out.rgb)
    image = torch.nn.functional.interpolate(small.permute(2, 0, 1)[None].float(), size=(H, W), mode="bilinear",
                                            align_corners=False)[0].permute(1, 2, 0).round().to(torch.uint8)
    host = image.numpy()

    def pillow(_=None) -> int:
        buffer = io.BytesIO()
        Image.fromarray(host).save(buffer, format="PNG", compress_level=1)
        return buffer.tell()

    start = time.perf_counter()
    size = pillow()
    one = time.perf_counter() - start
    print(f"PNG encode 1080p, Pillow level 1, one thread ms: {one * 1e3:.0f} ({size / 1e6:.2f} MB)")
    for threads in (1, 2, 4):
        count = 4 * threads
        with ThreadPoolExecutor(threads) as pool:
            start = time.perf_counter()
            list(pool.map(pillow, range(count)))
        print(f"PNG encode 1080p, Pillow level 1, {threads} threads frames/s: "
              f"{count / (time.perf_counter() - start):.1f} ({os.cpu_count()} CPUs here)")
    counts = PendingPng(image).symbol_counts()
    start = time.perf_counter()
    for _ in range(20):
        DeflateCode(counts)
    print(f"GPU PNG encoder's host part (Huffman code and block header) ms/frame: "
          f"{(time.perf_counter() - start) / 20 * 1e3:.2f}")
    if video_backend() != "imageio-ffmpeg":
        return
    tmp = Path(tempfile.mkdtemp(prefix="x264_"))
    yuv = yuv420p_frame(image).numpy()
    for fmt, frame in (("rgb24", host), ("yuv420p", yuv)):
        with Mp4Writer(tmp / "v.mp4", W, H, 24, input_format=fmt) as writer:
            start = time.perf_counter()
            for _ in range(frames):
                writer.write(frame)
        print(f"MP4 encoder (x264 {X264_PRESET}) fed {fmt} {frames} frames 1080p fps: "
              f"{frames / (time.perf_counter() - start):.1f} ({os.cpu_count()} CPUs here)")
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=1_000_000)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--skip-process", action="store_true", help="skip the runs through the engine process")
    parser.add_argument("--process-only", action="store_true",
                        help="only the runs through the engine process (first requests, the import's preload)")
    parser.add_argument("--cpu", action="store_true", help="only the CPU figures")
    args = parser.parse_args()
    if not args.cpu and gsplat_available():
        gpu_benchmarks(args.gaussians, args.frames, not args.skip_process, args.process_only)
    else:
        cpu_rasterizer_benchmarks()
        host_writing_benchmarks(min(args.frames, 48))


if __name__ == "__main__":
    main()
