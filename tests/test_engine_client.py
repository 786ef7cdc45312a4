"""engine_link.engine_client against real engine processes: events, wait, cancel, a dying engine, restarts."""

from __future__ import annotations

import os
import signal
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from blender_addon.engine_link import engine_client, engine_python
from blender_addon.engine_link.engine_client import EngineClient
from blender_addon.engine_link.engine_python import find_engine_python
from engine import protocol
from engine.errors import CancelledError, EngineError, InputFileError

TIMEOUT = 20


@pytest.fixture
def client():
    c = EngineClient(python=sys.executable)
    yield c
    c.stop()


def poll_until_final(client: EngineClient, request_id: int, timeout: float = TIMEOUT):
    events, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        events += [e for e in client.poll() if e.request_id == request_id]
        if events and events[-1].final:
            return events
        time.sleep(0.01)
    raise AssertionError(f"request {request_id} did not end within {timeout} s")


def test_hello_and_the_engine_runs_this_checkouts_code(client):
    hello = client.wait_ready(TIMEOUT)
    assert hello["protocol"] == protocol.PROTOCOL_VERSION
    assert engine_python.engine_pythonpath() == str(Path(protocol.__file__).resolve().parents[1])


def test_poll_streams_progress_then_the_result_without_blocking(client):
    started = time.monotonic()
    request_id = client.submit("sleep_steps", {"steps": 5, "seconds": 0.02})
    assert time.monotonic() - started < 1.0  # submit does not wait for the engine
    assert all(not e.final for e in client.poll())
    events = poll_until_final(client, request_id)
    assert [e.kind for e in events] == ["progress"] * 5 + ["result"]
    assert events[2].stage == "step 3 of 5" and events[-1].params == {"steps": 5}


def test_wait_returns_arrays_and_reports_progress(client):
    seen = []
    mask = np.arange(1000) % 3 == 0
    params, arrays = client.request("echo", {"n": 1}, {"mask": mask})
    np.testing.assert_array_equal(arrays["mask"], mask)
    assert params == {"n": 1}
    client.request("sleep_steps", {"steps": 3, "seconds": 0.0}, on_progress=lambda f, s: seen.append((f, s)))
    assert [round(f, 2) for f, _ in seen] == [0.33, 0.67, 1.0]


def test_waiting_for_one_request_keeps_the_others_events_for_poll(client):
    slow = client.submit("sleep_steps", {"steps": 3, "seconds": 0.01})
    fast = client.submit("echo", {"x": 2})
    assert client.wait(fast, timeout=TIMEOUT)[0] == {"x": 2}
    kinds = [e.kind for e in client.poll() if e.request_id == slow]
    assert kinds == ["progress"] * 3 + ["result"]
    with pytest.raises(EngineError, match="not running"):
        client.wait(slow, timeout=TIMEOUT)  # its end went to poll()


def test_engine_errors_are_raised_as_their_own_type(client):
    with pytest.raises(InputFileError):
        client.request("scene_info", {"ply_path": "/nonexistent.ply"}, timeout=TIMEOUT)


def test_cancel_ends_the_request_with_cancelled_error(client):
    request_id = client.submit("sleep_steps", {"steps": 1000, "seconds": 0.01})
    client.wait_ready(TIMEOUT)
    time.sleep(0.1)
    client.cancel(request_id)
    started = time.monotonic()
    with pytest.raises(CancelledError):
        client.wait(request_id, timeout=TIMEOUT)
    assert time.monotonic() - started < 2.0
    assert client.request("echo", {"still": "alive"}, timeout=TIMEOUT)[0] == {"still": "alive"}


def test_an_engine_killed_mid_request_raises_and_the_next_request_starts_a_new_one(client):
    first_pid = client.wait_ready(TIMEOUT)["pid"]
    request_id = client.submit("sleep_steps", {"steps": 1000, "seconds": 0.01, "print": "last words"})
    time.sleep(0.3)
    os.kill(first_pid, signal.SIGKILL)
    with pytest.raises(EngineError) as info:
        client.wait(request_id, timeout=TIMEOUT)
    assert "SIGKILL" in str(info.value) and "last words" in str(info.value)
    assert not client.running
    assert client.request("echo", {"again": 1}, timeout=TIMEOUT)[0] == {"again": 1}
    assert client.wait_ready(TIMEOUT)["pid"] != first_pid


def test_an_engine_exiting_names_its_exit_code(client):
    with pytest.raises(EngineError, match="exited with code 3"):
        client.request("sleep_steps", {"steps": 1, "seconds": 0, "exit_code": 3}, timeout=TIMEOUT)
    assert client.request("echo", {}, timeout=TIMEOUT) == ({}, {})


