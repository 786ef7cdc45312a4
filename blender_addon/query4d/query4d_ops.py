"""4D queries in Blender: ask the engine when and where a text happens in a dynamic object (or in the scene's
animated Gaussian objects), then highlight the answer while scrubbing, mark its span on the timeline, split it off.

The request is "query4d" (engine/query4d/handler.py). The feature extractor is the engine's best ("auto") unless
the environment variable ANIMATE_GAUSSIANS_QUERY4D_EXTRACTOR names one (viclip, clip, or oracle for labelled
synthetic sequences); FIELD_OPTIONS are sent as the request's field options (empty: the engine's defaults).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import bpy
import numpy as np

from engine.errors import AnimateGaussiansError, EngineError

from ..engine_link import engine_client
from ..engine_link.modal_engine import EngineRequestModal
from ..io import dynamic_import, gaussian_object
from ..io.gaussian_layout import SOURCE_KEY
from ..segment import object_subsets

EXTRACTOR_ENV = "ANIMATE_GAUSSIANS_QUERY4D_EXTRACTOR"
FIELD_OPTIONS: dict = {}
MARKER_PREFIX = "4D: "


class Query4DError(AnimateGaussiansError):
    """The scene cannot be asked as it is."""

    hint = "import a dynamic sequence (params.npz) or animate a Gaussian object, then ask again"


@dataclass
class QueryTarget:
    """What a query was asked about: per object its rows of the engine's sequence, and the scene frame of each
    of the sequence's timesteps."""

    text: str
    objects: list[str]
    rows: list[np.ndarray]          # per object: rows of the answer's per-Gaussian arrays, mesh order
    frames: np.ndarray              # (T,) scene frame of timestep t


@dataclass
class QueryAnswer:
    target: QueryTarget
    span_frames: tuple[int, int] | None
    span_timesteps: tuple[int, int] | None
    first_frame: list[np.ndarray]   # per object (n_j,) int32 scene frame, −1: never in the answer
    last_frame: list[np.ndarray]
    peak: list[np.ndarray]
    result: dict = field(default_factory=dict)

    def no_match_message(self) -> str:
        r = self.result
        why = (f" (best relevancy {r['best_relevancy']:.3f}, needs {r['relevancy_threshold']:.3f})"
               if "best_relevancy" in r and "relevancy_threshold" in r else "")
        return f"no Gaussians match \u201c{self.target.text}\u201d{why}"

    def matched(self) -> list[int]:
        return [int((f >= 0).sum()) for f in self.first_frame]

    def summary(self) -> dict:
        """For the batch report."""
        r = self.result
        return {"text": self.target.text, "objects": self.target.objects,
                "span_frames": list(self.span_frames) if self.span_frames else None,
                "span_timesteps": list(self.span_timesteps) if self.span_timesteps else None,
                "gaussians": dict(zip(self.target.objects, self.matched())),
                "counts": r.get("counts", []), "extractor": r.get("extractor"), "field": r.get("field"),
                "matched": self.span_frames is not None, "best_relevancy": r.get("best_relevancy"),
                "relevancy_threshold": r.get("relevancy_threshold"),
                "seconds": r.get("seconds")}


def extractor_name() -> str:
    return os.environ.get(EXTRACTOR_ENV, "").strip() or "auto"


def query_objects(scene: bpy.types.Scene, obj: bpy.types.Object | None) -> list[bpy.types.Object]:
    """A dynamic object is asked alone; otherwise every Gaussian object of the scene that renders (as animated)."""
    if dynamic_import.is_dynamic(obj):
        return [obj]
    from ..render.render_request import gaussian_objects
    objects = [o for o in gaussian_objects(scene) if not dynamic_import.is_dynamic(o)]
    if not objects:
        raise Query4DError("there is nothing to ask: the scene has no Gaussian objects")
    return objects


