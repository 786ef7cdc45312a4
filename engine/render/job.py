"""The engine's "render" request: Blender's camera and object motion in, PNG frames and an MP4 out.

Each object's Gaussians are loaded once and kept on the device; per frame only the objects that moved are
transformed (engine/render/posing.py; SH rotated along) and all objects are rendered together. Frames are
encoded and written on worker threads while the next one renders (engine/render/frame_sink.py; the video
frame is made yuv420p on the GPU first), so the GPU never waits on PNG or video encoding.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import shared_pixels
from ..errors import AnimateGaussiansError, CameraError, InputFileError
from .frame_sink import PNG_ENCODERS, FrameSink
from .pixels import blender_pixels
from .posing import DeviceGaussians, ScenePoser
from .rasterizer import RenderBackendError, choose_backend, render_gaussians
from .skinning import skinning_from_request
from .video import Mp4Writer, video_backend, yuv420p_frame

VIDEO_NAME = "render.mp4"
FRAME_PATTERN = "frame_{:04d}.png"
PIXEL_PASSES = ("combined", "depth")   # what a return_pixels request may ask for, in blender_pixels' order
FRAME_FORMATS = ("png", "none")        # what a request's frame_format may be
GPU_PNG_WORKERS = 8                    # PNG writers for GPU-encoded frames (see handle_render)
CAPTURE_PNG_FRAMES = 8                 # from this many frames a job's PNGs start as a captured CUDA graph


class RenderRequestError(AnimateGaussiansError):
    """The render request's parameters or arrays are inconsistent."""

    hint = "this is a bug in the caller of the render request; please report it with the message"


def resolve_device(name: str) -> torch.device:
    if name not in ("auto", "cpu", "cuda"):
        raise RenderRequestError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise RenderBackendError("device 'cuda' was asked for but torch sees no CUDA GPU",
                                 hint="choose device 'cpu' or 'auto', or install a CUDA build of torch")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def _gaussians_of(loaded) -> Any:
    """GaussianArrays from whatever the loader returned (GaussianArrays or a scene-cache LoadedScene)."""
    return getattr(loaded, "gaussians", loaded)


def select_rows(g, indices: np.ndarray | None, name: str):
    """GaussianArrays of the rows `indices` of `g` (an object that holds a subset of its .ply), or `g` itself."""
    if indices is None:
        return g
    indices = np.asarray(indices)
    if indices.ndim != 1 or indices.dtype.kind not in "iu":
        raise RenderRequestError(f"the indices of object {name!r} must be a 1-D integer array")
    if len(indices) and (indices.min() < 0 or indices.max() >= g.count):
        raise InputFileError(f"object {name!r} refers to Gaussians its .ply does not have (rows up to "
                             f"{int(indices.max())}, the file has {g.count})",
                             hint="the .ply changed since the import: re-import it and segment again")
    if len(indices) == g.count and np.array_equal(indices, np.arange(g.count)):
        return g
    return type(g)(**{f.name: getattr(g, f.name)[indices] for f in dataclasses.fields(g)})


