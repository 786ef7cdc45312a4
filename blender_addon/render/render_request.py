"""The engine's "render" request built from a Blender scene: which objects render, and per frame the camera and
every Gaussian object's evaluated transform, rig pose and dynamic timestep.

Render Splats asks for the frame range at once (files out); the Gaussian Splats render engine (F12, Render
Animation, the viewport) asks for one frame of the depsgraph Blender hands it (pixels back). Both go through
`assemble_request`, so what a frame holds is described once.

Blender only contributes what is evaluated per frame (camera viewmat + K, each object's file_to_world) and,
for an object holding a subset of its .ply (a segment), the subset's rows; the engine reads the Gaussians from
each object's source .ply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from engine.errors import AnimateGaussiansError, CameraError

from ..animate import rig
from ..io import dynamic_import
from ..io.gaussian_layout import SOURCE_KEY
from ..io.gaussian_object import file_to_world, source_indices
from .camera_data import camera_from_blender, render_resolution


@dataclass
class FramePose:
    """What one frame shows: the camera (engine convention) and each object's pose (in the request's order)."""

    frame: int
    viewmat: np.ndarray                  # (4, 4)
    K: np.ndarray                        # (3, 3)
    near: float
    far: float
    matrices: np.ndarray                 # (O, 4, 4) file frame -> world
    skin: dict[int, np.ndarray] = field(default_factory=dict)   # object index -> (bones, 4, 4) handle transforms


def gaussian_objects(scene: bpy.types.Scene, viewport: bool = False) -> list[bpy.types.Object]:
    """The scene's Gaussian objects that render: meshes with a source .ply, not disabled for rendering (for the
    viewport: not hidden there)."""
    def shown(obj) -> bool:
        return not (obj.hide_viewport or obj.hide_get()) if viewport else not obj.hide_render

    return [obj for obj in scene.objects if obj.type == "MESH" and obj.get(SOURCE_KEY) and shown(obj)]


def scene_frames(scene: bpy.types.Scene) -> list[int]:
    return list(range(scene.frame_start, scene.frame_end + 1, max(1, scene.frame_step)))


def background_color(scene: bpy.types.Scene) -> list[float] | None:
    """None (transparent PNGs) when the film is transparent, else the world colour (black without a world)."""
    if scene.render.film_transparent:
        return None
    return [float(c) for c in scene.world.color] if scene.world is not None else [0.0, 0.0, 0.0]


def checked_objects(scene: bpy.types.Scene, viewport: bool = False) -> list[bpy.types.Object]:
    """gaussian_objects, or the error to show when there is nothing to render or a source .ply is gone."""
    objects = gaussian_objects(scene, viewport)
    if not objects:
        raise AnimateGaussiansError("nothing to render: the scene has no Gaussian objects",
                                    "import a 3DGS .ply first (File > Import > 3D Gaussian Splatting)")
    for obj in objects:
        if not Path(obj[SOURCE_KEY]).exists():
            raise AnimateGaussiansError(f"the source .ply of {obj.name!r} is missing: {obj[SOURCE_KEY]}",
                                        "re-import the .ply or put the file back")
    return objects


def object_poses(objects: list[bpy.types.Object], depsgraph) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(matrices (O, 4, 4), rig handle transforms per rigged object) as evaluated in `depsgraph`."""
    matrices = np.empty((len(objects), 4, 4), np.float32)
    skin = {}
    for j, obj in enumerate(objects):
        matrices[j] = file_to_world(obj, obj.evaluated_get(depsgraph).matrix_world)
        arm = rig.rig_of(obj)
        if arm is not None and rig.skinning(obj):
            skin[j] = rig.handle_transforms_now(obj, arm, depsgraph, matrices[j])
    return matrices, skin


def object_sources(objects: list[bpy.types.Object]) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Where each object's Gaussians come from, as a render request names them: ([{name, ply_path}], arrays
    "indices_<j>": object j holds these rows of its .ply, in mesh order). The engine keys the Gaussians it keeps
    on the device by exactly these, so the import's preload sends them too."""
    entries = [{"name": obj.name, "ply_path": str(obj[SOURCE_KEY])} for obj in objects]
    arrays = {}
    for j, obj in enumerate(objects):
        indices = source_indices(obj)
        if indices is not None:   # int32 as the mesh stores them: half the bytes to send and to compare
            arrays[f"indices_{j}"] = indices.astype(np.int32)
    return entries, arrays


