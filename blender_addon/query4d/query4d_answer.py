"""A 4D query's answer in the scene: the highlight per object while scrubbing, markers at the span's ends on the
timeline, and the answer's Gaussians split off into a segment (object_subsets, as Segment's Apply).
"""

from __future__ import annotations

import bpy
import numpy as np

from ..io import dynamic_import, gaussian_object
from ..segment import object_subsets
from .query4d_request import Query4DError, QueryAnswer

MARKER_PREFIX = "4D: "


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


def query_mask(obj: bpy.types.Object) -> np.ndarray | None:
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
    mask = query_mask(obj)
    if mask is None or not mask.any():
        raise Query4DError(f"{obj.name} holds no Gaussians of a 4D query's answer",
                           hint="run a 4D query that matches some of its Gaussians first")
    text = bpy.context.scene.gaussians_query4d.last_text if hasattr(bpy.context.scene, "gaussians_query4d") else ""
    segment = object_subsets.split_selected(obj, mask, name or (text.strip()[:48] or "query"))
    if dynamic_import.is_dynamic(segment):
        _localise_dynamic(segment)
    return segment
