"""What every modal operator that waits on the engine shares: the poll timer, the progress bar and the
status text (status bar + area header), started and ended in one place."""

from __future__ import annotations

from engine.errors import CancelledError, EngineError

POLL_SECONDS = 0.1


def set_status(context, text: str | None) -> None:
    """Show `text` in the status bar and the area's header; None clears both."""
    if context.workspace is not None:
        context.workspace.status_text_set(text)
    if context.area is not None:
        context.area.header_text_set(text)


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
    """A modal operator waiting on one engine request (`self._client`, `self._request_id`): Esc cancels,
    progress goes to the status bar as "<_label>: NN% stage", the result goes to `_on_result`, an error or a
    cancel is reported. Operators whose progress needs more (Animate) keep their own `modal`."""

    _label = "Working"

    def _on_result(self, context, params: dict, arrays: dict) -> set[str]:
        raise NotImplementedError

    def modal(self, context, event):
        if event.type == "ESC" and event.value == "PRESS":
            self._client.cancel(self._request_id)
            self._status(context, f"{self._label}: cancelling…")
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        for ev in self._client.poll(self._request_id):
            if ev.kind == "progress":
                context.window_manager.progress_update(int(100 * ev.fraction))
                self._status(context, f"{self._label}: {100 * ev.fraction:.0f}% {ev.stage} — Esc cancels")
                continue
            self._end_modal(context)
            if ev.kind == "result":
                return self._on_result(context, ev.params, ev.arrays)
            error = ev.error or EngineError(f"{self._label} failed")
            if isinstance(error, CancelledError):
                self.report({"WARNING"}, f"{self._label} cancelled")
            else:
                self.report({"ERROR"}, error.user_message())
            return {"CANCELLED"}
        return {"RUNNING_MODAL"}
