"""Render Splats: the engine renders the scene's frame range from the active camera, with every Gaussian object
moved as animated in Blender, to PNG frames and an MP4. One request; the operator polls, batch waits.

Blender only contributes what is evaluated per frame (camera viewmat + K, each object's file_to_world) and,
for an object holding a subset of its .ply (a segment), the subset's rows; the engine reads the Gaussians from
each object's source .ply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import bpy
import numpy as np

from engine.errors import AnimateGaussiansError, CameraError, CancelledError, EngineError

from . import dynamic_import, engine_client, rig
from .camera_data import camera_from_blender, render_resolution
from .gaussian_object import file_to_world, source_indices
from .gaussian_layout import SOURCE_KEY
from .modal_engine import EngineModalMixin

DEFAULT_OUT_DIR = "//splat_render/"


def gaussian_objects(scene: bpy.types.Scene) -> list[bpy.types.Object]:
    """The scene's Gaussian objects that render: meshes with a source .ply, not disabled for rendering."""
    return [obj for obj in scene.objects
            if obj.type == "MESH" and obj.get(SOURCE_KEY) and not obj.hide_render]


def scene_frames(scene: bpy.types.Scene) -> list[int]:
    return list(range(scene.frame_start, scene.frame_end + 1, max(1, scene.frame_step)))


def background_color(scene: bpy.types.Scene) -> list[float] | None:
    """None (transparent PNGs) when the film is transparent, else the world colour (black without a world)."""
    if scene.render.film_transparent:
        return None
    return [float(c) for c in scene.world.color] if scene.world is not None else [0.0, 0.0, 0.0]


