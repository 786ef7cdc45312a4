"""Animate: a prompt (or a video) on a Gaussian object becomes editable keys — object location/quaternion keys
for rigid motion, an armature with keyed bones for non-rigid — through the engine's "animate" request.

prepare_animate reads the scene into a request (nothing changes); apply_animate_result writes the keys in one
go (the operator's one undo step). The operator runs async (Esc cancels); batch uses animate_blocking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import bpy
import numpy as np

from engine.errors import AnimateGaussiansError, CameraError, EngineError

from .. import notices
from ..engine_link import engine_client
from ..engine_link.modal_engine import EngineRequestModal
from ..io import gaussian_object
from ..io.gaussian_layout import SOURCE_KEY
from ..preferences import generator_credentials
from ..render.camera_data import camera_from_blender, render_resolution
from . import keyframes, motion_result

GENERATORS = ("preset", "video", "diffusers", "runway", "kling")
MOTIONS = ("auto", "rigid", "nonrigid")
OBJECT_GROUP = "Object Transforms"
# Request images are at most this wide (the motion stage works on small frames; keeps the pipe light).
_MAX_REQUEST_WIDTH = 512
_MOTION_PATHS = ("location", "rotation_quaternion", "rotation_euler", "rotation_axis_angle")


class AnimateError(AnimateGaussiansError):
    """The motion the engine sent back cannot be applied, or the request cannot be made."""

    hint = "check the object and the camera, then try again"


@dataclass
class AnimateOptions:
    """The Animate settings as plain values (the panel's scene properties, or batch options)."""

    prompt: str
    generator: str = "preset"
    frames: int = 48
    fps: float = 24.0
    video_path: str = ""
    motion: str = "auto"
    handles: int = 8
    location_tolerance: float = 1e-3      # scene units
    rotation_tolerance: float = 0.1       # degrees
    device: str = "auto"
    options: dict = field(default_factory=dict)     # the generator's: model, steps, seed, offload, depth_model
    require: list = field(default_factory=list)     # fallback codes to refuse (engine/fallbacks.py CODES)


@dataclass
class AnimateJob:
    """A request made from the scene, and what is needed to apply its answer to the same object later."""

    object_name: str
    params: dict
    arrays: dict[str, np.ndarray]
    basis_0: np.ndarray               # the object's matrix_basis at the start frame
    matrix_world_0: np.ndarray
    file_to_local: np.ndarray
    frame_start: int
    scene_fps: float
    options: AnimateOptions


@dataclass
class AnimateSummary:
    object_name: str
    motion: str
    frames: int
    keyframes: int
    armature_name: str | None = None
    info: dict = field(default_factory=dict)

    def message(self) -> str:
        where = f"{self.armature_name} (armature)" if self.armature_name else self.object_name
        return f"Animated {self.object_name}: {self.motion} motion, {self.frames} frames, {self.keyframes} keys on {where}"


def scene_fps(scene: bpy.types.Scene) -> float:
    return scene.render.fps / scene.render.fps_base


def key_times(frame_start: int, frames: int, motion_fps: float, fps: float) -> np.ndarray:
    """Scene frame of each motion frame: the motion starts at frame_start and keeps its own timing."""
    return frame_start + np.arange(frames, dtype=np.float64) * (fps / motion_fps)


def _request_size(scene: bpy.types.Scene) -> tuple[int, int]:
    width, height = render_resolution(scene)
    if width > _MAX_REQUEST_WIDTH:
        height, width = max(1, round(height * _MAX_REQUEST_WIDTH / width)), _MAX_REQUEST_WIDTH
    return width, height


def _evaluated_world(obj: bpy.types.Object) -> np.ndarray:
    depsgraph = bpy.context.evaluated_depsgraph_get()
    return np.array(obj.evaluated_get(depsgraph).matrix_world, dtype=np.float64)


def prepare_animate(scene: bpy.types.Scene, obj: bpy.types.Object, options: AnimateOptions) -> AnimateJob:
    """The "animate" request for `obj` from the scene at its start frame (camera, pose, end pose at the last
    motion frame when the artist keyed one). Reads only; the current frame is restored."""
    if not gaussian_object.is_gaussian_object(obj):
        raise gaussian_object.NotGaussianObjectError(f"{obj.name if obj else 'nothing'} is not a Gaussian object")
    if not options.prompt.strip() and options.generator != "video":
        raise AnimateError("the prompt is empty", "describe the motion, e.g. \"the mug slides to the right\"")
    if options.generator not in GENERATORS:
        raise AnimateError(f"unknown generator {options.generator!r}", f"use one of {', '.join(GENERATORS)}")
    if options.motion not in MOTIONS:
        raise AnimateError(f"unknown motion type {options.motion!r}", f"use one of {', '.join(MOTIONS)}")
    if options.generator == "video" and not (options.video_path and Path(options.video_path).is_file()):
        raise AnimateError(f"the motion video {options.video_path!r} does not exist",
                           "choose a video file whose first frame is the camera's view at the start frame")
    if options.frames < 2:
        raise AnimateError(f"{options.frames} frames is too few", "ask for at least 2 frames")
    if options.fps <= 0:
        raise AnimateError(f"fps must be positive, got {options.fps}")
    if scene.camera is None:
        raise CameraError("the scene has no active camera (the motion is seen from it)")
    ply_path = obj.get(SOURCE_KEY)
    if not ply_path or not Path(ply_path).is_file():
        raise AnimateError(f"the source .ply of {obj.name!r} is missing: {ply_path}",
                           "re-import the .ply or put the file back")
    width, height = _request_size(scene)
    fps = scene_fps(scene)
    frame_start = scene.frame_start
    end_frame = round(key_times(frame_start, options.frames, options.fps, fps)[-1])
    original = (scene.frame_current, scene.frame_subframe)
    try:
        scene.frame_set(frame_start)
        viewmat, K, _, _ = camera_from_blender(scene, scene.camera, width, height)
        world_0 = _evaluated_world(obj)
        basis_0 = np.array(obj.matrix_basis, dtype=np.float64)
        scene.frame_set(end_frame)
        world_end = _evaluated_world(obj)
    finally:
        scene.frame_set(original[0], subframe=original[1])
    local = gaussian_object.file_to_local(obj)
    file_to_world_0 = gaussian_object.file_to_world(obj, world_0)
    indices = gaussian_object.source_indices(obj)
    if indices is None:
        indices = np.arange(gaussian_object.gaussian_count(obj), dtype=np.int64)
    arrays = {"indices": indices.astype(np.int64), "viewmat": np.asarray(viewmat, np.float64),
              "K": np.asarray(K, np.float64), "file_to_world": file_to_world_0}
    # The artist's end pose (keyed at the last motion frame): the same object moved, in the file frame.
    end_transform = np.linalg.inv(file_to_world_0) @ gaussian_object.file_to_world(obj, world_end)
    if not np.allclose(end_transform, np.eye(4), atol=1e-6):
        arrays["end_transform"] = end_transform
    params = {"ply_path": str(ply_path), "prompt": options.prompt, "generator": options.generator,
              "frames": int(options.frames), "fps": float(options.fps), "width": int(width), "height": int(height),
              "device": options.device, "video_path": options.video_path or None, "motion": options.motion,
              "handles": int(options.handles),
              # API keys from the preferences travel in the request only (never stored in the .blend or logged).
              "options": {**dict(options.options), **generator_credentials(options.generator)}}
    if options.require:
        params["require"] = list(options.require)
    return AnimateJob(obj.name, params, arrays, basis_0, world_0, local, frame_start, fps, options)


def _result_array(arrays: dict, name: str, shape: tuple) -> np.ndarray:
    a = arrays.get(name)
    if a is None:
        raise EngineError(f"the engine's motion has no {name!r}", "the add-on and the engine differ in version")
    a = np.asarray(a, np.float64)
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        raise EngineError(f"the engine's {name} has shape {a.shape}, expected {shape}")
    if not np.isfinite(a).all():
        raise EngineError(f"the engine's {name} has NaN or infinite values", "try again, or another generator")
    return a


def apply_animate_result(job: AnimateJob, params: dict, arrays: dict[str, np.ndarray],
                         scene: bpy.types.Scene | None = None) -> AnimateSummary:
    """Write the engine's motion as keys on the job's object (rigid) or on a new armature (non-rigid).
    Everything is checked before the first change, so a bad answer leaves the scene as it was."""
    scene = scene or bpy.context.scene
    obj = bpy.data.objects.get(job.object_name)
    if obj is None:
        raise AnimateError(f"the object {job.object_name!r} was deleted while its motion was made")
    motion = params.get("motion", "rigid")
    motion_fps = float(params.get("fps", job.options.fps))
    tol_loc = job.options.location_tolerance
    tol_quat = math.radians(job.options.rotation_tolerance) / 4.0   # |Δq| per component -> angle ≤ tolerance
    if motion == "rigid":
        transforms = _result_array(arrays, "transforms", (None, 4, 4))
        times = key_times(job.frame_start, len(transforms), motion_fps, job.scene_fps)
        location, quat, _ = motion_result.object_basis_motion(transforms, job.basis_0, job.file_to_local)
        keys = write_object_motion(obj, times, location, quat, tol_loc, tol_quat)
        armature_name = None
        frames = len(transforms)
    elif motion == "nonrigid":
        from . import rig

        handle_rest = _result_array(arrays, "handle_rest", (None, 3))
        k = len(handle_rest)
        handle_transforms = _result_array(arrays, "handle_transforms", (None, k, 4, 4))
        weights = _result_array(arrays, "weights", (gaussian_object.gaussian_count(obj), k))
        frames = len(handle_transforms)
        times = key_times(job.frame_start, frames, motion_fps, job.scene_fps)
        arm = rig.build_rig(obj, handle_rest, weights, job.file_to_local, job.matrix_world_0)
        keys = rig.write_bone_motion(arm, handle_transforms, job.file_to_local, times, tol_loc, tol_quat)
        armature_name = arm.name
    else:
        raise EngineError(f"the engine answered an unknown motion type {motion!r}")
    end = math.ceil(times[-1])
    if scene.frame_end < end:
        scene.frame_end = end
    return AnimateSummary(obj.name, motion, frames, keys, armature_name, dict(params.get("info", {})))


def write_object_motion(obj: bpy.types.Object, times: np.ndarray, location: np.ndarray, quat: np.ndarray,
                        tol_loc: float, tol_quat: float) -> int:
    """Replace the object's location/rotation keys by reduced Bézier keys of this motion; returns the key count."""
    obj.rotation_mode = "QUATERNION"
    container = keyframes.channel_container(obj)
    keyframes.remove_fcurves(container, _MOTION_PATHS)
    loc_keys = keyframes.reduce_keys(times, location, tol_loc)
    rot_keys = keyframes.reduce_keys(times, quat, tol_quat)
    keyframes.write_keys(container, "location", loc_keys, OBJECT_GROUP)
    keyframes.write_keys(container, "rotation_quaternion", rot_keys, OBJECT_GROUP)
    return 3 * loc_keys.count + 4 * rot_keys.count


def animate_blocking(scene: bpy.types.Scene, obj: bpy.types.Object, options: AnimateOptions,
                     report: Callable[[str], None] | None = None,
                     client: engine_client.EngineClient | None = None) -> AnimateSummary:
    """Make the motion and write its keys, waiting for the engine (batch, scripts)."""
    job = prepare_animate(scene, obj, options)
    params, arrays = engine_client.request_blocking("animate", job.params, job.arrays, report, client)
    return apply_animate_result(job, params, arrays, scene)


# ------------------------------------------------------------------------------------------------------ UI

def options_from_settings(settings, device: str, scene: bpy.types.Scene | None = None) -> AnimateOptions:
    from ..ui import advanced_settings

    generator = settings.generator.lower()
    extra, require = (advanced_settings.animate_options(advanced_settings.advanced(scene), generator)
                      if scene is not None else ({}, []))
    return AnimateOptions(options=extra, require=require, prompt=settings.prompt, generator=settings.generator.lower(), frames=settings.frames,
                          fps=settings.fps, video_path=bpy.path.abspath(settings.video_path) if settings.video_path
                          else "", motion=settings.motion.lower(), handles=settings.handles,
                          location_tolerance=settings.location_tolerance,
                          rotation_tolerance=math.degrees(settings.rotation_tolerance), device=device)


class GaussiansAnimateSettings(bpy.types.PropertyGroup):
    prompt: bpy.props.StringProperty(name="Prompt", description="Object + action, e.g. \"the mug tips over\"")
    generator: bpy.props.EnumProperty(
        name="Generator", default="PRESET",
        items=[("PRESET", "Preset", "Procedural motions from presets/motion (offline, no model)"),
               ("VIDEO", "Video", "Your own motion video; its first frame is the camera's view at the start"),
               ("DIFFUSERS", "Diffusers", "A local image-to-video model (first + last frame where supported)"),
               ("RUNWAY", "Runway", "Runway's hosted API (key in the preferences or RUNWAY_API_KEY)"),
               ("KLING", "Kling", "Kling's hosted API (keys in the preferences or KLING_ACCESS_KEY + KLING_SECRET_KEY)")])
    frames: bpy.props.IntProperty(name="Frames", default=48, min=2, max=10000)
    fps: bpy.props.FloatProperty(name="FPS", default=24.0, min=0.1, max=1000.0,
                                 description="Frame rate of the motion; keys keep its timing at the scene's rate")
    video_path: bpy.props.StringProperty(name="Video", subtype="FILE_PATH")
    motion: bpy.props.EnumProperty(
        name="Motion", default="AUTO",
        items=[("AUTO", "Auto", "Let the engine choose"),
               ("RIGID", "Rigid", "The object moves as a whole: object keys"),
               ("NONRIGID", "Non-Rigid", "The object bends: an armature of handles with keyed bones")])
    handles: bpy.props.IntProperty(name="Handles", default=8, min=2, max=64,
                                   description="Bones of the non-rigid rig")
    location_tolerance: bpy.props.FloatProperty(name="Location Tolerance", default=1e-3, min=0.0, subtype="DISTANCE",
                                                description="Keys are reduced until the curve leaves the motion by this")
    rotation_tolerance: bpy.props.FloatProperty(name="Rotation Tolerance", default=math.radians(0.1), min=0.0,
                                                subtype="ANGLE")


def animate_settings(scene: bpy.types.Scene) -> GaussiansAnimateSettings:
    return scene.gaussians_animate


class GAUSSIANS_OT_animate(EngineRequestModal, bpy.types.Operator):
    """Animate the active Gaussian object from the prompt (or a video): keys on the object, or a rig"""

    bl_idname = "gaussians.animate"
    bl_label = "Animate"
    bl_options = {"REGISTER", "UNDO"}

    _label = "Animate"
    _cancelled = "Animate cancelled; the scene is unchanged"
    _job: AnimateJob | None = None

    @classmethod
    def poll(cls, context):
        return gaussian_object.is_gaussian_object(context.active_object)

    def _request(self, context):
        options = options_from_settings(animate_settings(context.scene), engine_client.preferred_device(),
                                        context.scene)
        self._job = prepare_animate(context.scene, context.active_object, options)
        return "animate", self._job.params, self._job.arrays

    def _on_result(self, context, params: dict, arrays: dict) -> set[str]:
        try:
            summary = apply_animate_result(self._job, params, arrays, context.scene)
        except AnimateGaussiansError as exc:
            return notices.fail(self, exc)
        self.report({"INFO"}, summary.message())
        notices.report(self, notices.latest("animate"))
        return {"FINISHED"}


def register_properties() -> None:
    bpy.types.Scene.gaussians_animate = bpy.props.PointerProperty(type=GaussiansAnimateSettings)


def unregister_properties() -> None:
    del bpy.types.Scene.gaussians_animate


classes = (GaussiansAnimateSettings, GAUSSIANS_OT_animate)
