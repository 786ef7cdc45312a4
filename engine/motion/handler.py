"""The engine's "animate" request: a segment + a prompt (or video) in, its 3D motion in the file frame out.

Generators are named in GENERATORS ("module:Class", imported on use, so a missing one fails clearly). A
video is lifted to 3D: depth per frame (given, or a depth model), aligned to the scene's rendered depth,
then a rigid or skinned non-rigid fit by differentiable rendering (engine/motion/lifting.py).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import fallbacks
from ..errors import AnimateGaussiansError, InputFileError
from ..render.sh import sh_to_color
from . import lifting
from .depth_alignment import align_depth_video
from .frames import render_with_segment_pose
from .rigid_lifting import lift_rigid
from .generators.base import GeneratedMotion, GeneratorError, MotionRequest

GENERATORS = {
    "preset": "engine.motion.generators.preset:PresetGenerator",
    "video": "engine.motion.generators.video:VideoGenerator",
    "diffusers": "engine.motion.generators.diffusers_i2v:DiffusersI2VGenerator",
    "runway": "engine.motion.generators.runway:RunwayGenerator",
    "kling": "engine.motion.generators.kling:KlingGenerator",
}
MOTIONS = ("auto", "rigid", "nonrigid")
# "auto" picks the skinned fit when it deforms the segment by more than this (object sizes) somewhere and
# explains the video better by at least AUTO_GAIN (relative drop of the data residual).
AUTO_DEFORMATION = 0.03
AUTO_GAIN = 0.4
# "auto" does not try the skinned fit when the rigid one explains every frame about as well as the rest pose
# explains the first (where only the video's source differs from our render): nothing is left to deform.
AUTO_RIGID_EXPLAINED = 1.5


class AnimateRequestError(AnimateGaussiansError):
    """The animate request's parameters or arrays are inconsistent."""

    hint = "this is a bug in the caller of the animate request; please report it with the message"


def make_generator(name: str) -> Any:
    """An instance of the generator registered under `name`."""
    entry = GENERATORS.get(name)
    if entry is None:
        raise GeneratorError(f"unknown motion generator {name!r}", hint=f"choose one of: {', '.join(GENERATORS)}")
    module_name, _, class_name = entry.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise GeneratorError(f"the {name!r} generator cannot be loaded here: {exc}",
                             hint="install the engine's requirements, or use --generator preset") from exc
    return cls()


def _array(arrays: dict, name: str, shape: tuple, required: bool = True) -> np.ndarray | None:
    if name not in arrays or arrays[name] is None:
        if required:
            raise AnimateRequestError(f"the animate request has no {name!r} array")
        return None
    a = np.asarray(arrays[name])
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        raise AnimateRequestError(f"{name} must have shape {shape}, got {a.shape}")
    return a


def _resolve_device(name: str) -> torch.device:
    from ..render.job import resolve_device
    return resolve_device(name or "auto")


def _segment_gaussians(g, indices: np.ndarray, viewmat: np.ndarray, device: torch.device
                       ) -> lifting.SegmentGaussians:
    """The Gaussians `indices` on the device, their SH colours evaluated towards the camera once."""
    means = torch.from_numpy(g.means[indices].astype(np.float32)).to(device)
    quats = torch.nn.functional.normalize(torch.from_numpy(g.quats_wxyz[indices].astype(np.float32)), dim=-1)
    sh = np.concatenate([g.sh_dc[indices, None, :], g.sh_rest[indices]], axis=1).astype(np.float32)
    campos = torch.tensor(-viewmat[:3, :3].T @ viewmat[:3, 3], dtype=torch.float32, device=device)
    colors = sh_to_color(g.sh_degree, torch.from_numpy(sh).to(device), means - campos).clamp(0, 1)
    return lifting.SegmentGaussians(
        means=means, quats=quats.to(device),
        scales=torch.from_numpy(np.exp(g.log_scales[indices]).astype(np.float32)).to(device),
        opacities=torch.from_numpy(g.opacities()[indices].astype(np.float32)).to(device), colors=colors)