def build_query_request(scene: bpy.types.Scene, obj: bpy.types.Object | None, text: str,
                        device: str = "auto") -> tuple[dict, dict[str, np.ndarray], QueryTarget]:
    """The "query4d" request (params, arrays) and what its answer maps back to. A dynamic object sends its
    params.npz; other objects send their .ply files and, per scene frame, their file → world matrices."""
    text = text.strip()
    if not text:
        raise Query4DError("the 4D query has no text", hint="type what to look for, e.g. 'the ball rolling'")
    objects = query_objects(scene, obj)
    params: dict = {"text": text, "extractor": extractor_name(), "device": device, "options": dict(FIELD_OPTIONS)}
    arrays: dict[str, np.ndarray] = {}
    if dynamic_import.is_dynamic(objects[0]):
        dyn = objects[0]
        path = str(dyn[dynamic_import.DYNAMIC_SOURCE_KEY])
        if not os.path.isfile(path):
            raise Query4DError(f"the sequence of {dyn.name!r} is missing: {path}",
                               hint="put the params.npz back or import it again")
        params["npz_path"] = path
        steps = int(dyn.get(dynamic_import.DYNAMIC_STEPS_KEY, 1))
        frames = int(dyn.get(dynamic_import.DYNAMIC_START_KEY, 0)) + np.arange(steps)
        indices = gaussian_object.source_indices(dyn)
        rows = [indices if indices is not None else np.arange(len(dyn.data.vertices))]
    else:
        from ..render.render_request import scene_frames
        for o in objects:
            if not os.path.exists(str(o[SOURCE_KEY])):
                raise Query4DError(f"the source .ply of {o.name!r} is missing: {o[SOURCE_KEY]}",
                                   hint="re-import the .ply or put the file back")
        frames = np.array(scene_frames(scene))
        matrices = np.empty((len(frames), len(objects), 4, 4), np.float32)
        original = (scene.frame_current, scene.frame_subframe)
        try:
            for i, frame in enumerate(frames.tolist()):
                scene.frame_set(frame)
                depsgraph = bpy.context.evaluated_depsgraph_get()
                for j, o in enumerate(objects):
                    matrices[i, j] = gaussian_object.file_to_world(o, o.evaluated_get(depsgraph).matrix_world)
        finally:
            scene.frame_set(original[0], subframe=original[1])
        params["objects"] = [{"name": o.name, "ply_path": str(o[SOURCE_KEY])} for o in objects]
        arrays["object_matrices"] = matrices
        rows, offset = [], 0
        for j, o in enumerate(objects):
            indices = gaussian_object.source_indices(o)
            if indices is not None:
                arrays[f"indices_{j}"] = indices
            n = len(o.data.vertices)
            rows.append(np.arange(offset, offset + n))
            offset += n
    return params, arrays, QueryTarget(text=text, objects=[o.name for o in objects], rows=rows,
                                       frames=frames.astype(np.int64))


def answer_from_result(target: QueryTarget, result: dict, arrays: dict) -> QueryAnswer:
    """Timesteps → scene frames, and the per-Gaussian arrays split per object (checked before any use)."""
    missing = [name for name in ("mask_start", "mask_end", "peak") if name not in arrays]
    if missing:
        raise EngineError(f"the engine's 4D query answer has no {', '.join(missing)}",
                          "the add-on and the engine differ in version: reinstall the engine")
    start, end = np.asarray(arrays["mask_start"]), np.asarray(arrays["mask_end"])
    peak = np.asarray(arrays["peak"], np.float32)
    T = len(target.frames)
    needed = max((int(r.max()) + 1 for r in target.rows if len(r)), default=0)
    if start.shape != end.shape or start.shape != peak.shape or len(start) < needed:
        raise EngineError(f"the engine answered for {len(start)} Gaussians; the query holds {needed}")
    if int(result.get("timesteps", T)) != T:
        raise EngineError(f"the engine answered for {result.get('timesteps')} timesteps; the query has {T}")

    def frames_of(steps: np.ndarray) -> np.ndarray:
        return np.where(steps >= 0, target.frames[np.clip(steps, 0, T - 1)], -1).astype(np.int32)

    span = result.get("span")
    span_t = (int(span[0]), int(span[1])) if span else None
    span_f = (int(target.frames[span_t[0]]), int(target.frames[span_t[1]])) if span_t else None
    return QueryAnswer(target=target, span_frames=span_f, span_timesteps=span_t,
                       first_frame=[frames_of(start[r]) for r in target.rows],
                       last_frame=[frames_of(end[r]) for r in target.rows],
                       peak=[peak[r] for r in target.rows], result=dict(result))


