"""Operators: import a 3DGS .ply as a Gaussian object, export one back, and their File menu entries."""

from __future__ import annotations

import time

import bpy
from bpy_extras.io_utils import ExportHelper, ImportHelper

from engine.errors import AnimateGaussiansError

from . import gaussian_object
from .preferences import settings


def _fail(operator: bpy.types.Operator, error: Exception) -> set[str]:
    if isinstance(error, AnimateGaussiansError):
        operator.report({"ERROR"}, error.user_message())
    else:  # OSError and the like: the message names the path
        operator.report({"ERROR"}, f"{type(error).__name__}: {error}")
    return {"CANCELLED"}


class GAUSSIANS_OT_import_ply(bpy.types.Operator, ImportHelper):
    """Import a trained 3D Gaussian Splatting scene (.ply) as one point object keeping every Gaussian attribute"""

    bl_idname = "gaussians.import_ply"
    bl_label = "Import 3D Gaussian Splatting (.ply)"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default="*.ply", options={"HIDDEN"})
    convert_axes: bpy.props.BoolProperty(
        name="Convert Axes",
        description="Turn the file's frame (3DGS/COLMAP: y down, z forward) to Blender's z up, as the object's "
                    "transform (the Gaussians keep their file values)",
        default=True,
    )
    display: bpy.props.EnumProperty(
        name="Display",
        items=[("AUTO", "Auto", "Splats, or points only for scenes above the threshold in the preferences"),
               ("SPLATS", "Splats", "Oriented, scaled, coloured splats"),
               ("POINTS", "Points Only", "Round points: fast for multi-million scenes")],
        default="AUTO",
    )

    def execute(self, context):
        start = time.perf_counter()
        points_only = {"AUTO": None, "SPLATS": False, "POINTS": True}[self.display]
        try:
            obj = gaussian_object.import_ply(self.filepath, context, convert_axes=self.convert_axes,
                                             points_only=points_only,
                                             points_only_threshold=settings(context).points_only_threshold)
        except (AnimateGaussiansError, OSError) as error:
            return _fail(self, error)
        self.report({"INFO"}, f"Imported {gaussian_object.gaussian_count(obj):,} Gaussians as {obj.name!r} "
                              f"in {time.perf_counter() - start:.2f} s")
        return {"FINISHED"}


class GAUSSIANS_OT_export_ply(bpy.types.Operator, ExportHelper):
    """Export the active Gaussian object (edits and transform included) to a 3D Gaussian Splatting .ply"""

    bl_idname = "gaussians.export_ply"
    bl_label = "Export 3D Gaussian Splatting (.ply)"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default="*.ply", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        if not gaussian_object.is_gaussian_object(context.active_object):
            cls.poll_message_set("Select a Gaussian object (imported from a 3DGS .ply)")
            return False
        return True

    def execute(self, context):
        obj = context.active_object
        try:
            path = gaussian_object.export_ply(obj, self.filepath)
        except (AnimateGaussiansError, OSError) as error:
            return _fail(self, error)
        self.report({"INFO"}, f"Exported {gaussian_object.gaussian_count(obj):,} Gaussians to {path}")
        return {"FINISHED"}


def _menu_import(self, context):
    self.layout.operator(GAUSSIANS_OT_import_ply.bl_idname, text="3D Gaussian Splatting (.ply)")


def _menu_export(self, context):
    self.layout.operator(GAUSSIANS_OT_export_ply.bl_idname, text="3D Gaussian Splatting (.ply)")


classes = (GAUSSIANS_OT_import_ply, GAUSSIANS_OT_export_ply)


def register_menus() -> None:
    bpy.types.TOPBAR_MT_file_import.append(_menu_import)
    bpy.types.TOPBAR_MT_file_export.append(_menu_export)


def unregister_menus() -> None:
    bpy.types.TOPBAR_MT_file_import.remove(_menu_import)
    bpy.types.TOPBAR_MT_file_export.remove(_menu_export)
