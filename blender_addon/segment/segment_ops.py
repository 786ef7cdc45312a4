"""Segment operators: click and box tools in the viewport, a text query, the granularity slider (scene settings),
Apply (split the selection into its own object, one undo step) and Clear. Queries run async (bpy.app.timers)."""

from __future__ import annotations

import bpy

from engine.errors import AnimateGaussiansError

from .. import notices
from ..engine_link import engine_client
from ..engine_link.modal_engine import set_status
from ..io import gaussian_object
from ..render.camera_data import scene_camera_view
from ..render.viewport_camera import region_camera, region_pixel, window_region_at
from . import object_subsets, segment_query

_POLL_SECONDS = 0.05
_HELP = "Esc or right-click: done"


def active_gaussian_object(context) -> bpy.types.Object:
    obj = context.active_object
    if not gaussian_object.is_gaussian_object(obj):
        raise gaussian_object.NotGaussianObjectError(
            f"{obj.name if obj else 'nothing'} is not a Gaussian object")
    return obj


def _redraw() -> None:
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PROPERTIES"):
                area.tag_redraw()


def _poll_session() -> float | None:
    """The timer: take the engine's answers while a query is under way (the UI never waits)."""
    try:
        busy = segment_query.session().poll()
    except Exception as error:   # a timer that raises is dropped silently by Blender: say it in the panel
        segment_query.session().message_type = "ERROR"
        segment_query.session().message = f"{type(error).__name__}: {error}"
        busy = False
    _redraw()
    return _POLL_SECONDS if busy else None


def _ensure_timer() -> None:
    if not bpy.app.timers.is_registered(_poll_session):
        bpy.app.timers.register(_poll_session, first_interval=0.0)


def start_query(context, query: segment_query.SegmentQuery) -> None:
    """Send the query with the scene's granularity and method; the answer arrives through the timer."""
    settings = context.scene.gaussians_segment
    segment_query.session().request(query, settings.granularity, settings.method,
                                    engine_client.preferred_device(), _options(context.scene))
    _ensure_timer()


def _options(scene) -> dict:
    from ..ui.advanced_settings import advanced, segment_options
    return segment_options(advanced(scene))


def _granularity_changed(settings, context) -> None:
    """Live slider: re-send the last query with the new granularity (the engine answers in milliseconds)."""
    session = segment_query.session()
    if session.query is not None and bpy.data.objects.get(session.query.object_name) is not None:
        session.request(session.query, settings.granularity, settings.method, engine_client.preferred_device(),
                        _options(context.scene))
        _ensure_timer()


class GaussiansSegmentSettings(bpy.types.PropertyGroup):
    granularity: bpy.props.FloatProperty(
        name="Granularity", min=0.0, max=1.0, default=0.5, subtype="FACTOR", update=_granularity_changed,
        description="From a small part (0) to the whole object (1); the selection follows as it moves")
    text: bpy.props.StringProperty(name="Text", description="What to select, e.g. \"the red ball\"")
    method: bpy.props.EnumProperty(
        name="Method", default="auto", update=_granularity_changed,
        items=[("auto", "Auto", "The best available: trained features, else SAM masks, else region growing"),
               ("region", "Region Growing", "No model: grow from the clicked Gaussian by position and colour"),
               ("lift", "Lift Masks", "2D masks of several views voted onto the Gaussians (seconds)"),
               ("saga", "SAGA Features", "Trained per-Gaussian affinity features (needs a training run)")])
    capture: bpy.props.StringProperty(
        name="Capture", subtype="DIR_PATH",
        description="The scene's capture (COLMAP folder or transforms.json folder) for segmentation views; "
                    "empty: views rendered around the scene")
    segment_name: bpy.props.StringProperty(name="Name", default="segment",
                                           description="Name of the object Apply makes")


def _views(context) -> dict | None:
    return segment_query.views_for_capture(context.scene.gaussians_segment.capture)


