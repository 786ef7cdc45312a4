"""4D Query operators and the sidebar section: ask (async, Esc cancels; scripts wait), make a segment of the
answer, clear it. The request is query4d_request.py, the answer in the scene query4d_answer.py.
"""

from __future__ import annotations

import bpy

from engine.errors import AnimateGaussiansError
from engine.query4d.thresholds import MIN_SPATIAL_THRESHOLD, THRESHOLDS, request_thresholds

from .. import notices
from ..engine_link import engine_client
from ..engine_link.modal_engine import EngineRequestModal
from ..io import dynamic_import, gaussian_object
from ..io.sequence_ops import GAUSSIANS_OT_import_dynamic
from ..render.render_request import gaussian_objects
from ..ui.advanced_settings import collapsible_box
from .query4d_answer import apply_answer, clear_answer, query_mask, split_answer
from .query4d_request import QueryTarget, answer_from_result, build_query_request


def _undo_push(message: str) -> None:
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:   # no undo stack (background mode)
        pass


def _threshold_property(name: str):
    """A query threshold as a scene property: the engine's default and range (engine/query4d/thresholds.py).
    Soft limits only: a value typed or scripted outside the range is kept as given and refused by Ask with a
    message, where a hard limit would clamp it silently into another query than the one asked."""
    t = THRESHOLDS[name]
    return bpy.props.FloatProperty(name=t.label, default=t.default, soft_min=t.low, soft_max=t.high, precision=3,
                                   step=1, description=t.description[0].upper() + t.description[1:])


class GaussiansQuery4DSettings(bpy.types.PropertyGroup):
    text: bpy.props.StringProperty(name="Text", description="What happens, e.g. \"the ball rolling\"")
    segment_name: bpy.props.StringProperty(name="Name", default="",
                                           description="Name of the segment (empty: the query's text)")
    last_text: bpy.props.StringProperty(options={"SKIP_SAVE"})
    last_span: bpy.props.StringProperty(options={"SKIP_SAVE"})
    last_count: bpy.props.IntProperty(options={"SKIP_SAVE"})
    # The Advanced box: the query's thresholds, at the engine's defaults. The spatial cut is automatic unless
    # Auto is turned off (an explicit switch rather than a magic 0, which is itself a valid cut: everything
    # that beats the negatives); its value, greyed out while Auto is on, starts at the automatic cut's floor.
    show_advanced: bpy.props.BoolProperty(name="Advanced", default=False)
    spatial_auto: bpy.props.BoolProperty(
        name="Auto Spatial Threshold", default=True,
        description=f"Choose the spatial cut per query (Otsu's, never below {MIN_SPATIAL_THRESHOLD:g}); "
                    "turn off to set Spatial Threshold yourself")
    spatial_threshold: _threshold_property("spatial_threshold")
    temporal_threshold: _threshold_property("temporal_threshold")
    smoothing: _threshold_property("smoothing")
    min_relevancy: _threshold_property("min_relevancy")
    grow_threshold: _threshold_property("grow_threshold")


def query_thresholds(settings: GaussiansQuery4DSettings) -> dict[str, float]:
    """The request's thresholds from the panel (the spatial one left out while Auto is on), checked: a value
    out of range is a QueryThresholdError naming the panel's label."""
    # Rounded to 6 decimals: Blender stores float32, and 0.52 read back is 0.51999998; the engine must get the
    # value the artist sees (a default left alone is then exactly the engine's default).
    values = {name: round(getattr(settings, name), 6) for name in THRESHOLDS}
    if settings.spatial_auto:
        del values["spatial_threshold"]
    return request_thresholds(values, {name: t.label for name, t in THRESHOLDS.items()})


def _query_poll(cls, context) -> bool:
    if context.scene is None:
        return False
    obj = context.active_object
    if dynamic_import.is_dynamic(obj):
        return True
    if not gaussian_objects(context.scene):
        cls.poll_message_set("Import a dynamic sequence or a Gaussian object first")
        return False
    return True