def load_objects(ctx, objects: list[dict], device: torch.device,
                 subsets: dict[int, np.ndarray] | None = None) -> DeviceGaussians:
    """Read each object's .ply (through the server's cache when there is one) and stack them on `device`.
    `subsets[i]` (optional) are the rows of object i's .ply that it holds, in its order (a segment)."""
    load = getattr(ctx, "load_scene", None)
    if load is None:
        from ..scene_cache import load_scene as load
    parts = []
    for i, obj in enumerate(objects):
        path = obj.get("ply_path")
        if not path:
            raise RenderRequestError(f"object {obj.get('name', i)!r} has no ply_path")
        if not Path(path).exists():
            raise InputFileError(f"the scene file of object {obj.get('name', i)!r} is missing: {path}",
                                 hint="re-import the .ply or fix the object's source path")
        parts.append(select_rows(_gaussians_of(load(path)), (subsets or {}).get(i), obj.get("name", str(i))))
    degree = max(g.sh_degree for g in parts)
    k = (degree + 1) ** 2 - 1

    def stack(get) -> torch.Tensor:
        # Each part goes up as it is (no host-side concatenation of a scene's worth of arrays; float32 is
        # not copied), then the parts are joined on the device.
        arrays = [np.ascontiguousarray(get(g)) for g in parts]
        pieces = [torch.from_numpy(a if a.flags.writeable else a.copy()).to(device) for a in arrays]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def rest(g) -> np.ndarray:  # objects of lower degree get zero higher bands
        if g.sh_rest.shape[1] == k:
            return g.sh_rest.astype(np.float32, copy=False)
        out = np.zeros((g.count, k, 3), np.float32)
        out[:, :g.sh_rest.shape[1]] = g.sh_rest
        return out

    return DeviceGaussians(
        means=stack(lambda g: g.means.astype(np.float32, copy=False)),
        quats=stack(lambda g: g.quats_wxyz.astype(np.float32, copy=False)),
        log_scales=stack(lambda g: g.log_scales.astype(np.float32, copy=False)),
        sh_dc=stack(lambda g: g.sh_dc.astype(np.float32, copy=False)[:, None, :]),
        sh_rest=stack(rest),
        opacities=stack(lambda g: g.opacities().astype(np.float32, copy=False)),
        object_index=torch.cat([torch.full((g.count,), i, dtype=torch.int32, device=device)
                                for i, g in enumerate(parts)]),
        sh_degree=degree, counts=tuple(g.count for g in parts))


_device_cache: dict[tuple, tuple[list, DeviceGaussians]] = {}


def cached_device_gaussians(ctx, objects: list[dict], device: torch.device,
                            subsets: dict[int, np.ndarray]) -> DeviceGaussians:
    """load_objects, kept on the device for the next request of the same objects (files unchanged, same rows):
    viewport redraws and F12 frames then skip stacking and uploading the Gaussians. One entry is kept; its
    rows are compared exactly (a memcmp, cheaper than hashing them)."""
    key: list = [str(device)]
    for obj in objects:
        path = Path(obj.get("ply_path") or "")
        st = path.stat() if path.is_file() else None
        key.append((str(path), st and st.st_mtime_ns, st and st.st_size))
    rows = [None if subsets.get(i) is None else np.asarray(subsets[i]) for i in range(len(objects))]
    entry = _device_cache.get(tuple(key))
    if entry is not None and all((a is None and b is None) or (a is not None and b is not None and
                                                               np.array_equal(a, b))
                                 for a, b in zip(entry[0], rows)):
        return entry[1]
    _device_cache.clear()   # free the old scene's device memory before the new one is uploaded
    g = load_objects(ctx, objects, device, subsets)
    _device_cache[tuple(key)] = ([None if r is None else r.copy() for r in rows], g)
    return g


def posed_gaussians(g: DeviceGaussians, matrices: np.ndarray, skin=None, frame: int = 0
                    ) -> tuple[torch.Tensor, ...]:
    """(means, quats, scales, sh) of all Gaussians moved by their objects' (O, 4, 4) matrices; objects with
    a rig (`skin`, engine.render.skinning) are blended by its handle transforms of frame index `frame`."""
    from cuda_ext import transform_gaussians

    index, mats = g.object_index, np.asarray(matrices, np.float64)
    if skin is not None:
        index, mats = skin.group_index, skin.group_matrices(mats, frame)
    means, quats, log_scales, sh_rest = transform_gaussians(g.means, g.quats, g.log_scales, g.sh_rest, index, mats)
    if skin is not None:
        means = skin.blend_means(g.means, means, matrices, frame)
    return means, quats, torch.exp(log_scales), torch.cat([g.sh_dc, sh_rest], dim=1)