class _ViewportTool:
    """Shared by the click and box tools: modal in a 3D viewport, on the active Gaussian object."""

    @classmethod
    def poll(cls, context):
        if context.area is None or context.area.type != "VIEW_3D":
            cls.poll_message_set("Run this from a 3D Viewport")
            return False
        if not gaussian_object.is_gaussian_object(context.active_object):
            cls.poll_message_set("Select a Gaussian object")
            return False
        return True

    def _status(self, context, text: str | None) -> None:
        set_status(context, text)

    def _view_at(self, context, event):
        """(region, viewmat, K, width, height) of the viewport under the mouse, or None when not over it."""
        region = window_region_at(context.area, event.mouse_x, event.mouse_y)
        if region is None:
            return None
        viewmat, K, width, height = region_camera(region, context.area.spaces.active.region_3d)
        return region, viewmat, K, width, height

    def _send(self, context, mode: str, view, **where) -> None:
        _, viewmat, K, width, height = view
        obj = active_gaussian_object(context)
        query = segment_query.query_on_view(context.scene, obj, mode, viewmat, K, width, height,
                                            views=_views(context), **where)
        if query.object_name != obj.name:    # the object seen there is the one asked: it becomes the active one
            gaussian_object.make_active(context.view_layer, bpy.data.objects[query.object_name])
        start_query(context, query)


class GAUSSIANS_OT_segment_click(_ViewportTool, bpy.types.Operator):
    """Click an object in the viewport to select its Gaussians (the granularity slider refines it)"""

    bl_idname = "gaussians.segment_click"
    bl_label = "Segment by Click"
    bl_options = {"REGISTER"}

    def invoke(self, context, event):
        self._status(context, f"Segment by Click: click an object — {_HELP}")
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type in ("ESC", "RIGHTMOUSE") and event.value == "PRESS":
            self._status(context, None)
            return {"FINISHED"}
        if event.type != "LEFTMOUSE" or event.value != "PRESS":
            return {"PASS_THROUGH"}   # orbit, zoom and pan keep working
        try:
            view = self._view_at(context, event)
            if view is None:
                return {"PASS_THROUGH"}
            self._send(context, "click", view, point=region_pixel(event.mouse_x, event.mouse_y, view[0]))
        except AnimateGaussiansError as error:
            self.report({"ERROR"}, error.user_message())
        return {"RUNNING_MODAL"}


class GAUSSIANS_OT_segment_box(_ViewportTool, bpy.types.Operator):
    """Drag a box in the viewport to select the visible Gaussians of what it holds"""

    bl_idname = "gaussians.segment_box"
    bl_label = "Segment by Box"
    bl_options = {"REGISTER"}

    _start = None
    _end = None
    _draw_handle = None

    def invoke(self, context, event):
        self._status(context, f"Segment by Box: drag a box — {_HELP}")
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _draw(self):
        if self._start is None or self._end is None:
            return
        import gpu
        from gpu_extras.batch import batch_for_shader

        (x0, y0), (x1, y1) = self._start, self._end
        shader = gpu.shader.from_builtin("UNIFORM_COLOR")
        batch = batch_for_shader(shader, "LINE_LOOP", {"pos": [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]})
        shader.uniform_float("color", (1.0, 0.55, 0.0, 1.0))
        batch.draw(shader)

    def _stop(self, context) -> None:
        if self._draw_handle is not None:
            bpy.types.SpaceView3D.draw_handler_remove(self._draw_handle, "WINDOW")
            self._draw_handle = None
        self._status(context, None)
        context.area.tag_redraw()

    def modal(self, context, event):
        if event.type in ("ESC", "RIGHTMOUSE") and event.value == "PRESS":
            self._stop(context)
            return {"CANCELLED"}
        if event.type == "LEFTMOUSE" and event.value == "PRESS" and self._start is None:
            region = window_region_at(context.area, event.mouse_x, event.mouse_y)
            if region is None:
                return {"PASS_THROUGH"}
            self._region = region
            self._start = self._end = (event.mouse_x - region.x, event.mouse_y - region.y)
            self._draw_handle = bpy.types.SpaceView3D.draw_handler_add(self._draw, (), "WINDOW", "POST_PIXEL")
            return {"RUNNING_MODAL"}
        if self._start is None:
            return {"PASS_THROUGH"}
        if event.type == "MOUSEMOVE":
            self._end = (event.mouse_x - self._region.x, event.mouse_y - self._region.y)
            context.area.tag_redraw()
            return {"RUNNING_MODAL"}
        if event.type == "LEFTMOUSE" and event.value == "RELEASE":
            self._stop(context)
            region = self._region
            corners = [region_pixel(x + region.x, y + region.y, region) for x, y in (self._start, self._end)]
            try:
                viewmat, K, width, height = region_camera(region, context.area.spaces.active.region_3d)
                self._send(context, "box", (region, viewmat, K, width, height),
                           box=(corners[0][0], corners[0][1], corners[1][0], corners[1][1]))
            except AnimateGaussiansError as error:
                return notices.fail(self, error)
            return {"FINISHED"}
        return {"RUNNING_MODAL"}


