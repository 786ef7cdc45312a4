"""The shared modal plumbing of engine operators (timer, progress bar, status) and their one modal loop (progress,
answer, cancel, error), driven with stand-ins for the window manager, workspace and engine client: bpy as a
module has no window to run a modal operator in."""

from __future__ import annotations

from types import SimpleNamespace

from blender_addon.engine_link import engine_client
from blender_addon.engine_link.engine_process import EngineEvent
from blender_addon.engine_link.modal_engine import POLL_SECONDS, EngineModalMixin, EngineRequestModal
from engine.errors import CancelledError, EngineError, InputFileError


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


class _Client:
    """The engine client's submit/poll/cancel/request, answering from a script of events."""

    def __init__(self, events, answer=({"done": True}, {})):
        self.events, self.answer, self.cancelled, self.sent = list(events), answer, [], []

    def submit(self, request_type, params, arrays=None):
        self.sent.append((request_type, params))
        return 7

    def poll(self, request_id):
        assert request_id == 7
        return [self.events.pop(0)] if self.events else []

    def cancel(self, request_id):
        self.cancelled.append(request_id)

    def request(self, request_type, params, arrays=None):
        self.sent.append((request_type, params))
        return self.answer


class _Operator(EngineRequestModal):
    _label = "Working"
    _cancelled = "Working cancelled; nothing changed"

    def __init__(self, fail: Exception | None = None):
        self.reports, self.results, self.fail = [], [], fail

    def report(self, kind, message):
        self.reports.append((kind, message))

    def _request(self, context):
        if self.fail is not None:
            raise self.fail
        return "sleep_steps", {"steps": 2}, None

    def _on_result(self, context, params, arrays):
        self.results.append(params)
        return {"FINISHED"}


def _context():
    wm, workspace, area = _Recorder(), _Recorder(), _Recorder()
    return SimpleNamespace(window_manager=wm, window="win", workspace=workspace, area=area)


def _run(monkeypatch, events):
    client = _Client(events)
    monkeypatch.setattr(engine_client, "get_client", lambda: client)
    op, context = _Operator(), _context()
    assert op.invoke(context, None) == {"RUNNING_MODAL"} and client.sent == [("sleep_steps", {"steps": 2})]
    assert context.workspace.calls[-1][1] == ("Working: starting — Esc cancels",)
    timer = SimpleNamespace(type="TIMER", value="NOTHING")
    outcomes = [op.modal(context, timer) for _ in range(len(events))]
    return op, context, client, outcomes


def test_the_modal_loop_shows_progress_then_hands_the_answer_over(monkeypatch):
    events = [EngineEvent("progress", 7, fraction=0.5, stage="step 1 of 2"), EngineEvent("result", 7, params={"n": 2})]
    op, context, _, outcomes = _run(monkeypatch, events)
    assert outcomes == [{"RUNNING_MODAL"}, {"FINISHED"}] and op.results == [{"n": 2}] and op.reports == []
    statuses = [c[1][0] for c in context.workspace.calls]
    assert "Working: 50% step 1 of 2 — Esc cancels" in statuses and statuses[-1] is None   # cleared at the end
    assert ("progress_update", (50,), {}) in context.window_manager.calls


def test_esc_cancels_and_the_cancel_is_a_warning_with_the_scene_unchanged(monkeypatch):
    op, context, client, _ = _run(monkeypatch, [])
    esc = SimpleNamespace(type="ESC", value="PRESS")
    assert op.modal(context, esc) == {"RUNNING_MODAL"} and client.cancelled == [7]
    client.events.append(EngineEvent("error", 7, error=CancelledError("stopped")))
    assert op.modal(context, SimpleNamespace(type="TIMER", value="NOTHING")) == {"CANCELLED"}
    assert op.reports == [({"WARNING"}, "Working cancelled; nothing changed")] and op.results == []


def test_an_engine_error_or_a_refused_request_is_one_error_report(monkeypatch):
    died = EngineError("it died", "restart it")
    op, _, _, outcomes = _run(monkeypatch, [EngineEvent("error", 7, error=died)])
    assert outcomes == [{"CANCELLED"}] and op.reports == [({"ERROR"}, died.user_message())]
    refused = _Operator(fail=InputFileError("no such file", "pick another"))
    assert refused.invoke(_context(), None) == {"CANCELLED"} and refused.execute(_context()) == {"CANCELLED"}
    assert refused.reports == [({"ERROR"}, InputFileError("no such file", "pick another").user_message())] * 2


def test_execute_waits_for_the_answer(monkeypatch):
    client = _Client([], answer=({"n": 3}, {}))
    monkeypatch.setattr(engine_client, "get_client", lambda: client)
    op = _Operator()
    assert op.execute(_context()) == {"FINISHED"} and op.results == [{"n": 3}] and client.sent[0][0] == "sleep_steps"
