"""The "Gaussians" tab of the 3D Viewport sidebar: one panel per section (later sections add their own panel
or a sub-panel with bl_parent_id = GAUSSIANS_PT_main.bl_idname)."""

from __future__ import annotations

import bpy

from .. import compat, notices
from ..engine_link import engine_backend, engine_client, engine_preload
from ..io import display_nodes, gaussian_object
from ..io.import_export import GAUSSIANS_OT_export_ply, GAUSSIANS_OT_import_ply
from . import advanced_settings

CATEGORY = "Gaussians"


class GaussiansPanel:
    """Common placement of every panel of the tab."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY


class GAUSSIANS_PT_main(GaussiansPanel, bpy.types.Panel):
    bl_idname = "GAUSSIANS_PT_main"
    bl_label = "Gaussians"

    def draw(self, context):
        layout = self.layout
        row = layout.row(align=True)
        row.operator(GAUSSIANS_OT_import_ply.bl_idname, text="Import Splats", icon="IMPORT")
        row.operator(GAUSSIANS_OT_export_ply.bl_idname, text="Export .ply", icon="EXPORT")
        obj = context.active_object
        if gaussian_object.is_gaussian_object(obj):
            layout.label(text=f"{obj.name}: {gaussian_object.gaussian_count(obj):,} Gaussians, "
                              f"SH degree {gaussian_object.object_layout(obj).sh_degree}")
        else:
            layout.label(text="No Gaussian object selected")
        engine_backend.draw(layout, engine_client.current_backend())   # the rasterizer and device, once started
        engine_preload.draw(layout)       # starting / loading / ready after an import
        notices.draw(layout)     # every fallback the engine took, until the next result of that kind


class GAUSSIANS_PT_display(GaussiansPanel, bpy.types.Panel):
    bl_idname = "GAUSSIANS_PT_display"
    bl_label = "Display"
    bl_parent_id = GAUSSIANS_PT_main.bl_idname

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return gaussian_object.is_gaussian_object(obj) and display_nodes.display_modifier(obj) is not None

    def draw(self, context):
        obj = context.active_object
        mod = display_nodes.display_modifier(obj)
        layout = self.layout
        layout.use_property_split = True
        for name in (display_nodes.INPUT_POINTS_ONLY, display_nodes.INPUT_SCALE, display_nodes.INPUT_MAX_SIZE,
                     display_nodes.INPUT_MIN_OPACITY):
            compat.draw_modifier_input(layout, mod, display_nodes.input_identifier(obj, name), name)


class GAUSSIANS_PT_animate(GaussiansPanel, bpy.types.Panel):
    bl_idname = "GAUSSIANS_PT_animate"
    bl_label = "Animate"
    bl_parent_id = GAUSSIANS_PT_main.bl_idname

    def draw(self, context):
        from ..animate.animate_ops import GAUSSIANS_OT_animate, animate_settings

        settings = animate_settings(context.scene)
        layout = self.layout
        layout.use_property_split = True
        layout.prop(settings, "prompt")
        layout.prop(settings, "generator")
        if settings.generator == "VIDEO":
            layout.prop(settings, "video_path")
        col = layout.column(align=True)
        col.prop(settings, "frames")
        col.prop(settings, "fps")
        layout.prop(settings, "motion")
        if settings.motion != "RIGID":
            layout.prop(settings, "handles")
        col = layout.column(align=True)
        col.prop(settings, "location_tolerance")
        col.prop(settings, "rotation_tolerance")
        advanced_settings.draw_animate(layout, context.scene, settings.generator)
        layout.operator(GAUSSIANS_OT_animate.bl_idname, text="Animate", icon="ANIM")


class GAUSSIANS_PT_query4d(GaussiansPanel, bpy.types.Panel):
    bl_idname = "GAUSSIANS_PT_query4d"
    bl_label = "4D Query"
    bl_parent_id = GAUSSIANS_PT_main.bl_idname
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        from ..query4d.query4d_ops import draw_panel

        draw_panel(self.layout, context)


class GAUSSIANS_PT_render(GaussiansPanel, bpy.types.Panel):
    bl_idname = "GAUSSIANS_PT_render"
    bl_label = "Render Splats"
    bl_parent_id = GAUSSIANS_PT_main.bl_idname

    def draw(self, context):
        from ..render.render_splats import GAUSSIANS_OT_render_splats

        layout = self.layout
        scene = context.scene
        layout.label(text=f"Frames {scene.frame_start}–{scene.frame_end}, "
                          f"camera: {scene.camera.name if scene.camera else 'none'}")
        settings = scene.gaussians_advanced
        row = layout.row(align=True)
        row.prop(settings, "render_frames", text="Frames")
        row.prop(settings, "render_video", toggle=True)
        op = layout.operator(GAUSSIANS_OT_render_splats.bl_idname, text="Render Splats", icon="RENDER_ANIMATION")
        op.frame_format, op.write_video = settings.render_frames, settings.render_video


classes = (GAUSSIANS_PT_main, GAUSSIANS_PT_display, GAUSSIANS_PT_animate, GAUSSIANS_PT_query4d,
           GAUSSIANS_PT_render)
