"""A 4D query as the engine's "query4d" request (engine/query4d/handler.py): which objects are asked, their files
or sequence and per-frame matrices, and the answer mapped back to scene frames and to each object's Gaussians.

The feature extractor is the engine's best ("auto") unless the environment variable
ANIMATE_GAUSSIANS_QUERY4D_EXTRACTOR names one (viclip, clip, or oracle for labelled synthetic sequences);
FIELD_OPTIONS are sent as the request's field options (empty: the engine's defaults; scripts may set them). The
query's thresholds (the panel's Advanced box, the batch's --query-* options) are sent only where set, each checked
against engine/query4d/thresholds.py first; an automatic spatial threshold is not sent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

import bpy
import numpy as np

from engine.errors import AnimateGaussiansError, EngineError
from engine.query4d.thresholds import request_thresholds

from ..engine_link import engine_client
from ..io import dynamic_import, gaussian_object
from ..io.gaussian_layout import SOURCE_KEY
from ..render.render_request import gaussian_objects, scene_frames

EXTRACTOR_ENV = "ANIMATE_GAUSSIANS_QUERY4D_EXTRACTOR"
FIELD_OPTIONS: dict = {}


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
                "relevancy_threshold": r.get("relevancy_threshold"), "thresholds": r.get("thresholds"),
                "seconds": r.get("seconds")}


def extractor_name() -> str:
    return os.environ.get(EXTRACTOR_ENV, "").strip() or "auto"


def query_objects(scene: bpy.types.Scene, obj: bpy.types.Object | None) -> list[bpy.types.Object]:
    """A dynamic object is asked alone; otherwise every Gaussian object of the scene that renders (as animated)."""
    if dynamic_import.is_dynamic(obj):
        return [obj]
    objects = [o for o in gaussian_objects(scene) if not dynamic_import.is_dynamic(o)]
    if not objects:
        raise Query4DError("there is nothing to ask: the scene has no Gaussian objects")
    return objects


def build_query_request(scene: bpy.types.Scene, obj: bpy.types.Object | None, text: str,
                        device: str = "auto", thresholds: Mapping[str, object] | None = None
                        ) -> tuple[dict, dict[str, np.ndarray], QueryTarget]:
    """The "query4d" request (params, arrays) and what its answer maps back to. A dynamic object sends its
    params.npz; other objects send their .ply files and, per scene frame, their file → world matrices.
    `thresholds`: the query's thresholds by request param (absent or None: the engine's default; a
    spatial_threshold of None or "auto": the automatic cut), checked here (QueryThresholdError) so a bad value
    fails before the scene is stepped through or the engine is asked."""
    text = text.strip()
    if not text:
        raise Query4DError("the 4D query has no text", hint="type what to look for, e.g. 'the ball rolling'")
    cuts = request_thresholds(thresholds or {})
    objects = query_objects(scene, obj)
    params: dict = {"text": text, "extractor": extractor_name(), "device": device, "options": dict(FIELD_OPTIONS),
                    **cuts}
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
                   report: Callable[[str], None] | None = None, client=None,
                   thresholds: Mapping[str, object] | None = None) -> QueryAnswer:
    """Ask and wait (batch, scripts). Nothing in the scene changes; apply_answer shows the answer.
    `thresholds` as build_query_request's (absent: the engine's defaults, not the panel's settings)."""
    device = device or engine_client.preferred_device()
    params, arrays, target = build_query_request(scene, obj, text, device, thresholds)
    result, result_arrays = engine_client.request_blocking("query4d", params, arrays, report, client, label="query")
    return answer_from_result(target, result, result_arrays)
