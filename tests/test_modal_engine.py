"""The shared modal plumbing of engine operators (timer, progress bar, status), driven with stand-ins for
the window manager and workspace: bpy as a module has no window to run a modal operator in."""

from __future__ import annotations

from types import SimpleNamespace

from blender_addon.engine_link.modal_engine import POLL_SECONDS, EngineModalMixin


class _Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *a, **k: self.calls.append((name, a, k)) or f"{name}-handle"


def test_begin_and_end_pair_timer_progress_and_status():
    wm, workspace, area = _Recorder(), _Recorder(), _Recorder()
    context = SimpleNamespace(window_manager=wm, window="win", workspace=workspace, area=area)
    op = EngineModalMixin()
    assert op._begin_modal(context, "Working — Esc cancels") == {"RUNNING_MODAL"}
    assert [c[0] for c in wm.calls] == ["event_timer_add", "progress_begin", "modal_handler_add"]
    assert wm.calls[0][1] == (POLL_SECONDS,) and wm.calls[0][2] == {"window": "win"}
    assert workspace.calls[-1][1] == ("Working — Esc cancels",) and area.calls[-1][1] == ("Working — Esc cancels",)
    op._end_modal(context)
    assert [c[0] for c in wm.calls[3:]] == ["event_timer_remove", "progress_end"]
    assert wm.calls[3][1] == ("event_timer_add-handle",) and op._timer is None
    assert workspace.calls[-1][1] == (None,) and area.calls[-1][1] == (None,)
    op._end_modal(context)   # ending twice removes no second timer
    assert [c[0] for c in wm.calls[5:]] == ["progress_end"]