def dynamic_sources(objects: list[dict], arrays: dict, g: DeviceGaussians, frames: int) -> dict:
    """Objects with an `npz_path` (a Dynamic 3D Gaussians sequence whose timestep 0 is their .ply): per object
    index, (sequence, its rows in the sequence or None, its rows in g, timesteps (F,) of the request's frames)."""
    from ..dynamic import read_dynamic

    out = {}
    if not any(obj.get("npz_path") for obj in objects):
        return out      # the usual case
    counts = g.object_counts(len(objects))
    starts = np.concatenate([[0], np.cumsum(counts)])
    for j, obj in enumerate(objects):
        if not obj.get("npz_path"):
            continue
        seq = read_dynamic(obj["npz_path"])
        steps = _array(arrays, f"timesteps_{j}", (frames,)).astype(np.int64)
        if steps.min() < 0 or steps.max() >= seq.timesteps:
            raise RenderRequestError(f"object {obj.get('name', j)!r}: timesteps outside its sequence's "
                                     f"0..{seq.timesteps - 1}")
        rows = arrays.get(f"indices_{j}")
        rows = None if rows is None else np.asarray(rows, np.int64)
        if (len(rows) if rows is not None else seq.count) != counts[j]:
            raise InputFileError(f"object {obj.get('name', j)!r}: its sequence has {seq.count} Gaussians, its .ply "
                                 f"{counts[j]}", hint="import the sequence again")
        out[j] = (seq, rows, slice(int(starts[j]), int(starts[j + 1])), steps)
    return out


def at_timesteps(g: DeviceGaussians, dynamic: dict, frame: int) -> DeviceGaussians:
    """g with each dynamic object's means, rotations and colours of its timestep at frame index `frame`."""
    from ..ply import SH_C0

    means, quats, sh_dc = g.means.clone(), g.quats.clone(), g.sh_dc.clone()
    for seq, rows, where, steps in dynamic.values():
        t = int(steps[frame])
        pick = (lambda a: a) if rows is None else (lambda a: a[rows])
        means[where] = torch.from_numpy(pick(seq.means[t]).astype(np.float32)).to(means.device)
        quats[where] = torch.from_numpy(pick(seq.quats_at(t)).astype(np.float32)).to(means.device)
        rgb = pick(seq.rgb_at(t)).astype(np.float32)
        sh_dc[where] = torch.from_numpy((rgb - 0.5) / SH_C0).to(means.device)[:, None, :]
    return dataclasses.replace(g, means=means, quats=quats, sh_dc=sh_dc)


def query_highlight(params: dict, arrays: dict, g: DeviceGaussians, objects: list[dict]) -> dict | None:
    """The 4D query's tint (params highlight_color [r, g, b], highlight_strength; arrays highlight_start_<j> /
    highlight_end_<j> (N_j,) scene frames, −1: never) as per-Gaussian tensors over g, or None."""
    color = params.get("highlight_color")
    if color is None:
        return None
    counts = g.object_counts(len(objects))
    start, end = np.full(g.count, -1, np.int64), np.full(g.count, -1, np.int64)
    offset = 0
    for j, n in enumerate(counts):
        if f"highlight_start_{j}" in arrays:
            start[offset:offset + n] = _array(arrays, f"highlight_start_{j}", (int(n),))
            end[offset:offset + n] = _array(arrays, f"highlight_end_{j}", (int(n),))
        offset += n
    from ..ply import SH_C0

    rgb = torch.tensor([float(c) for c in color], dtype=torch.float32, device=g.means.device)
    return {"dc": ((rgb - 0.5) / SH_C0)[None, None, :], "strength": float(params.get("highlight_strength", 0.6)),
            "start": torch.from_numpy(start).to(g.means.device), "end": torch.from_numpy(end).to(g.means.device)}


def tinted(g: DeviceGaussians, highlight: dict, frame: int) -> DeviceGaussians:
    """g with the Gaussians in the query's answer at this scene frame blended towards the tint (4-LEGS' view)."""
    on = ((highlight["start"] >= 0) & (highlight["start"] <= frame) & (frame <= highlight["end"]))
    a = highlight["strength"] * on.float()[:, None, None]
    return dataclasses.replace(g, sh_dc=g.sh_dc * (1 - a) + highlight["dc"] * a, sh_rest=g.sh_rest * (1 - a))


