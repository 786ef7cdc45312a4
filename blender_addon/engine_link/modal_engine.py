"""What every operator that waits on the engine shares: the poll timer, the progress bar and the status text
(status bar + area header), started and ended in one place; the request's progress as plain data; and the one
modal loop (Esc cancels, the answer to `_on_result`, an error or a cancel reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from engine.errors import AnimateGaussiansError, CancelledError, EngineError

from .. import notices
from . import engine_client

POLL_SECONDS = 0.1


def set_status(context, text: str | None) -> None:
    """Show `text` in the status bar and the area's header; None clears both."""
    if context.workspace is not None:
        context.workspace.status_text_set(text)
    if context.area is not None:
        context.area.header_text_set(text)


@dataclass
class RequestProgress:
    """One engine request as the UI shows it, advanced by its events (no bpy: testable as is): the status line
    and the fraction for the progress bar; once done, the answer (params, arrays) or the error."""

    label: str                                  # "Animate", "Render Splats", ...
    fraction: float = 0.0
    status: str = ""
    done: bool = False
    error: AnimateGaussiansError | None = None
    params: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.status = self.status or f"{self.label}: starting — Esc cancels"

    def apply(self, events: Iterable[engine_client.EngineEvent]) -> "RequestProgress":
        for ev in events:
            if self.done:
                break
            if ev.kind == "progress":
                self.fraction = ev.fraction
                self.status = f"{self.label}: {100 * ev.fraction:.0f}% {ev.stage} — Esc cancels"
            elif ev.kind == "result":
                self.done, self.fraction, self.params, self.arrays = True, 1.0, ev.params, ev.arrays
            else:
                self.done, self.error = True, ev.error or EngineError(f"{self.label} failed")
        return self

    def failure(self, cancelled: str = "") -> tuple[str, str] | None:
        """(Operator.report type, message) of a request that ended without an answer: a WARNING after a cancel
        (`cancelled`, default "<label> cancelled"), else the ERROR saying what went wrong; None otherwise."""
        if self.error is None:
            return None
        if isinstance(self.error, CancelledError):
            return "WARNING", cancelled or f"{self.label} cancelled"
        return "ERROR", self.error.user_message()


class EngineModalMixin:
    """Mix into a bpy Operator: `_begin_modal` after the request is submitted, `_end_modal` when it ended."""

    _timer = None

    def _status(self, context, text: str | None) -> None:
        set_status(context, text)

    def _begin_modal(self, context, status: str) -> set[str]:
        wm = context.window_manager
        self._timer = wm.event_timer_add(POLL_SECONDS, window=context.window)
        wm.progress_begin(0, 100)
        self._status(context, status)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _end_modal(self, context) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        self._status(context, None)


class EngineRequestModal(EngineModalMixin):
    """An operator that makes one engine request: `_request(context)` gives (type, params, arrays) and
    `_on_result(context, params, arrays)` applies the answer. Scripts (execute) wait for it; the UI (invoke)
    submits it and polls from the modal loop, where Esc cancels, progress goes to the status bar as
    "<_label>: NN% stage", and an error or a cancel (`_cancelled`) is reported with the scene unchanged."""

    _label = "Working"
    _cancelled = ""             # the warning after Esc (empty: "<_label> cancelled")
    _client: engine_client.EngineClient | None = None
    _request_id: int | None = None
    _progress: RequestProgress | None = None

    def _request(self, context) -> tuple[str, dict, dict | None]:
        raise NotImplementedError

    def _on_result(self, context, params: dict, arrays: dict) -> set[str]:
        raise NotImplementedError

    def execute(self, context):
        try:
            request_type, params, arrays = self._request(context)
            result, result_arrays = engine_client.get_client().request(request_type, params, arrays)
        except AnimateGaussiansError as error:
            return notices.fail(self, error)
        return self._on_result(context, result, result_arrays)

    def invoke(self, context, event):
        try:
            request_type, params, arrays = self._request(context)
            self._client = engine_client.get_client()
            self._request_id = self._client.submit(request_type, params, arrays)
        except AnimateGaussiansError as error:
            return notices.fail(self, error)
        self._progress = RequestProgress(self._label)
        return self._begin_modal(context, self._progress.status)

    def modal(self, context, event):
        if event.type == "ESC" and event.value == "PRESS":
            self._client.cancel(self._request_id)    # the engine answers with CancelledError at its next step
            self._status(context, f"{self._label}: cancelling…")
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        state = self._progress.apply(self._client.poll(self._request_id))
        if not state.done:
            context.window_manager.progress_update(int(100 * state.fraction))
            self._status(context, state.status)
            return {"RUNNING_MODAL"}
        self._end_modal(context)
        failure = state.failure(self._cancelled)
        if failure is not None:
            self.report({failure[0]}, failure[1])
            return {"CANCELLED"}
        return self._on_result(context, state.params, state.arrays)