def test_stop_ends_requests_in_flight_and_the_process(client):
    request_id = client.submit("sleep_steps", {"steps": 1000, "seconds": 0.01})
    pid = client.wait_ready(TIMEOUT)["pid"]
    client.stop()
    with pytest.raises(CancelledError):
        client.wait(request_id, timeout=TIMEOUT)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _fake_python(tmp_path: Path, body: str) -> str:
    """An 'interpreter' that ignores `-m engine` and runs this Python code instead."""
    script = tmp_path / "fake_python"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} -c '{body}'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_a_protocol_mismatch_is_a_clear_error(tmp_path):
    body = ("import sys, time; from engine import protocol; m = protocol.hello(\"9.9\", \"3\", 1, None, None); "
            "m.fields[\"protocol\"] = 999; protocol.write_message(sys.stdout.buffer, m); time.sleep(30)")
    client = EngineClient(python=_fake_python(tmp_path, body))
    try:
        with pytest.raises(EngineError, match="protocol 999"):
            client.wait_ready(TIMEOUT)
        assert not client.running
    finally:
        client.stop()


def test_an_engine_that_dies_at_start_reports_its_stderr(tmp_path):
    body = "import sys; print(\"cannot import engine: broken env\", file=sys.stderr); sys.exit(5)"
    client = EngineClient(python=_fake_python(tmp_path, body))
    try:
        with pytest.raises(EngineError) as info:
            client.request("echo", {}, timeout=TIMEOUT)
        assert "exited with code 5" in str(info.value) and "broken env" in str(info.value)
    finally:
        client.stop()


def test_find_engine_python_order_and_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(engine_python.ENV_PYTHON, raising=False)
    assert find_engine_python("") == sys.executable  # the test interpreter has torch
    with pytest.raises(EngineError, match="does not exist"):
        find_engine_python(str(tmp_path / "nope" / "python"))
    no_torch = _fake_python(tmp_path, "import sys; sys.exit(1)")
    with pytest.raises(EngineError, match="cannot import torch"):
        find_engine_python(no_torch)
    monkeypatch.setenv(engine_python.ENV_PYTHON, no_torch)
    with pytest.raises(EngineError, match=engine_python.ENV_PYTHON):
        find_engine_python("")
    assert find_engine_python(sys.executable) == sys.executable  # the preference wins over the env var
    venv = tmp_path / "engine-env" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (venv / "python").chmod(0o755)
    monkeypatch.setenv(engine_python.ENV_PYTHON, str(tmp_path / "engine-env"))  # a venv folder works too
    assert find_engine_python("") == str(venv / "python")


def test_get_client_is_shared_and_follows_the_preference(monkeypatch):
    monkeypatch.setattr(engine_client, "_preferred_python", lambda: "")
    first = engine_client.get_client()
    assert engine_client.get_client() is first
    monkeypatch.setattr(engine_client, "_preferred_python", lambda: sys.executable)
    second = engine_client.get_client()
    assert second is not first
    assert second.request("echo", {"shared": True}, timeout=TIMEOUT)[0] == {"shared": True}
    assert second.python == sys.executable
    engine_client.shutdown_client()
    assert not second.running


def test_a_request_right_after_a_crash_still_reports_the_crash_to_the_old_request(client):
    first = client.submit("sleep_steps", {"steps": 1, "seconds": 0.2, "exit_code": 7})
    client.wait_ready(TIMEOUT)
    time.sleep(0.3)  # the engine has exited; maybe its reader has not noticed yet
    second = client.submit("echo", {"n": 2})
    assert client.wait(second, timeout=TIMEOUT)[0] == {"n": 2}
    with pytest.raises(EngineError, match="exited with code 7"):
        client.wait(first, timeout=TIMEOUT)


def test_a_silent_engine_is_stopped_with_a_clear_error_through_poll(client, monkeypatch):
    """The UI's path (poll from a timer): a request without progress past the stall limit ends with an error
    event, the hung engine is gone, and the next request starts a new one."""
    from blender_addon.engine_link.engine_watchdog import STALL_ENV

    monkeypatch.setenv(STALL_ENV, "0.5")
    pid = client.wait_ready(TIMEOUT)["pid"]
    request_id = client.submit("sleep_steps", {"steps": 1, "seconds": 60})
    events = poll_until_final(client, request_id)
    error = events[-1].error
    assert isinstance(error, EngineError) and "no progress on 'sleep_steps'" in str(error)
    assert "$ANIMATE_GAUSSIANS_STALL_TIMEOUT" in error.hint
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    monkeypatch.setenv(STALL_ENV, "0")          # 0: never; a slow step with progress is fine either way
    assert client.request("sleep_steps", {"steps": 3, "seconds": 0.7}, timeout=TIMEOUT)[0] == {"steps": 3}


def test_stall_limit_comes_from_env_then_preference_then_default(monkeypatch):
    from blender_addon.engine_link.engine_watchdog import DEFAULT_STALL_TIMEOUT_S, STALL_ENV, stall_timeout

    monkeypatch.delenv(STALL_ENV, raising=False)
    assert stall_timeout() == DEFAULT_STALL_TIMEOUT_S and stall_timeout(30) == 30
    monkeypatch.setenv(STALL_ENV, "12.5")
    assert stall_timeout(30) == 12.5
    monkeypatch.setenv(STALL_ENV, "soon")
    assert stall_timeout(30) == 30