def _array(arrays: dict, name: str, shape: tuple) -> np.ndarray:
    if name not in arrays:
        raise RenderRequestError(f"the render request has no {name!r} array")
    a = np.asarray(arrays[name])
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        raise RenderRequestError(f"{name} must have shape {shape}, got {a.shape}")
    return a


def handle_render(ctx, params: dict, arrays: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Render the request's frames to out_dir/frame_%04d.png (frame numbers from `frames`) and render.mp4.

    params: width, height, out_dir, fps, frames [int], near, far, device (auto|cpu|cuda), background [r,g,b]
    (null: transparent RGBA PNGs, black in the video), frame_format ("png", the default, or "none": no frame
    files), write_video (default true), objects [{name, ply_path}].
    arrays: viewmats (F, 4, 4), Ks (F, 3, 3) (engine/cameras.py convention), object_matrices (F, O, 4, 4)
    (Blender world from each object's file frame: matrix_world @ file_to_local), and optionally indices_<j>
    (int, 1-D): object j holds only these rows of its .ply (a segment), and for an object j deformed by a rig
    skin_handles_<j> (N_j, M) int, skin_weights_<j> (N_j, M), skin_transforms_<j> (F, K, 4, 4) file frame. An
    object with npz_path (a dynamic sequence; ply_path holds its timestep 0) shows timesteps_<j> (F,) int.
    highlight_color [r, g, b] (+ highlight_strength, default 0.6) with arrays highlight_start_<j>/highlight_end_<j>
    (N_j,) scene frames tints each Gaussian on the frames of a 4D query's answer.
    Cancelling keeps the PNGs already written (and no video).
    With return_pixels (F12 and the viewport: Blender's render engine) nothing is written and out_dir is not
    needed: the result's arrays are combined (F, H, W, 4) and depth (F, H, W) as Blender's render result holds
    them (engine.render.pixels.blender_pixels); `passes` (default both) names the ones to send. With
    shared_memory (a segment's name, engine/shared_pixels.py) they are written there instead of sent.
    png_encoder "auto" (default: on the GPU when the frames are there) or "pillow" (the CPU; for comparison).
    """
    width, height = int(params["width"]), int(params["height"])
    if width <= 0 or height <= 0:
        raise RenderRequestError(f"invalid render size {width}×{height}")
    frames = [int(f) for f in params.get("frames", [])]
    objects = list(params.get("objects", []))
    if not frames:
        raise RenderRequestError("the render request has no frames")
    if not objects:
        raise RenderRequestError("nothing to render: the request names no Gaussian objects",
                                 hint="select or import a Gaussian splat object first")
    F, O = len(frames), len(objects)
    viewmats = _array(arrays, "viewmats", (F, 4, 4)).astype(np.float32)
    Ks = _array(arrays, "Ks", (F, 3, 3)).astype(np.float32)
    object_matrices = _array(arrays, "object_matrices", (F, O, 4, 4)).astype(np.float64)
    if not (np.isfinite(viewmats).all() and np.isfinite(Ks).all()):
        raise CameraError("the camera has NaN or infinite values", hint="check the camera's animation")
    background = params.get("background")
    transparent = background is None
    return_pixels = bool(params.get("return_pixels", False))
    write_video = bool(params.get("write_video", True)) and not return_pixels
    frame_format = str(params.get("frame_format", "png")).lower()
    if frame_format not in FRAME_FORMATS:
        raise RenderRequestError(f"frame_format must be one of {', '.join(FRAME_FORMATS)}, got {frame_format!r}")
    if not return_pixels and frame_format == "none" and not write_video:
        raise RenderRequestError("the render request writes nothing: no frame files and no video",
                                 hint="choose PNG frames, the MP4, or both")
    png_encoder = str(params.get("png_encoder", "auto"))
    if png_encoder not in PNG_ENCODERS:
        raise RenderRequestError(f"png_encoder must be one of {', '.join(PNG_ENCODERS)}, got {png_encoder!r}")
    fps = float(params.get("fps", 24))
    out_dir = None
    if not return_pixels:
        out_dir = Path(params["out_dir"]).expanduser()
        out_dir.mkdir(parents=True, exist_ok=True)

    device = resolve_device(params.get("device", "auto"))
    # On a GPU without gsplat the torch rasterizer still runs there; slow, but correct, and said (a warning).
    backend = choose_backend("auto", device)
    ctx.progress(0.0, "loading Gaussians")
    held = next(iter(_device_cache.values()), (None, None))[1]
    g = cached_device_gaussians(ctx, objects, device,
                                {j: arrays[f"indices_{j}"] for j in range(O) if f"indices_{j}" in arrays})
    preloaded = g is held      # on the device already (an earlier request, or the preload after an import)
    bg = torch.tensor(background if background is not None else [0.0, 0.0, 0.0], dtype=torch.float32,
                      device=device)
    Ks_d = torch.from_numpy(Ks).to(device)

    frames_out = rendered_frames(ctx, g, objects, arrays, params, frames, viewmats, Ks_d, object_matrices,
                                 None if transparent else bg, backend)
    if return_pixels:
        passes = list(params.get("passes", PIXEL_PASSES))
        if not passes or any(p not in PIXEL_PASSES for p in passes):
            raise RenderRequestError(f"passes must name some of {', '.join(PIXEL_PASSES)}, got {passes!r}")
        shapes = shared_pixels.pass_shapes(passes, F, height, width)
        shm = shared_pixels.attach(params["shared_memory"]) if params.get("shared_memory") else None
        if shm is not None and shm.size < shared_pixels.nbytes(shapes):
            shm.close()
            raise RenderRequestError(f"the shared pixel buffer holds {shm.size} bytes, the answer needs "
                                     f"{shared_pixels.nbytes(shapes)}")
        out_arrays = (shared_pixels.views(shm.buf, shapes) if shm is not None
                      else {name: np.empty(shape, np.float32) for name, shape in shapes.items()})
        try:
            for i, frame, out in frames_out:
                with torch.no_grad():
                    pixels = dict(zip(PIXEL_PASSES, blender_pixels(out.rgb, out.alpha, out.depth, transparent)))
                    for name in passes:   # one device-to-host copy, straight into the answer (shared memory)
                        torch.from_numpy(out_arrays[name][i]).copy_(pixels[name])
                ctx.progress((i + 1) / F, f"frame {frame} ({i + 1} of {F})")
        finally:
            if shm is not None:
                out_arrays = {}   # the views go before the segment is closed
                shm.close()
        return {"frames": [], "video": None, "backend": backend, "device": str(device), "gaussians": g.count,
                "shared_memory": shm is not None, "preloaded": preloaded}, out_arrays
    video_path = out_dir / VIDEO_NAME
    partial_video = out_dir / (VIDEO_NAME + ".partial.mp4")
    video = None
    cores = os.cpu_count() or 1
    if write_video:   # ffmpeg takes yuv420p made on the GPU; otherwise RGB, converted by the encoder
        yuv = device.type == "cuda" and video_backend() == "imageio-ffmpeg"
        # Beside PNGs, x264 gets half the cores: with all of them (its default) it starves the threads that
        # launch the frames and write the PNGs, and the job waits on both.
        video = Mp4Writer(partial_video, width, height, fps, input_format="yuv420p" if yuv else "rgb24",
                          threads=max(2, cores // 2) if frame_format == "png" else None)
    # Pillow on host frames: one worker per core. A GPU-encoded PNG leaves its worker only the Huffman code and
    # the file: 8 keep up with the GPU, and more only take the GIL from the thread that launches the frames
    # (1.78-1.85 s against 1.90-1.97 s with 16 for the 240-frame benchmark job on the H200's 16 cores).
    gpu_png = device.type == "cuda" and png_encoder != "pillow"
    sink = FrameSink(video, workers=min(GPU_PNG_WORKERS, cores) if gpu_png else cores, png_encoder=png_encoder,
                     capture_png=gpu_png and F >= CAPTURE_PNG_FRAMES)
    written: list[str] = []
    finished = False
    try:
        for i, frame, out in frames_out:
            path = out_dir / FRAME_PATTERN.format(frame)
            with torch.no_grad():
                rgb8 = (out.rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
                png = None
                if frame_format == "png" and transparent:
                    # PNG alpha is straight; the renderer's colour is premultiplied.
                    straight = (out.rgb / out.alpha.clamp_min(1e-6)[..., None]).clamp(0, 1)
                    png = (torch.cat([straight, out.alpha[..., None].clamp(0, 1)], dim=-1) * 255 + 0.5
                           ).to(torch.uint8)
                elif frame_format == "png":
                    png = rgb8
                video_frame = None
                if video is not None:
                    video_frame = yuv420p_frame(rgb8) if video.input_format == "yuv420p" else rgb8
            sink.submit(path, png, video_frame)
            if png is not None:
                written.append(str(path))
            ctx.progress((i + 1) / F, f"frame {frame} ({i + 1} of {F})")
        finished = True
    finally:
        sink.finish()
        if video is not None:
            if finished:
                os.replace(partial_video, video_path)
            elif partial_video.exists():
                partial_video.unlink()
    return {"frames": written, "video": str(video_path) if write_video else None,
            "backend": backend, "device": str(device), "gaussians": g.count, "preloaded": preloaded}, {}


def rendered_frames(ctx, g: DeviceGaussians, objects: list[dict], arrays: dict, params: dict, frames: list[int],
                    viewmats: np.ndarray, Ks: torch.Tensor, object_matrices: np.ndarray,
                    background: torch.Tensor | None, backend: str):
    """(index, frame, RenderOutput) of each frame in order, the objects posed as the request says (matrices,
    rigs, dynamic timesteps, a query's tint); a cancel is honoured between frames."""
    width, height = int(params["width"]), int(params["height"])
    near, far = float(params.get("near", 0.01)), float(params.get("far", 1e10))
    F = len(frames)
    skin = skinning_from_request(objects, arrays, g.object_index, F)   # objects deformed by a rig, if any
    dynamic = dynamic_sources(objects, arrays, g, F)                   # objects playing a 4D sequence
    highlight = query_highlight(params, arrays, g, objects)            # a 4D query's answer, tinted

    def render(i: int, means, quats, scales, sh, viewmat, depth_scale: float = 1.0):
        out = render_gaussians(means, quats, scales, g.opacities, sh, viewmat, Ks[i], width, height,
                               near=near / depth_scale, far=far / depth_scale, background=background,
                               sh_degree=g.sh_degree, backend=backend)
        return out if depth_scale == 1.0 else dataclasses.replace(out, depth=out.depth * depth_scale)

    if skin is None and not dynamic and highlight is None:
        # Rigid objects: only the ones that moved relative to the largest are transformed (posing.py).
        poser = ScenePoser(g, object_matrices, viewmats)
        for i, frame in enumerate(frames):
            ctx.check_cancelled()
            yield i, frame, render(i, *poser.pose(i), depth_scale=poser.depth_scale(i))
        return
    viewmats_d = torch.from_numpy(viewmats).to(g.means.device)
    for i, frame in enumerate(frames):   # rigs, sequences and tints change Gaussians on every frame
        ctx.check_cancelled()
        g_i = at_timesteps(g, dynamic, i) if dynamic else g
        g_i = tinted(g_i, highlight, int(frame)) if highlight is not None else g_i
        posed = posed_gaussians(g_i, object_matrices[i]) if skin is None else \
            posed_gaussians(g_i, object_matrices[i], skin, i)
        yield i, frame, render(i, *posed, viewmats_d[i])