def assemble_request(scene: bpy.types.Scene, objects: list[bpy.types.Object], poses: list[FramePose],
                     width: int, height: int, device: str, tint_query: bool = False
                     ) -> tuple[dict, dict[str, np.ndarray]]:
    """The "render" request (params, arrays) for these frames; the caller adds where the frames go."""
    frames = [p.frame for p in poses]
    entries, arrays = object_sources(objects)
    params = {
        "width": int(width), "height": int(height),
        "fps": scene.render.fps / scene.render.fps_base, "frames": frames,
        "near": min(p.near for p in poses), "far": max(p.far for p in poses), "device": device,
        "background": background_color(scene), "objects": entries,
    }
    arrays.update(viewmats=np.stack([p.viewmat for p in poses]).astype(np.float32),
                  Ks=np.stack([p.K for p in poses]).astype(np.float32),
                  object_matrices=np.stack([p.matrices for p in poses]).astype(np.float32))
    for j, obj in enumerate(objects):   # a dynamic object: the engine reads each frame's timestep from its .npz
        if dynamic_import.is_dynamic(obj):
            params["objects"][j]["npz_path"] = str(obj[dynamic_import.DYNAMIC_SOURCE_KEY])
            arrays[f"timesteps_{j}"] = np.array([dynamic_import.timestep_for_frame(obj, f) for f in frames], np.int64)
    if tint_query:   # the 4D query's answer (q4d_start/q4d_end, scene frames) tinted on its frames
        for j, obj in enumerate(objects):
            first = obj.data.attributes.get(dynamic_import.QUERY_START_ATTRIBUTE)
            last = obj.data.attributes.get(dynamic_import.QUERY_END_ATTRIBUTE)
            if first is None or last is None:
                continue
            for key, attr in ((f"highlight_start_{j}", first), (f"highlight_end_{j}", last)):
                values = np.empty(len(obj.data.vertices), np.int32)
                attr.data.foreach_get("value", values)
                arrays[key] = values.astype(np.int64)
        params["highlight_color"] = [1.0, 0.45, 0.0]
    for j in {j for p in poses for j in p.skin}:
        arrays[f"skin_handles_{j}"], arrays[f"skin_weights_{j}"] = rig.skinning(objects[j])
        arrays[f"skin_transforms_{j}"] = np.stack([p.skin[j] for p in poses]).astype(np.float32)
    return params, arrays


def build_render_request(scene: bpy.types.Scene, out_dir: str | os.PathLike, resolution: tuple[int, int] | None,
                         device: str = "auto", write_video: bool = True, tint_query: bool = False,
                         frame_format: str = "png") -> tuple[dict, dict[str, np.ndarray]]:
    """The "render" request (params, arrays) for the scene's frame range to files (frame_format "png" or
    "none", and the MP4 unless write_video is off), evaluated frame by frame so keyframes, constraints,
    drivers and camera markers are honoured. The current frame is restored afterwards."""
    objects = checked_objects(scene)
    if scene.camera is None:
        raise CameraError("the scene has no active camera")
    width, height = resolution if resolution else render_resolution(scene)
    poses = []
    original = (scene.frame_current, scene.frame_subframe)
    try:
        for frame in scene_frames(scene):
            scene.frame_set(frame)
            depsgraph = bpy.context.evaluated_depsgraph_get()
            viewmat, K, near, far = camera_from_blender(scene, scene.camera, width, height, depsgraph)
            poses.append(FramePose(frame, viewmat, K, near, far, *object_poses(objects, depsgraph)))
    finally:
        scene.frame_set(original[0], subframe=original[1])
    params, arrays = assemble_request(scene, objects, poses, width, height, device, tint_query)
    params.update(out_dir=str(Path(out_dir).resolve()), write_video=bool(write_video), frame_format=frame_format)
    return params, arrays


def build_pixels_request(scene: bpy.types.Scene, depsgraph, camera: tuple[np.ndarray, np.ndarray, float, float],
                         width: int, height: int, device: str = "auto", viewport: bool = False,
                         passes: tuple[str, ...] = ("combined", "depth"), shared_memory: str | None = None
                         ) -> tuple[dict, dict[str, np.ndarray]]:
    """The "render" request of the one frame `depsgraph` is evaluated at, seen by `camera` (viewmat, K, near,
    far) at width × height, answered with pixels (Blender's Combined and/or Depth, `passes`) instead of files.

    `scene` is the original scene (its objects' custom properties and meshes are what the request reads);
    nothing is re-evaluated, so a render engine may call it from render() / view_draw(). With `shared_memory`
    (engine/shared_pixels.py) the engine writes the passes into that segment instead of sending them."""
    objects = checked_objects(scene, viewport)
    frame = int(depsgraph.scene.frame_current)
    pose = FramePose(frame, *camera, *object_poses(objects, depsgraph))
    params, arrays = assemble_request(scene, objects, [pose], width, height, device)
    params.update(return_pixels=True, write_video=False, passes=list(passes))
    if shared_memory:
        params["shared_memory"] = shared_memory
    return params, arrays