def _load_scene(ctx, path: str):
    if not path:
        raise AnimateRequestError("the animate request has no ply_path")
    if not Path(path).exists():
        raise InputFileError(f"the scene file of the segment is missing: {path}",
                             hint="re-import the .ply or fix the object's source path")
    load = getattr(ctx, "load_scene", None)
    if load is None:
        from ..scene_cache import load_scene as load
    scene = load(path)
    return getattr(scene, "gaussians", scene)


def handle_animate(ctx, params: dict, arrays: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """params {ply_path, prompt, generator, frames, fps, width, height, device, video_path, motion, handles,
    options}; arrays {indices, scene_indices?, viewmat, K, file_to_world, end_transform?, depth?, video?}.
    Result: {motion, frames, fps, generator, info, fit} and transforms (F, 4, 4) (+ handle_rest,
    handle_transforms, weights for non-rigid), all in the file frame with T_0 = I."""
    progress = getattr(ctx, "progress", lambda fraction, stage="": None)
    check_cancelled = getattr(ctx, "check_cancelled", lambda: None)
    generator_name = str(params.get("generator") or "preset")
    motion = str(params.get("motion") or "auto")
    if motion not in MOTIONS:
        raise AnimateRequestError(f"motion must be one of {MOTIONS}, got {motion!r}")
    frames = int(params.get("frames") or 0)
    fps = float(params.get("fps") or 24.0)
    width, height = int(params.get("width") or 0), int(params.get("height") or 0)
    options = dict(params.get("options") or {})
    lift_options = lifting.LiftOptions.from_request(options.get("lifting"))   # a mistyped one fails before any work
    viewmat_world = _array(arrays, "viewmat", (4, 4)).astype(np.float64)
    K = _array(arrays, "K", (3, 3)).astype(np.float64)
    file_to_world = _array(arrays, "file_to_world", (4, 4)).astype(np.float64)
    end_transform = _array(arrays, "end_transform", (4, 4), required=False)
    video_in = _array(arrays, "video", (None, None, None, 3), required=False)
    depth_in = _array(arrays, "depth", (None, None, None), required=False)
    if video_in is not None:
        height, width = height or video_in.shape[1], width or video_in.shape[2]
    if width <= 0 or height <= 0:
        raise AnimateRequestError(f"the animate request needs the camera's width and height, got {width}×{height}")
    if frames <= 0 and generator_name != "video":
        frames = 48

    g = _load_scene(ctx, params.get("ply_path", ""))
    indices = _array(arrays, "indices", (None,)).astype(np.int64)
    if indices.size == 0 or indices.min() < 0 or indices.max() >= g.count:
        raise AnimateRequestError(f"indices must be non-empty and within the scene's {g.count} Gaussians")
    scene_indices = _array(arrays, "scene_indices", (None,), required=False)
    if scene_indices is None:
        keep = np.ones(g.count, bool)
        keep[indices] = False
        scene_indices = np.flatnonzero(keep)
    scene_indices = np.asarray(scene_indices, np.int64)
    # The engine works in the file frame: the camera sees file coordinates through the object's matrix.
    viewmat = viewmat_world @ file_to_world
    up = np.linalg.solve(file_to_world[:3, :3], np.array([0.0, 0.0, 1.0]))
    up /= np.linalg.norm(up)
    device = _resolve_device(str(params.get("device") or "auto"))
    backend = "gsplat" if device.type == "cuda" and _gsplat() else "cpu"
    lift_options.backend = backend

    generator = make_generator(generator_name)
    ok, why = generator.available()
    if not ok:
        raise GeneratorError(f"the {generator_name!r} generator cannot run here: {why}",
                             hint="use --generator preset (offline) or --generator video with your own video")
    request = MotionRequest(prompt=str(params.get("prompt") or ""), frames=frames, fps=fps,
                            segment_means=g.means[indices].astype(np.float64),
                            scene_means=g.means[scene_indices].astype(np.float64), up=up, viewmat=viewmat, K=K,
                            width=width, height=height, video_path=params.get("video_path") or None,
                            options=options)
    request.options.setdefault("device", str(device))   # a model generator runs where the request asked
    if end_transform is not None:
        request.options["end_transform"] = end_transform.astype(np.float64)
    if video_in is not None:
        request.options["video_frames"] = video_in
    if generator_name not in ("preset", "video"):  # models and services start from the engine's own render
        progress(0.02, "rendering the first frame")
        request.first_frame = render_with_segment_pose(g, indices, viewmat, K, width, height, backend=backend,
                                                       device=device)[0]
        if end_transform is not None:
            request.last_frame = render_with_segment_pose(g, indices, viewmat, K, width, height,
                                                          transform=end_transform, backend=backend,
                                                          device=device)[0]
    generated: GeneratedMotion = generator.generate(request, _sub(progress, 0.02, 0.3), check_cancelled)
    info = {"generator": generator_name, **generated.info}
    if generated.transforms is not None:
        transforms = np.asarray(generated.transforms, np.float64)
        result = {"motion": "rigid", "frames": int(len(transforms)), "fps": float(generated.fps or fps),
                  "generator": generator_name, "info": _jsonable(info), "fit": {}}
        progress(1.0, "motion ready")
        return result, {"transforms": transforms}
    if generated.video is None:
        raise GeneratorError(f"the {generator_name!r} generator returned neither a video nor a motion")
    return _lift_video(g, indices, scene_indices, viewmat, K, width, height, generated, depth_in, motion,
                       int(params.get("handles") or 8), options, lift_options, device, backend, info, progress,
                       check_cancelled, generator_name, fps)


def _gsplat() -> bool:
    from ..render.rasterizer import gsplat_available
    return gsplat_available()


def _sub(progress, start: float, end: float):
    return lambda fraction, stage="": progress(start + (end - start) * float(fraction), stage)


def _video_depth(video: np.ndarray, depth_in: np.ndarray | None, options: dict, device: torch.device,
                 info: dict, progress, check_cancelled) -> tuple[np.ndarray | None, str]:
    """Relative (or metric) depth of every frame and its kind: given, or from the depth model."""
    if depth_in is not None:
        if depth_in.shape != video.shape[:3]:
            raise AnimateRequestError(f"depth {depth_in.shape} does not match the video {video.shape[:3]}")
        info["depth"] = "given"
        return depth_in.astype(np.float32), str(options.get("depth_kind", "depth"))
    from ..models.registry import ModelUnavailableError
    from .depth_models import DEFAULT_DEPTH_MODEL, DEPTH_MODELS, estimate_depth
    model_id = options.get("depth_model") or DEFAULT_DEPTH_MODEL
    if model_id not in DEPTH_MODELS:
        raise AnimateRequestError(f"unknown depth model {model_id!r}",
                                  hint=f"choose one of: {', '.join(DEPTH_MODELS)}")
    try:
        depth, kind = estimate_depth(video, model_id, str(device), progress=_sub(progress, 0.3, 0.4),
                                     check_cancelled=check_cancelled)
    except ModelUnavailableError as exc:
        if options.get("require_depth"):
            raise
        # Said to the user (panel, batch warnings); --require-depth makes it a FallbackRefusedError instead.
        fallbacks.warn("no_depth", f"no depth model ({exc.user_message()}): the motion was lifted from colour "
                                   "alone and is less accurate in depth")
        info["depth"] = f"none ({exc}); lifted from colour alone, less accurate in depth"
        return None, "depth"
    info["depth"] = model_id
    return depth, kind


def _lift_video(g, indices, scene_indices, viewmat, K, width, height, generated, depth_in, motion, handles,
                options, lift_options, device, backend, info, progress, check_cancelled, generator_name, fps):
    from .generators.video import fit_to_camera

    video = np.asarray(generated.video)[..., :3].astype(np.uint8, copy=False)
    if video.shape[1:3] != (height, width):
        video = fit_to_camera(video, width, height)
    F = len(video)
    depth_rel, kind = _video_depth(video, depth_in, options, device, info, progress, check_cancelled)

    seg = _segment_gaussians(g, indices, viewmat, device)
    rest = _segment_gaussians(g, scene_indices, viewmat, device)
    bg = lifting.render_background(rest.means, rest.quats, rest.scales, rest.opacities, rest.colors, viewmat, K,
                                   width, height, backend=backend)
    metric = None
    if depth_rel is not None:
        if kind == "metric":
            metric = depth_rel
        else:
            progress(0.42, "aligning depth to the scene")
            _, ref_depth, ref_alpha = render_with_segment_pose(g, np.asarray(indices), viewmat, K, width, height,
                                                               backend=backend, device=device)
            seg_alpha = lifting.render_background(seg.means, seg.quats, seg.scales, seg.opacities, seg.colors,
                                                  viewmat, K, width, height, backend=backend).alpha.cpu().numpy()
            static = (seg_alpha < 0.05) & (ref_alpha > 0.5)
            metric, alignments = align_depth_video(depth_rel, ref_depth, static, kind,
                                                   per_frame=bool(options.get("depth_per_frame", True)),
                                                   device=device)
            info["depth_alignment"] = [{"scale": a.scale, "shift": a.shift, "inliers": a.inlier_fraction}
                                       for a in alignments]
    targets = lifting.LiftTargets(
        rgb=torch.from_numpy(video).to(device).float() / 255.0,
        depth=None if metric is None else torch.from_numpy(np.ascontiguousarray(metric)).to(device),
        masks=None if options.get("masks") is None else torch.as_tensor(np.asarray(options["masks"]),
                                                                        dtype=torch.float32, device=device))
    rigid = lift_rigid(seg, bg, targets, viewmat, K, lift_options,
                       _sub(progress, 0.45, 0.75 if motion != "rigid" else 0.99), check_cancelled)
    info["calibration"] = rigid.calibration
    result_arrays = {"transforms": rigid.transforms}
    chosen, fit = "rigid", rigid.residuals
    rigid_total = np.asarray(rigid.residuals["total"], np.float64)
    # The floor: a video of our own render matches the rest pose to its 8-bit rounding.
    unexplained = float(rigid_total[1:].max() / max(rigid_total[0], 3e-3)) if len(rigid_total) > 1 else 1.0
    info["rigid_unexplained"] = unexplained
    if motion == "nonrigid" or (motion == "auto" and unexplained > AUTO_RIGID_EXPLAINED):
        nonrigid = lifting.lift_nonrigid(seg, bg, targets, viewmat, K, handles, lift_options, rigid.transforms,
                                         _sub(progress, 0.75, 0.99), check_cancelled)
        rest_np = seg.means.cpu().numpy().astype(np.float64)
        moved = lifting.deformed_points(rest_np, nonrigid.handle_rest, nonrigid.handle_transforms, nonrigid.weights)
        rigid_moved = np.einsum("fij,nj->fni", nonrigid.transforms[:, :3, :3], rest_np) + nonrigid.transforms[:, None, :3, 3]
        deformation = float(np.linalg.norm(moved - rigid_moved, axis=-1).mean(1).max() / seg.size())
        same_measure = lifting.rigid_residuals(seg, bg, targets, viewmat, K, rigid.transforms, lift_options)
        gain = 1.0 - _data_residual(nonrigid.residuals) / max(_data_residual(same_measure), 1e-12)
        info["nonrigid_deformation"], info["nonrigid_gain"] = deformation, gain
        if motion == "nonrigid" or (deformation > AUTO_DEFORMATION and gain > AUTO_GAIN):
            chosen, fit = "nonrigid", nonrigid.residuals
            result_arrays = {"transforms": nonrigid.transforms, "handle_rest": nonrigid.handle_rest,
                             "handle_transforms": nonrigid.handle_transforms, "weights": nonrigid.weights}
    progress(1.0, "motion ready")
    return ({"motion": chosen, "frames": F, "fps": float(generated.fps or fps), "generator": generator_name,
             "info": _jsonable(info), "fit": _jsonable(fit)}, result_arrays)


def _data_residual(residuals: dict) -> float:
    return float(sum(sum(residuals.get(k, [])) for k in ("colour", "depth", "mask")))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
