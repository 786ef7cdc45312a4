"""A segmentation query (click, box or text on a view of a Gaussian object) as the engine's "segment" request,
and the session that keeps the last query so the granularity slider can re-send it while the UI stays live."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import bpy
import numpy as np

from engine.errors import AnimateGaussiansError, CameraError, CancelledError, EngineError

from ..engine_link import engine_client
from ..io import gaussian_object
from ..io.gaussian_layout import SOURCE_KEY
from . import object_subsets, visible_object

MODES = ("click", "box", "text")
METHODS = ("auto", "region", "lift", "saga")


class NothingSelectedError(AnimateGaussiansError):
    """The engine found no Gaussians for the query."""

    hint = "click or drag on an object rather than the background, or raise the granularity"


@dataclass
class SegmentQuery:
    """What the user asked, on which view: enough to ask again with another granularity."""

    object_name: str
    mode: str                                  # "click", "box" or "text"
    viewmat: np.ndarray                        # (4, 4) Blender world -> OpenCV camera
    K: np.ndarray                              # (3, 3) pixels
    width: int
    height: int
    point: tuple[float, float] | None = None   # click, pixels of the view (origin top-left)
    box: tuple[float, float, float, float] | None = None   # x0, y0, x1, y1
    text: str = ""
    views: dict | None = None                  # {source "colmap"|"transforms"|"orbit", path, count}

    def describe(self) -> str:
        if self.mode == "click":
            return f"click at ({self.point[0]:.0f}, {self.point[1]:.0f})"
        if self.mode == "box":
            return "box ({:.0f}, {:.0f})–({:.0f}, {:.0f})".format(*self.box)
        return f"text {self.text!r}"


def views_for_capture(path: str | Path | None) -> dict | None:
    """The request's `views` for a capture folder: a transforms.json one, else COLMAP; None without a folder."""
    if not path:
        return None
    folder = Path(bpy.path.abspath(str(path)) if str(path).startswith("//") else path)
    source = "transforms" if (folder / "transforms.json").is_file() else "colmap"
    return {"source": source, "path": str(folder.resolve())}


def make_query(obj: bpy.types.Object, mode: str, viewmat: np.ndarray, K: np.ndarray, width: int, height: int,
               point=None, box=None, text: str = "", views: dict | None = None) -> SegmentQuery:
    """A checked query: raises before anything is sent when the input cannot make sense."""
    gaussian_object.object_layout(obj)   # NotGaussianObjectError
    if mode not in MODES:
        raise AnimateGaussiansError(f"unknown segmentation mode {mode!r}", f"use one of {', '.join(MODES)}")
    if not (np.isfinite(viewmat).all() and np.isfinite(K).all()):
        raise CameraError("the view has NaN or infinite values")
    if mode == "click":
        x, y = (float(v) for v in point)
        if not (0 <= x <= width and 0 <= y <= height):
            raise AnimateGaussiansError(f"the point ({x:g}, {y:g}) is outside the {width}×{height} image",
                                        "give a pixel inside the image (origin at the top left)")
        point = (x, y)
    elif mode == "box":
        x0, y0, x1, y1 = (float(v) for v in box)
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        if x1 - x0 < 1 or y1 - y0 < 1 or x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise AnimateGaussiansError(f"the box ({x0:g}, {y0:g})–({x1:g}, {y1:g}) is empty or outside the "
                                        f"{width}×{height} image", "drag a box over the object")
        box = (x0, y0, x1, y1)
    elif not text.strip():
        raise AnimateGaussiansError("the text query is empty", "type what to select, e.g. \"the red ball\"")
    return SegmentQuery(obj.name, mode, np.asarray(viewmat, np.float64), np.asarray(K, np.float64), int(width),
                        int(height), point, box, text.strip(), views)


def query_on_view(scene: bpy.types.Scene, obj: bpy.types.Object, mode: str, viewmat: np.ndarray, K: np.ndarray,
                  width: int, height: int, point=None, box=None, text: str = "",
                  views: dict | None = None) -> SegmentQuery:
    """The query for a click, box or text on a view of the scene (the viewport's, or the camera's in batch).
    A click or box asks the Gaussian object seen there among every one in the scene (a segment split off `obj`
    stands in front of it, not the ground behind), else `obj`; a text asks `obj`."""
    if mode in ("click", "box"):
        obj = visible_object.object_at(scene, viewmat, K, point=point, box=box) or obj
    return make_query(obj, mode, viewmat, K, width, height, point=point, box=box, text=text, views=views)


