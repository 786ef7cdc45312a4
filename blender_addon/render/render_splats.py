"""Render Splats: the engine renders the scene's frame range from the active camera, with every Gaussian object
moved as animated in Blender, to PNG frames and an MP4. One request; the operator polls, batch waits.

The request itself (render_request.py) is the one the Gaussian Splats render engine (F12) sends too; this is the
fast path that skips Blender's image pipeline.
"""

from __future__ import annotations

import os
from typing import Callable

import bpy

from engine.errors import AnimateGaussiansError, CancelledError, EngineError

from .. import notices
from ..engine_link import engine_client
from ..engine_link.modal_engine import EngineRequestModal
from .render_request import build_render_request, gaussian_objects

DEFAULT_OUT_DIR = "//splat_render/"
CANCELLED_MESSAGE = f"Render cancelled; {CancelledError.hint}"


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
    result, _ = engine_client.request_blocking("render", params, arrays, report, client)
    expected = len(params["frames"]) if frame_format != "none" else 0
    if len(result.get("frames") or []) != expected:   # a finished render wrote every frame
        raise EngineError(f"the engine answered {len(result.get('frames') or [])} rendered frames of "
                          f"{expected}", "the add-on and the engine differ in version: reinstall it")
    return written_files(result)


def rendered_message(result: dict, out_dir: str) -> str:
    """The operator's report of a finished render: how many frames, and the video when there is one."""
    frames = result.get("frames") or []
    written = " and ".join(([f"{len(frames)} frames"] if frames else []) + (["render.mp4"] if result.get("video") else []))
    return f"Rendered {written} to {out_dir}"


class GAUSSIANS_OT_render_splats(EngineRequestModal, bpy.types.Operator):
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

    _label = "Render Splats"
    _cancelled = CANCELLED_MESSAGE

    @classmethod
    def poll(cls, context):
        return context.scene is not None and bool(gaussian_objects(context.scene))

    def _request(self, context):
        params, arrays = build_render_request(context.scene, bpy.path.abspath(self.directory), None,
                                              engine_client.preferred_device(), self.write_video, self.tint_query,
                                              self.frame_format)
        return "render", params, arrays

    def execute(self, context):
        # Scripted calls (and batch) wait, checking every frame was written; the interactive path is invoke().
        try:
            out = render_splats_blocking(context.scene, bpy.path.abspath(self.directory), None,
                                         write_video=self.write_video, tint_query=self.tint_query,
                                         frame_format=self.frame_format)
        except AnimateGaussiansError as exc:
            return notices.fail(self, exc)
        self.report({"INFO"}, f"Rendered {len(out)} files to {bpy.path.abspath(self.directory)}")
        return {"FINISHED"}

    def _on_result(self, context, params: dict, arrays: dict) -> set[str]:
        if not (params.get("frames") or params.get("video")):
            return notices.fail(self, EngineError("the engine's render answer lists no frames and no video"))
        self.report({"INFO"}, rendered_message(params, bpy.path.abspath(self.directory)))
        return {"FINISHED"}


classes = (GAUSSIANS_OT_render_splats,)