def query_blocking(scene: bpy.types.Scene, obj: bpy.types.Object | None, text: str, device: str | None = None,
                   report: Callable[[str], None] | None = None, client=None) -> QueryAnswer:
    """Ask and wait (batch, scripts). Nothing in the scene changes; apply_answer shows the answer."""
    device = device or engine_client.preferred_device()
    params, arrays, target = build_query_request(scene, obj, text, device)
    result, result_arrays = engine_client.request_blocking("query4d", params, arrays, report, client, label="query")
    return answer_from_result(target, result, result_arrays)


def clear_markers(scene: bpy.types.Scene) -> int:
    markers = [m for m in scene.timeline_markers if m.name.startswith(MARKER_PREFIX)]
    for m in markers:
        scene.timeline_markers.remove(m)
    return len(markers)


def apply_answer(scene: bpy.types.Scene, answer: QueryAnswer) -> None:
    """Highlight per object (while scrubbing) and timeline markers at the span's ends, replacing an earlier
    query's. Every object is checked first, so a stale answer changes nothing."""
    objects = [bpy.data.objects.get(name) for name in answer.target.objects]
    for name, o, first in zip(answer.target.objects, objects, answer.first_frame):
        if o is None or len(o.data.vertices) != len(first):
            raise Query4DError(f"{name!r} changed while the query ran", hint="ask again")
    for o, first, last, peak in zip(objects, answer.first_frame, answer.last_frame, answer.peak):
        dynamic_import.set_query_highlight(o, first, last, peak)
    clear_markers(scene)
    if answer.span_frames is not None:
        a, b = answer.span_frames
        scene.timeline_markers.new(f"{MARKER_PREFIX}{answer.target.text} ▸", frame=a)
        scene.timeline_markers.new(f"{MARKER_PREFIX}{answer.target.text} ◂", frame=b)
    settings = getattr(scene, "gaussians_query4d", None)
    if settings is not None:
        settings.last_text = answer.target.text
        settings.last_span = "" if answer.span_frames is None else f"{answer.span_frames[0]}–{answer.span_frames[1]}"
        settings.last_count = sum(answer.matched())


def clear_answer(scene: bpy.types.Scene, objects=None) -> None:
    """Remove the highlight from every object that has one (or the given ones) and the query's markers."""
    for o in objects if objects is not None else list(scene.objects):
        if o.type == "MESH" and o.modifiers.get(dynamic_import.HIGHLIGHT_MODIFIER) is not None:
            dynamic_import.clear_query_highlight(o)
    clear_markers(scene)
    settings = getattr(scene, "gaussians_query4d", None)
    if settings is not None:
        settings.last_text, settings.last_span, settings.last_count = "", "", 0


def _query_mask(obj: bpy.types.Object) -> np.ndarray | None:
    attr = obj.data.attributes.get(dynamic_import.QUERY_START_ATTRIBUTE)
    if attr is None:
        return None
    first = np.empty(len(obj.data.vertices), np.int32)
    attr.data.foreach_get("value", first)
    return first >= 0


def _localise_dynamic(segment: bpy.types.Object) -> None:
    """A split moves a segment's positions into its local frame; its per-timestep positions must follow."""
    m = gaussian_object.file_to_local(segment)
    n = len(segment.data.vertices)
    for attr in segment.data.attributes:
        if attr.name.startswith(dynamic_import.POSITION_PREFIX) and attr.data_type == "FLOAT_VECTOR":
            v = np.empty(n * 3, np.float32)
            attr.data.foreach_get("vector", v)
            v = v.reshape(-1, 3) @ m[:3, :3].T.astype(np.float32) + m[:3, 3].astype(np.float32)
            attr.data.foreach_set("vector", v.reshape(-1))
    segment.data.update()


def split_answer(obj: bpy.types.Object, name: str = "") -> bpy.types.Object:
    """Move the Gaussians that are ever in the query's answer into a segment (object_subsets.split_selected)."""
    mask = _query_mask(obj)
    if mask is None or not mask.any():
        raise Query4DError(f"{obj.name} holds no Gaussians of a 4D query's answer",
                           hint="run a 4D query that matches some of its Gaussians first")
    text = bpy.context.scene.gaussians_query4d.last_text if hasattr(bpy.context.scene, "gaussians_query4d") else ""
    segment = object_subsets.split_selected(obj, mask, name or (text.strip()[:48] or "query"))
    if dynamic_import.is_dynamic(segment):
        _localise_dynamic(segment)
    return segment


def _undo_push(message: str) -> None:
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:   # no undo stack (background mode)
        pass