def build_segment_request(obj: bpy.types.Object, query: SegmentQuery, granularity: float, method: str = "auto",
                          device: str = "auto", options: dict | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """The "segment" request (params, arrays) for `query` on `obj` (see engine/segment/handler.py)."""
    source = obj.get(SOURCE_KEY)
    if not source or not Path(source).exists():
        raise AnimateGaussiansError(f"the source .ply of {obj.name!r} is missing: {source}",
                                    "re-import the .ply or put the file back")
    if method not in METHODS:
        raise AnimateGaussiansError(f"unknown segmentation method {method!r}", f"use one of {', '.join(METHODS)}")
    indices = gaussian_object.source_indices(obj)
    if indices is None:
        indices = np.arange(gaussian_object.gaussian_count(obj), dtype=np.int64)
    params: dict[str, Any] = {"ply_path": str(source), "mode": query.mode, "granularity": float(granularity),
                              "method": method, "width": query.width, "height": query.height, "device": device}
    if query.point is not None:
        params["x"], params["y"] = query.point
    if query.box is not None:
        params["box"] = list(query.box)
    if query.text:
        params["text"] = query.text
    if query.views:
        params["views"] = dict(query.views)
    params.update(options or {})     # sam_variant, require (the Advanced box, batch --sam-model/--require-sam)
    arrays = {"viewmat": query.viewmat.astype(np.float64), "K": query.K.astype(np.float64),
              "file_to_world": gaussian_object.file_to_world(obj).astype(np.float64), "indices": indices}
    return params, arrays


def mask_from_result(query: SegmentQuery, params: dict, arrays: dict, count: int) -> np.ndarray:
    """The answer's mask (bool, the object's order); NothingSelectedError when it selects nothing."""
    if "mask" not in arrays:
        raise EngineError("the engine's segment answer has no mask", "the engine is of another version: reinstall")
    mask = np.asarray(arrays["mask"]).astype(bool).reshape(-1)
    if mask.size != count:
        raise EngineError(f"the engine answered {mask.size} values for {count} Gaussians",
                          "the object changed while the engine worked: segment again")
    if not mask.any():
        where = {"click": "at that point", "box": "in that box", "text": f"for {query.text!r}"}[query.mode]
        raise NothingSelectedError(f"nothing was selected {where}")
    return mask


def segment_blocking(obj: bpy.types.Object, query: SegmentQuery, granularity: float, method: str = "auto",
                     device: str | None = None, client=None,
                     report: Callable[[str], None] | None = None,
                     options: dict | None = None) -> tuple[np.ndarray, dict]:
    """Ask and wait (batch): (mask in the object's order, the answer's params)."""
    device = device or engine_client.preferred_device()
    params, arrays = build_segment_request(obj, query, granularity, method, device, options)
    result, result_arrays = engine_client.request_blocking("segment", params, arrays, report, client)
    return mask_from_result(query, result, result_arrays, len(arrays["indices"])), result


def models_line(answer: dict | None) -> str:
    """What the engine said about models (which it used, which would enable text and SAM-quality masks)."""
    models = (answer or {}).get("models")
    if not models:
        return ""
    if isinstance(models, str):
        return models
    if isinstance(models, dict):   # {"used": [ids], "missing": {kind: what it would enable}}
        used = ", ".join(models.get("used") or []) or "no model (offline region growing)"
        missing = models.get("missing") or {}
        line = f"Used: {used}."
        if missing:
            line += " Install " + "; ".join(f"{kind.upper()} weights for {what}" for kind, what in missing.items()) + "."
        return line
    return ", ".join(str(m) for m in models)


@dataclass
class SegmentSession:
    """The live selection: one request in flight at a time; a newer query (a slider move) waits as `pending`
    and replaces any older pending one, so the highlight follows the slider without queueing every step.

    `poll()` is called from a bpy.app.timers function in the UI (and directly by tests); it writes each answer
    into the object's `selection` attribute and keeps a line for the panel.
    """

    client_factory: Callable[[], Any] = engine_client.get_client
    query: SegmentQuery | None = None          # the last query sent (the slider re-sends it)
    in_flight: int | None = None
    pending: tuple[SegmentQuery, float, str, str, dict] | None = None
    message: str = ""                          # the panel's status line
    message_type: str = "INFO"                 # INFO or ERROR
    answer: dict = field(default_factory=dict)  # params of the last answer
    selected: int = 0
    _client: Any = None
    _sent: tuple | None = None                 # (query, Gaussian count) of the request in flight

    @property
    def busy(self) -> bool:
        return self.in_flight is not None or self.pending is not None

    def request(self, query: SegmentQuery, granularity: float, method: str = "auto", device: str = "auto",
                options: dict | None = None) -> None:
        """Send the query now, or after the one in flight (then only the newest waiting query is sent)."""
        self.query = query
        self.pending = (query, float(granularity), method, device, dict(options or {}))
        if self.in_flight is None:
            self._send_pending()

    def _send_pending(self) -> None:
        query, granularity, method, device, options = self.pending
        self.pending = None
        obj = bpy.data.objects.get(query.object_name)
        if obj is None:
            self._fail(AnimateGaussiansError(f"the object {query.object_name!r} is gone"))
            return
        try:
            params, arrays = build_segment_request(obj, query, granularity, method, device, options)
            self._client = self._client or self.client_factory()
            self.in_flight = self._client.submit("segment", params, arrays)
        except AnimateGaussiansError as error:
            self._fail(error)
            return
        self._sent = (query, len(arrays["indices"]))
        self.message, self.message_type = f"Segmenting: {query.describe()}…", "INFO"

    def _fail(self, error: AnimateGaussiansError) -> None:
        self.message_type, self.message = "ERROR", error.user_message()

    def poll(self) -> bool:
        """Take the engine's events; returns True while there is more to wait for."""
        if self.in_flight is None:
            if self.pending is not None:
                self._send_pending()
            return self.busy
        for event in self._client.poll(self.in_flight):
            if not event.final:
                self.message = f"Segmenting: {100 * event.fraction:.0f}% {event.stage}"
                continue
            self.in_flight = None
            if self.pending is not None:   # a newer query waits: this answer is already stale
                break
            if event.kind == "result":
                self._apply(event.params, event.arrays)
            elif not isinstance(event.error, CancelledError):
                self._fail(event.error or EngineError("the segmentation failed"))
            break
        if self.in_flight is None and self.pending is not None:
            self._send_pending()
        return self.busy

    def _apply(self, params: dict, arrays: dict) -> None:
        query, count = self._sent
        self.answer = dict(params)
        obj = bpy.data.objects.get(query.object_name)
        if obj is None or gaussian_object.gaussian_count(obj) != count:
            self._fail(AnimateGaussiansError("the object changed while the engine worked", "segment again"))
            return
        try:
            mask = mask_from_result(query, params, arrays, count)
        except AnimateGaussiansError as error:
            object_subsets.clear_selection(obj)
            self.selected = 0
            self._fail(error)
            return
        self.selected = object_subsets.write_selection(obj, mask)
        method = params.get("method")
        self.message_type = "INFO"
        self.message = f"{self.selected:,} of {count:,} Gaussians selected" + (f" ({method})" if method else "")

    def wait(self, timeout: float = 60.0, interval: float = 0.01) -> None:
        """Poll until idle (tests, scripts)."""
        import time

        deadline = time.monotonic() + timeout
        while self.poll():
            if time.monotonic() > deadline:
                raise EngineError(f"the segmentation did not finish within {timeout:g} s")
            time.sleep(interval)

    def forget(self) -> None:
        """Drop the last query (Apply and Clear end it: the slider then has nothing to re-send)."""
        self.query = None
        self.pending = None


_session: SegmentSession | None = None


def session() -> SegmentSession:
    """The add-on's one live segmentation session."""
    global _session
    if _session is None:
        _session = SegmentSession()
    return _session


def replace_session(new: SegmentSession | None) -> None:
    """Swap the session (tests give one with their own client; None: a fresh one on next use)."""
    global _session
    _session = new