def build_render_request(scene: bpy.types.Scene, out_dir: str | os.PathLike, resolution: tuple[int, int] | None,
                         device: str = "auto", write_video: bool = True,
                         tint_query: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
    """The "render" request (params, arrays) for the scene's frame range, evaluated frame by frame so keyframes,
    constraints, drivers and camera markers are honoured. The current frame is restored afterwards."""
    objects = gaussian_objects(scene)
    if not objects:
        raise AnimateGaussiansError("nothing to render: the scene has no Gaussian objects",
                                    "import a 3DGS .ply first (File > Import > 3D Gaussian Splatting)")
    for obj in objects:
        if not Path(obj[SOURCE_KEY]).exists():
            raise AnimateGaussiansError(f"the source .ply of {obj.name!r} is missing: {obj[SOURCE_KEY]}",
                                        "re-import the .ply or put the file back")
    if scene.camera is None:
        raise CameraError("the scene has no active camera")
    width, height = resolution if resolution else render_resolution(scene)
    frames = scene_frames(scene)
    viewmats = np.empty((len(frames), 4, 4), np.float32)
    Ks = np.empty((len(frames), 3, 3), np.float32)
    matrices = np.empty((len(frames), len(objects), 4, 4), np.float32)
    nears, fars = [], []
    # objects deformed by a Gaussians rig: their handles' file-frame transforms per frame (rig.py)
    rigs = {j: arm for j, obj in enumerate(objects) if (arm := rig.rig_of(obj)) is not None and rig.skinning(obj)}
    skin_transforms = {j: np.empty((len(frames), len(arm.data.bones), 4, 4), np.float32) for j, arm in rigs.items()}
    original = (scene.frame_current, scene.frame_subframe)
    try:
        for i, frame in enumerate(frames):
            scene.frame_set(frame)
            depsgraph = bpy.context.evaluated_depsgraph_get()
            viewmat, K, near, far = camera_from_blender(scene, scene.camera, width, height)
            viewmats[i], Ks[i] = viewmat, K
            nears.append(near)
            fars.append(far)
            for j, obj in enumerate(objects):
                matrices[i, j] = file_to_world(obj, obj.evaluated_get(depsgraph).matrix_world)
                if j in rigs:
                    skin_transforms[j][i] = rig.handle_transforms_now(obj, rigs[j], depsgraph, matrices[i, j])
    finally:
        scene.frame_set(original[0], subframe=original[1])
    params = {
        "width": int(width), "height": int(height), "out_dir": str(Path(out_dir).resolve()),
        "fps": scene.render.fps / scene.render.fps_base, "frames": frames,
        "near": min(nears), "far": max(fars), "device": device, "background": background_color(scene),
        "write_video": bool(write_video),
        "objects": [{"name": obj.name, "ply_path": str(obj[SOURCE_KEY])} for obj in objects],
    }
    arrays = {"viewmats": viewmats, "Ks": Ks, "object_matrices": matrices}
    for j, obj in enumerate(objects):   # "indices_<j>": object j holds these rows of its .ply (in mesh order)
        indices = source_indices(obj)
        if indices is not None:
            arrays[f"indices_{j}"] = indices
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
    for j, transforms in skin_transforms.items():
        arrays[f"skin_handles_{j}"], arrays[f"skin_weights_{j}"] = rig.skinning(objects[j])
        arrays[f"skin_transforms_{j}"] = transforms
    return params, arrays


def written_files(result: dict) -> list[str]:
    """Every file a render result names: the frames in order, then the video when there is one."""
    return list(result.get("frames", [])) + ([result["video"]] if result.get("video") else [])


def render_splats_blocking(scene: bpy.types.Scene, out_dir: str | os.PathLike,
                           resolution: tuple[int, int] | None = None, device: str | None = None,
                           report: Callable[[str], None] | None = None, write_video: bool = True,
                           client: engine_client.EngineClient | None = None, tint_query: bool = False) -> list[str]:
    """Render the scene's frame range and wait (batch): returns the PNG paths then the MP4 path.

    `device` is "auto", "cpu" or "cuda" (None: the add-on preference); `report` gets a line per progress step.
    Raises the engine's error (EngineError if it died; the scene is left as it was).
    """
    device = device or engine_client.preferred_device()
    params, arrays = build_render_request(scene, out_dir, resolution, device, write_video, tint_query)
    client = client or engine_client.get_client()

    def on_progress(fraction: float, stage: str) -> None:
        if report is not None:
            report(f"render: {100 * fraction:3.0f}% {stage}")

    result, _ = client.request("render", params, arrays, on_progress=on_progress)
    return written_files(result)


@dataclass
class RenderProgress:
    """What the UI shows of a render request, advanced by the engine's events (no bpy: testable as is)."""

    out_dir: str
    fraction: float = 0.0
    status: str = "Render Splats: starting the engine — Esc cancels"
    done: bool = False
    report_type: str = ""       # the Operator.report type once done: INFO, WARNING or ERROR
    report: str = ""

    def apply(self, events: list[engine_client.EngineEvent]) -> "RenderProgress":
        for ev in events:
            if self.done:
                break
            if ev.kind == "progress":
                self.fraction = ev.fraction
                self.status = f"Render Splats: {100 * ev.fraction:.0f}% {ev.stage} — Esc cancels"
            elif ev.kind == "result":
                self.done, self.fraction, self.report_type = True, 1.0, "INFO"
                video = " and render.mp4" if ev.params.get("video") else ""
                self.report = f"Rendered {len(ev.params.get('frames', []))} frames{video} to {self.out_dir}"
            else:
                self.done = True
                if isinstance(ev.error, CancelledError):
                    self.report_type, self.report = "WARNING", f"Render cancelled; {CancelledError.hint}"
                else:
                    self.report_type = "ERROR"
                    self.report = (ev.error or EngineError("the render failed")).user_message()
        return self


class GAUSSIANS_OT_render_splats(EngineModalMixin, bpy.types.Operator):
    """Render the frame range with the engine (photoreal splats) from the active camera to PNGs and an MP4"""

    bl_idname = "gaussians.render_splats"
    bl_label = "Render Splats"
    bl_options = {"REGISTER"}

    directory: bpy.props.StringProperty(name="Output Folder", subtype="DIR_PATH", default=DEFAULT_OUT_DIR,
                                        description="Where the frames (frame_####.png) and render.mp4 go")
    write_video: bpy.props.BoolProperty(name="Write MP4", default=True)
    tint_query: bpy.props.BoolProperty(name="Tint 4D Query", default=False,
                                       description="Tint the Gaussians of the 4D query's answer on its frames")

    _timer = None
    _client: engine_client.EngineClient | None = None
    _request_id: int | None = None
    _progress: RenderProgress | None = None

    @classmethod
    def poll(cls, context):
        return context.scene is not None and bool(gaussian_objects(context.scene))

    def _submit(self, context) -> None:
        params, arrays = build_render_request(context.scene, bpy.path.abspath(self.directory), None,
                                              engine_client.preferred_device(), self.write_video, self.tint_query)
        self._client = engine_client.get_client()
        self._request_id = self._client.submit("render", params, arrays)

    def execute(self, context):
        # Scripted calls (and batch) wait; the interactive path is invoke() → modal().
        try:
            out = render_splats_blocking(context.scene, bpy.path.abspath(self.directory), None,
                                         write_video=self.write_video, tint_query=self.tint_query)
        except AnimateGaussiansError as exc:
            self.report({"ERROR"}, exc.user_message())
            return {"CANCELLED"}
        self.report({"INFO"}, f"Rendered {len(out)} files to {bpy.path.abspath(self.directory)}")
        return {"FINISHED"}

    def invoke(self, context, event):
        try:
            self._submit(context)
        except AnimateGaussiansError as exc:
            self.report({"ERROR"}, exc.user_message())
            return {"CANCELLED"}
        self._progress = RenderProgress(bpy.path.abspath(self.directory))
        return self._begin_modal(context, self._progress.status)

    def modal(self, context, event):
        client = self._client
        if event.type == "ESC" and event.value == "PRESS":
            client.cancel(self._request_id)  # the engine answers with CancelledError at its next frame
            self._status(context, "Render Splats: cancelling…")
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        state = self._progress.apply(client.poll(self._request_id))
        if not state.done:
            context.window_manager.progress_update(int(100 * state.fraction))
            self._status(context, state.status)
            return {"RUNNING_MODAL"}
        self._end_modal(context)
        self.report({state.report_type}, state.report)
        return {"FINISHED"} if state.report_type == "INFO" else {"CANCELLED"}


classes = (GAUSSIANS_OT_render_splats,)
