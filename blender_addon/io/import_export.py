"""Operators: import a splat file (.ply, compressed .ply, .splat, .spz, SOG) as a Gaussian object, export one back
(.ply, or any format by extension), their File menu entries, and drag and drop onto the viewport (FileHandler)."""

from __future__ import annotations

import time

import bpy
from bpy_extras.io_utils import ExportHelper, ImportHelper

from engine.errors import AnimateGaussiansError
from engine.formats.detect import EXPORT_EXTENSIONS

from .. import notices
from ..engine_link import engine_preload
from ..preferences import settings
from . import gaussian_object

IMPORT_GLOB = "*.ply;*.splat;*.spz;*.sog;meta.json"


class GAUSSIANS_OT_import_ply(bpy.types.Operator, ImportHelper):
    """Import a 3D Gaussian Splatting scene (.ply, compressed .ply, .splat, .spz, .sog or a SOG meta.json) as one
    point object keeping every Gaussian attribute"""

    bl_idname = "gaussians.import_ply"
    bl_label = "Import Gaussian Splats"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default=IMPORT_GLOB, options={"HIDDEN"})
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

    def invoke(self, context, event):
        if self.properties.is_property_set("filepath"):   # dropped on the viewport (FileHandler): options only
            return self.invoke_popup(context)
        return super().invoke(context, event)

    def execute(self, context):
        start = time.perf_counter()
        points_only = {"AUTO": None, "SPLATS": False, "POINTS": True}[self.display]
        try:
            obj = gaussian_object.import_ply(self.filepath, context, convert_axes=self.convert_axes,
                                             points_only=points_only,
                                             points_only_threshold=settings(context).points_only_threshold)
        except (AnimateGaussiansError, OSError) as error:
            return notices.fail(self, error)
        self.report({"INFO"}, f"Imported {gaussian_object.gaussian_count(obj):,} Gaussians as {obj.name!r} "
                              f"in {time.perf_counter() - start:.2f} s")
        if engine_preload.wanted(context):   # the engine warms up and loads the scene while the user looks
            engine_preload.preload_scene(context.scene)
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
            return notices.fail(self, error)
        self.report({"INFO"}, f"Exported {gaussian_object.gaussian_count(obj):,} Gaussians to {path}")
        return {"FINISHED"}


class GAUSSIANS_OT_export_splats(bpy.types.Operator, ExportHelper):
    """Export the active Gaussian object as .ply, PlayCanvas .compressed.ply, .splat or .spz (by the format chosen;
    the compressed formats quantise, see the documentation)"""

    bl_idname = "gaussians.export_splats"
    bl_label = "Export Gaussian Splats"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".spz"
    check_extension = None      # the extension follows the format (".compressed.ply" is two suffixes)
    filter_glob: bpy.props.StringProperty(default="*.ply;*.splat;*.spz", options={"HIDDEN"})
    format: bpy.props.EnumProperty(
        name="Format",
        items=[(ext, label, "") for ext, label in (
            (".spz", "Niantic .spz", ), (".compressed.ply", "PlayCanvas .compressed.ply"),
            (".splat", "antimatter15 .splat"), (".ply", "3DGS .ply"))],
        default=".spz",
    )

    poll = GAUSSIANS_OT_export_ply.poll

    def execute(self, context):
        from . import splat_export

        obj = context.active_object
        path = self.filepath
        if not any(path.lower().endswith(ending) for ending, _ in EXPORT_EXTENSIONS):
            path += self.format
        try:
            written = splat_export.export_gaussians(obj, path)
        except (AnimateGaussiansError, OSError) as error:
            return notices.fail(self, error)
        self.report({"INFO"}, f"Exported {gaussian_object.gaussian_count(obj):,} Gaussians to {written}")
        return {"FINISHED"}


class GAUSSIANS_FH_splats(bpy.types.FileHandler):
    """Drop a splat file on the 3D viewport to import it (Blender 4.1+)."""

    bl_idname = "GAUSSIANS_FH_splats"
    bl_label = "Gaussian Splats"
    bl_import_operator = GAUSSIANS_OT_import_ply.bl_idname
    bl_file_extensions = ".ply;.splat;.spz;.sog"

    @classmethod
    def poll_drop(cls, context):
        return context.area is not None and context.area.type == "VIEW_3D"


def _menu_import(self, context):
    self.layout.operator(GAUSSIANS_OT_import_ply.bl_idname,
                         text="Gaussian Splats (.ply, .compressed.ply, .splat, .spz, .sog)")
    self.layout.operator("gaussians.import_ply_sequence", text="Gaussian PLY Sequence (folder of .ply frames)")
    self.layout.operator("gaussians.import_dynamic", text="Dynamic Gaussians (.npz)")


def _menu_export(self, context):
    self.layout.operator(GAUSSIANS_OT_export_ply.bl_idname, text="3D Gaussian Splatting (.ply)")
    self.layout.operator(GAUSSIANS_OT_export_splats.bl_idname,
                         text="Gaussian Splats (.spz, .compressed.ply, .splat, .ply)")
    self.layout.operator("gaussians.export_ply_sequence", text="Gaussian PLY Sequence (one .ply per frame)")


classes = (GAUSSIANS_OT_import_ply, GAUSSIANS_OT_export_ply, GAUSSIANS_OT_export_splats, GAUSSIANS_FH_splats)


def register_menus() -> None:
    bpy.types.TOPBAR_MT_file_import.append(_menu_import)
    bpy.types.TOPBAR_MT_file_export.append(_menu_export)


def unregister_menus() -> None:
    bpy.types.TOPBAR_MT_file_import.remove(_menu_import)
    bpy.types.TOPBAR_MT_file_export.remove(_menu_export)
