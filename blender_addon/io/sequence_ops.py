"""Operators: import a PLY sequence (the folder of the chosen frame) or a Dynamic 3D Gaussians params.npz as one
animated Gaussian object, and export the active Gaussian object's animation (keys, rig, dynamic sequence) over the
scene's frame range as .ply frames."""

from __future__ import annotations

import time
from pathlib import Path

import bpy
from bpy_extras.io_utils import ExportHelper, ImportHelper

from engine.errors import AnimateGaussiansError

from .. import notices
from . import dynamic_import, gaussian_object, ply_sequence
from .import_export import GAUSSIANS_OT_export_ply


class GAUSSIANS_OT_import_ply_sequence(bpy.types.Operator, ImportHelper):
    """Import a 4DGS PLY sequence (one .ply per frame, the same Gaussians in each) as one object that plays on
    the timeline: choose any frame, every .ply in its folder is read in frame-number order"""

    bl_idname = "gaussians.import_ply_sequence"
    bl_label = "Import PLY Sequence"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default="*.ply", options={"HIDDEN"})
    frame_start: bpy.props.IntProperty(name="Start Frame", description="Scene frame of the first file", default=1)

    def execute(self, context):
        start = time.perf_counter()
        folder = Path(self.filepath).parent
        try:
            obj, notes = ply_sequence.import_sequence(folder, context, frame_start=self.frame_start)
        except (AnimateGaussiansError, OSError) as error:
            return notices.fail(self, error)
        notices.report(self, notes)
        steps = int(obj[ply_sequence.dynamic_import.DYNAMIC_STEPS_KEY])
        self.report({"INFO"}, f"Imported {steps} frames of {gaussian_object.gaussian_count(obj):,} Gaussians as "
                              f"{obj.name!r} in {time.perf_counter() - start:.2f} s")
        return {"FINISHED"}


class GAUSSIANS_OT_export_ply_sequence(bpy.types.Operator, ExportHelper):
    """Export the active Gaussian object over the scene's frame range, one .ply per frame (#### in the name is
    the frame number; without it, _#### is added)"""

    bl_idname = "gaussians.export_ply_sequence"
    bl_label = "Export PLY Sequence"
    bl_options = {"REGISTER", "UNDO"}    # as export_ply: frames are stepped through and restored, in one undo step

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default="*.ply", options={"HIDDEN"})

    poll = GAUSSIANS_OT_export_ply.poll

    def execute(self, context):
        path = Path(self.filepath)
        if "#" not in path.name:
            path = path.with_name(f"{path.stem}_####{path.suffix or '.ply'}")
        try:
            written = ply_sequence.export_sequence(context.active_object, path, scene=context.scene)
        except (AnimateGaussiansError, OSError) as error:
            return notices.fail(self, error)
        self.report({"INFO"}, f"Exported {len(written)} frames to {written[0].parent}")
        return {"FINISHED"}


class GAUSSIANS_OT_import_dynamic(bpy.types.Operator):
    """Import a Dynamic 3D Gaussians params.npz as a Gaussian object that plays on the timeline"""

    bl_idname = "gaussians.import_dynamic"
    bl_label = "Import Dynamic Gaussians"
    bl_options = {"REGISTER", "UNDO"}

    filepath: bpy.props.StringProperty(subtype="FILE_PATH")
    filter_glob: bpy.props.StringProperty(default="*.npz", options={"HIDDEN"})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        try:
            obj = dynamic_import.import_dynamic(self.filepath, context)
        except AnimateGaussiansError as error:
            return notices.fail(self, error)
        self.report({"INFO"}, f"{obj.name}: {len(obj.data.vertices):,} Gaussians, "
                              f"{obj[dynamic_import.DYNAMIC_STEPS_KEY]} timesteps")
        return {"FINISHED"}


classes = (GAUSSIANS_OT_import_ply_sequence, GAUSSIANS_OT_export_ply_sequence, GAUSSIANS_OT_import_dynamic)
