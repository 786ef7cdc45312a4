"""What every modal operator that waits on the engine shares: the poll timer, the progress bar and the
status text (status bar + area header), started and ended in one place."""

from __future__ import annotations

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