class GAUSSIANS_OT_segment_text(bpy.types.Operator):
    """Select the Gaussians of what the text names (needs CLIP weights in the engine)"""

    bl_idname = "gaussians.segment_text"
    bl_label = "Segment by Text"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        if not gaussian_object.is_gaussian_object(context.active_object):
            cls.poll_message_set("Select a Gaussian object")
            return False
        return True

    def execute(self, context):
        settings = context.scene.gaussians_segment
        try:
            obj = active_gaussian_object(context)
            rv3d = context.region_data if context.area is not None and context.area.type == "VIEW_3D" else None
            if rv3d is not None and context.region is not None and context.region.type == "WINDOW":
                viewmat, K, width, height = region_camera(context.region, rv3d)
            else:   # from the sidebar or a script: the scene camera's view
                viewmat, K, width, height = scene_camera_view(context.scene)
            query = segment_query.make_query(obj, "text", viewmat, K, width, height, text=settings.text,
                                             views=_views(context))
            start_query(context, query)
        except AnimateGaussiansError as error:
            return notices.fail(self, error)
        self.report({"INFO"}, f"Segmenting {obj.name}: {query.describe()}")
        return {"FINISHED"}


class GAUSSIANS_OT_segment_apply(bpy.types.Operator):
    """Move the selected Gaussians into a new object (all attributes, a new segment id, origin at its base)"""

    bl_idname = "gaussians.segment_apply"
    bl_label = "Apply Segment"
    bl_options = {"REGISTER", "UNDO"}

    name: bpy.props.StringProperty(name="Name", default="", description="Object name (empty: the panel's)")

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if not gaussian_object.is_gaussian_object(obj) or object_subsets.selection_mask(obj) is None:
            cls.poll_message_set("Segment a Gaussian object first (click, box or text)")
            return False
        return True

    def execute(self, context):
        obj = context.active_object
        name = self.name or context.scene.gaussians_segment.segment_name or "segment"
        try:
            segment = object_subsets.split_selected(obj, object_subsets.selection_mask(obj), name)
        except AnimateGaussiansError as error:
            return notices.fail(self, error)
        segment_query.session().forget()
        gaussian_object.make_active(context.view_layer, segment)
        self.report({"INFO"}, f"{segment.name}: {gaussian_object.gaussian_count(segment):,} Gaussians split off "
                              f"{obj.name} ({gaussian_object.gaussian_count(obj):,} left)")
        return {"FINISHED"}


class GAUSSIANS_OT_segment_clear(bpy.types.Operator):
    """Clear the selection highlight of the active Gaussian object"""

    bl_idname = "gaussians.segment_clear"
    bl_label = "Clear Selection"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return gaussian_object.is_gaussian_object(context.active_object)

    def execute(self, context):
        segment_query.session().forget()
        if not object_subsets.clear_selection(context.active_object):
            self.report({"INFO"}, "Nothing was selected")
        return {"FINISHED"}


classes = (GaussiansSegmentSettings, GAUSSIANS_OT_segment_click, GAUSSIANS_OT_segment_box,
           GAUSSIANS_OT_segment_text, GAUSSIANS_OT_segment_apply, GAUSSIANS_OT_segment_clear)


def register_properties() -> None:
    bpy.types.Scene.gaussians_segment = bpy.props.PointerProperty(type=GaussiansSegmentSettings)


def unregister_properties() -> None:
    if bpy.app.timers.is_registered(_poll_session):
        bpy.app.timers.unregister(_poll_session)
    del bpy.types.Scene.gaussians_segment
    segment_query.replace_session(None)
