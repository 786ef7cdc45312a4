"""Render Splats: the engine renders the scene's frame range from the active camera, with every Gaussian object
moved as animated in Blender, to PNG frames and an MP4. One request; the operator polls, batch waits.

The request itself (render_request.py) is the one the Gaussian Splats render engine (F12) sends too; this is the
fast path that skips Blender's image pipeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import bpy

from engine.errors import AnimateGaussiansError, CancelledError, EngineError

from . import engine_client
from .modal_engine import EngineModalMixin
from .render_request import build_render_request, gaussian_objects

DEFAULT_OUT_DIR = "//splat_render/"


def written_files(result: dict) -> list[str]:
    """Every file a render result names: the frames in order, then the video when there is one."""
    return list(result.get("frames", [])) + ([result["video"]] if result.get("video") else [])


def render_splats_blocking(scene: bpy.types.Scene, out_dir: str | os.PathLike,
                           resolution: tuple[int, int] | None = None, device: str | None = None,
                           report: Callable[[str], None] | None = None, write_video: bool = True,
                           client: engine_client.EngineClient | None = None, tint_query: bool = False,
                           frame_format: str = "png") -> list[str]:
    """Render the scene's frame range and wait (batch): returns the PNG paths then the MP4 path.

    `device` is "auto", "cpu" or "cuda" (None: the add-on preference); `report` gets a line per progress step;
    `frame_format` "none" writes no frame files (the MP4 only). Raises the engine's error (EngineError if it
    died; the scene is left as it was).
    """
    device = device or engine_client.preferred_device()
    params, arrays = build_render_request(scene, out_dir, resolution, device, write_video, tint_query, frame_format)
    client = client or engine_client.get_client()

    def on_progress(fraction: float, stage: str) -> None:
        if report is not None:
            report(f"render: {100 * fraction:3.0f}% {stage}")

    result, _ = client.request("render", params, arrays, on_progress=on_progress)
    expected = len(params["frames"]) if frame_format != "none" else 0
    if len(result.get("frames") or []) != expected:   # a finished render wrote every frame
        raise EngineError(f"the engine answered {len(result.get('frames') or [])} rendered frames of "
                          f"{expected}", "the add-on and the engine differ in version: reinstall it")
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
            elif ev.kind == "result" and not (ev.params.get("frames") or ev.params.get("video")):
                self.done, self.report_type = True, "ERROR"
                self.report = EngineError("the engine's render answer lists no frames and no video").user_message()
            elif ev.kind == "result":
                self.done, self.fraction, self.report_type = True, 1.0, "INFO"
                frames = ev.params.get("frames") or []
                written = " and ".join(([f"{len(frames)} frames"] if frames else [])
                                       + (["render.mp4"] if ev.params.get("video") else []))
                self.report = f"Rendered {written} to {self.out_dir}"
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
    frame_format: bpy.props.EnumProperty(name="Frames", default="png",
                                         items=[("png", "PNG", "frame_####.png, 8-bit (RGBA with a transparent film)"),
                                                ("none", "None", "No frame files: the MP4 only")])
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
                                              engine_client.preferred_device(), self.write_video, self.tint_query,
                                              self.frame_format)
        self._client = engine_client.get_client()
        self._request_id = self._client.submit("render", params, arrays)

    def execute(self, context):
        # Scripted calls (and batch) wait; the interactive path is invoke() → modal().
        try:
            out = render_splats_blocking(context.scene, bpy.path.abspath(self.directory), None,
                                         write_video=self.write_video, tint_query=self.tint_query,
                                         frame_format=self.frame_format)
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
