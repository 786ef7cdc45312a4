"""The "Segment" section of the Gaussians sidebar tab: click/box tools, text query, granularity, Apply, Clear,
and what the engine said (selection size, which models would enable text and SAM-quality masks)."""

from __future__ import annotations

import bpy

from ..io import gaussian_object
from ..ui.advanced_settings import advanced, collapsible_box
from ..ui.panels import GAUSSIANS_PT_main, GaussiansPanel
from . import object_subsets, segment_query
from .segment_ops import (GAUSSIANS_OT_segment_apply, GAUSSIANS_OT_segment_box, GAUSSIANS_OT_segment_clear,
                          GAUSSIANS_OT_segment_click, GAUSSIANS_OT_segment_text)
from .segment_train import GAUSSIANS_OT_segment_train

# Shown until the engine has answered once with its own account of the models it has.
MODELS_HINT = ("Offline: click and box use region growing. SAM weights (segment-anything vit_b/l/h) give "
               "SAM-quality masks; CLIP (open_clip) enables text.")


def _wrapped(layout, text: str, width: int = 48, icon: str = "NONE") -> None:
    import textwrap

    for i, line in enumerate(textwrap.wrap(text, width) or [""]):
        layout.label(text=line, icon=icon if i == 0 else "BLANK1")


def draw_advanced(layout, scene: bpy.types.Scene) -> None:
    """The section's Advanced box: the SAM checkpoint, refusing region growing, and feature training."""
    adv = advanced(scene)
    box = collapsible_box(layout, adv, "show_segment")
    if box is None:
        return
    box.use_property_split = True
    box.prop(adv, "sam_model")
    box.prop(adv, "require_sam")
    box.operator(GAUSSIANS_OT_segment_train.bl_idname, icon="OUTLINER_OB_POINTCLOUD")


class GAUSSIANS_PT_segment(GaussiansPanel, bpy.types.Panel):
    bl_idname = "GAUSSIANS_PT_segment"
    bl_label = "Segment"
    bl_parent_id = GAUSSIANS_PT_main.bl_idname

    @classmethod
    def poll(cls, context):
        return gaussian_object.is_gaussian_object(context.active_object)

    def draw(self, context):
        layout = self.layout
        settings = context.scene.gaussians_segment
        obj = context.active_object
        row = layout.row(align=True)
        row.operator(GAUSSIANS_OT_segment_click.bl_idname, text="Click", icon="RESTRICT_SELECT_OFF")
        row.operator(GAUSSIANS_OT_segment_box.bl_idname, text="Box", icon="SELECT_SET")
        row = layout.row(align=True)
        row.prop(settings, "text", text="")
        row.operator(GAUSSIANS_OT_segment_text.bl_idname, text="", icon="VIEWZOOM")
        layout.prop(settings, "granularity", slider=True)
        layout.prop(settings, "method")
        layout.prop(settings, "capture")
        session = segment_query.session()
        if session.message:
            _wrapped(layout, session.message, icon="ERROR" if session.message_type == "ERROR" else "INFO")
        elif object_subsets.selection_mask(obj) is not None:
            layout.label(text=f"{int(object_subsets.selection_mask(obj).sum()):,} Gaussians selected")
        row = layout.row(align=True)
        row.prop(settings, "segment_name", text="")
        row.operator(GAUSSIANS_OT_segment_apply.bl_idname, text="Apply", icon="CHECKMARK")
        layout.operator(GAUSSIANS_OT_segment_clear.bl_idname, icon="X")
        _wrapped(layout.box(), segment_query.models_line(session.answer) or MODELS_HINT)
        draw_advanced(layout, context.scene)


classes = (GAUSSIANS_PT_segment,)
