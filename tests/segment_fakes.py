"""A stand-in engine for the Blender side of segmentation: the engine client's interface answered in this process
by a "segment" handler that reads the synthetic scene's labels (ply property `label`) instead of a model."""

from __future__ import annotations

import itertools

import numpy as np

from blender_addon.engine_link.engine_client import EngineEvent
from engine.cameras import project_points
from engine.errors import AnimateGaussiansError
from engine.ply import read_header, read_structured
from tests.motion_fixtures import QuietContext


class InProcessClient:
    """submit/poll/request/cancel like blender_addon.engine_link.engine_client.EngineClient, handlers run at submit."""

    def __init__(self, handlers: dict) -> None:
        self.handlers = handlers
        self.requests: list[tuple[str, dict, dict]] = []
        self._events: list[EngineEvent] = []
        self._ids = itertools.count(1)

    def submit(self, request_type: str, params=None, arrays=None) -> int:
        request_id = next(self._ids)
        params, arrays = dict(params or {}), dict(arrays or {})
        self.requests.append((request_type, params, arrays))
        try:
            result, result_arrays = self.handlers[request_type](QuietContext(), params, arrays)
            self._events.append(EngineEvent("progress", request_id, fraction=1.0, stage="done"))
            self._events.append(EngineEvent("result", request_id, params=result, arrays=result_arrays))
        except AnimateGaussiansError as error:
            self._events.append(EngineEvent("error", request_id, error=error))
        return request_id

    def poll(self, request_id: int | None = None) -> list[EngineEvent]:
        mine = [e for e in self._events if request_id is None or e.request_id == request_id]
        self._events = [e for e in self._events if e not in mine]
        return mine

    def cancel(self, request_id: int) -> None:
        pass

    def request(self, request_type: str, params=None, arrays=None, on_progress=None, timeout=None):
        request_id = self.submit(request_type, params, arrays)
        for event in self.poll(request_id):
            if event.kind == "progress" and on_progress is not None:
                on_progress(event.fraction, event.stage)
            elif event.kind == "result":
                return event.params, event.arrays
            elif event.kind == "error":
                raise event.error
        raise AssertionError("no answer")


def _scene(path: str) -> tuple[np.ndarray, np.ndarray]:
    rows = read_structured(read_header(path))
    return np.stack([rows["x"], rows["y"], rows["z"]], axis=1).astype(np.float64), rows["label"].astype(np.int64)


def label_segment(ctx, params: dict, arrays: dict):
    """The "segment" request answered from the labels: a click takes the label of the nearest Gaussian within
    3 px of the pixel, a box the most common label inside it, text the object whose label name it contains.
    Granularity below 0.5 keeps only the upper half (world z) of the object, so the slider visibly matters."""
    means, labels = _scene(params["ply_path"])
    indices = np.asarray(arrays["indices"])
    m = np.asarray(arrays["file_to_world"])
    world = means[indices] @ m[:3, :3].T + m[:3, 3]
    labels = labels[indices]
    uv, z = project_points(world, np.asarray(arrays["viewmat"]), np.asarray(arrays["K"]))
    mode = params["mode"]
    label = None
    if mode == "click":
        near = (z > 0) & (np.linalg.norm(uv - [params["x"], params["y"]], axis=1) < 3.0)
        if near.any():
            label = labels[np.flatnonzero(near)[np.argmin(z[near])]]
    elif mode == "box":
        x0, y0, x1, y1 = params["box"]
        inside = (z > 0) & (uv[:, 0] >= x0) & (uv[:, 0] <= x1) & (uv[:, 1] >= y0) & (uv[:, 1] <= y1)
        if inside.any():
            label = np.bincount(labels[inside]).argmax()
    else:
        names = {"red": 1, "green": 2, "blue": 3}
        label = next((v for k, v in names.items() if k in params["text"]), None)
    mask = labels == label if label is not None else np.zeros(len(indices), bool)
    if label is not None and params["granularity"] < 0.5:
        mask &= world[:, 2] > np.median(world[mask, 2])
    return {"count": int(mask.sum()), "method": "labels", "models": "fake: labels"}, \
        {"mask": mask, "scores": mask.astype(np.float32)}