class GaussiansQuery4DSettings(bpy.types.PropertyGroup):
    text: bpy.props.StringProperty(name="Text", description="What happens, e.g. \"the ball rolling\"")
    segment_name: bpy.props.StringProperty(name="Name", default="",
                                           description="Name of the segment (empty: the query's text)")
    last_text: bpy.props.StringProperty(options={"SKIP_SAVE"})
    last_span: bpy.props.StringProperty(options={"SKIP_SAVE"})
    last_count: bpy.props.IntProperty(options={"SKIP_SAVE"})


def _query_poll(cls, context) -> bool:
    if context.scene is None:
        return False
    obj = context.active_object
    if dynamic_import.is_dynamic(obj):
        return True
    from ..render.render_request import gaussian_objects
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

    _timer = None
    _client = None
    _request_id: int | None = None
    _target: QueryTarget | None = None

    @classmethod
    def poll(cls, context):
        return _query_poll(cls, context)

    def _finish_answer(self, context, result: dict, arrays: dict) -> set[str]:
        try:
            answer = answer_from_result(self._target, result, arrays)
            apply_answer(context.scene, answer)
        except AnimateGaussiansError as error:
            self.report({"ERROR"}, error.user_message())
            return {"CANCELLED"}
        _undo_push("4D Query")
        if answer.span_frames is None:
            self.report({"WARNING"}, answer.no_match_message())
        else:
            a, b = answer.span_frames
            self.report({"INFO"}, f"\u201c{answer.target.text}\u201d: frames {a}–{b}, "
                                  f"{sum(answer.matched()):,} Gaussians")
        return {"FINISHED"}

    def execute(self, context):   # scripts wait
        settings = context.scene.gaussians_query4d
        try:
            params, arrays, self._target = build_query_request(context.scene, context.active_object, settings.text,
                                                               engine_client.preferred_device())
            result, result_arrays = engine_client.get_client().request("query4d", params, arrays)
        except AnimateGaussiansError as error:
            self.report({"ERROR"}, error.user_message())
            return {"CANCELLED"}
        return self._finish_answer(context, result, result_arrays)

    def invoke(self, context, event):
        settings = context.scene.gaussians_query4d
        try:
            params, arrays, self._target = build_query_request(context.scene, context.active_object, settings.text,
                                                               engine_client.preferred_device())
            self._client = engine_client.get_client()
            self._request_id = self._client.submit("query4d", params, arrays)
        except AnimateGaussiansError as error:
            self.report({"ERROR"}, error.user_message())
            return {"CANCELLED"}
        return self._begin_modal(context, "4D Query: starting — Esc cancels")

    def _on_result(self, context, params, arrays):
        return self._finish_answer(context, params, arrays)


class GAUSSIANS_OT_query4d_segment(bpy.types.Operator):
    """Move the active object's Gaussians that are in the 4D query's answer into their own object"""

    bl_idname = "gaussians.query4d_segment"
    bl_label = "Make Segment"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or obj.type != "MESH" or _query_mask(obj) is None:
            cls.poll_message_set("Run a 4D query on this object first")
            return False
        return True

    def execute(self, context):
        obj = context.active_object
        try:
            segment = split_answer(obj, context.scene.gaussians_query4d.segment_name)
        except AnimateGaussiansError as error:
            self.report({"ERROR"}, error.user_message())
            return {"CANCELLED"}
        for other in context.view_layer.objects.selected:
            other.select_set(False)
        segment.select_set(True)
        context.view_layer.objects.active = segment
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
            self.report({"ERROR"}, error.user_message())
            return {"CANCELLED"}
        for other in context.view_layer.objects.selected:
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        self.report({"INFO"}, f"{obj.name}: {len(obj.data.vertices):,} Gaussians, "
                              f"{obj[dynamic_import.DYNAMIC_STEPS_KEY]} timesteps")
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


classes = (GaussiansQuery4DSettings, GAUSSIANS_OT_query4d, GAUSSIANS_OT_query4d_segment, GAUSSIANS_OT_query4d_clear,
           GAUSSIANS_OT_import_dynamic)


def register_properties() -> None:
    bpy.types.Scene.gaussians_query4d = bpy.props.PointerProperty(type=GaussiansQuery4DSettings)


def unregister_properties() -> None:
    del bpy.types.Scene.gaussians_query4d