class GAUSSIANS_OT_query4d(EngineRequestModal, bpy.types.Operator):
    """Find when and where the text happens (the active dynamic object, else the scene's animated Gaussians);
    the answer is highlighted while scrubbing and marked on the timeline"""

    bl_idname = "gaussians.query4d"
    bl_label = "4D Query"
    bl_options = {"REGISTER"}

    _label = "4D Query"
    _target: QueryTarget | None = None

    @classmethod
    def poll(cls, context):
        return _query_poll(cls, context)

    def _request(self, context):
        settings = context.scene.gaussians_query4d
        params, arrays, self._target = build_query_request(context.scene, context.active_object, settings.text,
                                                           engine_client.preferred_device(),
                                                           query_thresholds(settings))
        return "query4d", params, arrays

    def _on_result(self, context, params: dict, arrays: dict) -> set[str]:
        try:
            answer = answer_from_result(self._target, params, arrays)
            apply_answer(context.scene, answer)
        except AnimateGaussiansError as error:
            return notices.fail(self, error)
        _undo_push("4D Query")
        if answer.span_frames is None:
            self.report({"WARNING"}, answer.no_match_message())
        else:
            a, b = answer.span_frames
            self.report({"INFO"}, f"\u201c{answer.target.text}\u201d: frames {a}–{b}, "
                                  f"{sum(answer.matched()):,} Gaussians")
        return {"FINISHED"}


class GAUSSIANS_OT_query4d_segment(bpy.types.Operator):
    """Move the active object's Gaussians that are in the 4D query's answer into their own object"""

    bl_idname = "gaussians.query4d_segment"
    bl_label = "Make Segment"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or obj.type != "MESH" or query_mask(obj) is None:
            cls.poll_message_set("Run a 4D query on this object first")
            return False
        return True

    def execute(self, context):
        obj = context.active_object
        try:
            segment = split_answer(obj, context.scene.gaussians_query4d.segment_name)
        except AnimateGaussiansError as error:
            return notices.fail(self, error)
        gaussian_object.make_active(context.view_layer, segment)
        self.report({"INFO"}, f"{segment.name}: {len(segment.data.vertices):,} Gaussians split off {obj.name}")
        return {"FINISHED"}


class GAUSSIANS_OT_query4d_clear(bpy.types.Operator):
    """Remove the 4D query's highlight and timeline markers"""

    bl_idname = "gaussians.query4d_clear"
    bl_label = "Clear 4D Query"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        clear_answer(context.scene)
        return {"FINISHED"}


def draw_panel(layout, context) -> None:
    """The sidebar's "4D Query" section (panels.py)."""
    settings = context.scene.gaussians_query4d
    layout.operator(GAUSSIANS_OT_import_dynamic.bl_idname, text="Import Dynamic (.npz)", icon="IMPORT")
    layout.prop(settings, "text")
    layout.operator(GAUSSIANS_OT_query4d.bl_idname, text="Ask", icon="VIEWZOOM")
    if settings.last_text:
        span = f"frames {settings.last_span}" if settings.last_span else "no match"
        layout.label(text=f"\u201c{settings.last_text}\u201d: {span}, {settings.last_count:,} Gaussians")
    row = layout.row(align=True)
    row.prop(settings, "segment_name")
    row.operator(GAUSSIANS_OT_query4d_segment.bl_idname, text="Make Segment")
    layout.operator(GAUSSIANS_OT_query4d_clear.bl_idname, text="Clear", icon="X")
    draw_thresholds(layout, settings)


def draw_thresholds(layout, settings: GaussiansQuery4DSettings) -> None:
    """The collapsible "Advanced" box of the thresholds; a value out of range shows red (Ask refuses it)."""
    box = collapsible_box(layout, settings, "show_advanced")
    if box is None:
        return
    box.use_property_split = True
    box.prop(settings, "spatial_auto")
    for name, t in THRESHOLDS.items():
        row = box.row()
        row.active = not (name == "spatial_threshold" and settings.spatial_auto)
        row.alert = not t.low <= getattr(settings, name) <= t.high
        row.prop(settings, name)


classes = (GaussiansQuery4DSettings, GAUSSIANS_OT_query4d, GAUSSIANS_OT_query4d_segment, GAUSSIANS_OT_query4d_clear)


def register_properties() -> None:
    bpy.types.Scene.gaussians_query4d = bpy.props.PointerProperty(type=GaussiansQuery4DSettings)


def unregister_properties() -> None:
    del bpy.types.Scene.gaussians_query4d
