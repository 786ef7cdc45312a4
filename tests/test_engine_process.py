"""The engine as a real subprocess (`python -m engine`), driven frame by frame over its pipes."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from engine import protocol

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 20


class Engine:
    """A raw engine child with a reader thread, so a test that would hang fails on a timeout instead."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-m", "engine"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        self.stderr = b""
        self._stderr_thread = threading.Thread(target=self._drain, daemon=True)
        self._stderr_thread.start()
        self.hello = self.read()

    def _drain(self) -> None:
        self.stderr = self.proc.stderr.read()

    def send(self, msg: protocol.Message) -> None:
        protocol.write_message(self.proc.stdin, msg)

    def send_raw(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read(self, timeout: float = TIMEOUT) -> protocol.Message | None:
        box: list = []
        thread = threading.Thread(target=lambda: box.append(protocol.read_message(self.proc.stdout)), daemon=True)
        thread.start()
        thread.join(timeout)
        assert box, f"no frame from the engine within {timeout} s"
        return box[0]

    def until_final(self, request_id: int) -> tuple[list[protocol.Message], protocol.Message]:
        progress = []
        while True:
            msg = self.read()
            assert msg is not None and msg.id == request_id, msg
            if msg.kind == "progress":
                progress.append(msg)
            else:
                return progress, msg

    def exit_code(self) -> int:
        code = self.proc.wait(TIMEOUT)
        self._stderr_thread.join(TIMEOUT)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def eng():
    engine = Engine()
    yield engine
    engine.close()


def test_hello_names_protocol_engine_and_torch(eng):
    hello = eng.hello
    assert hello.kind == "hello" and hello["protocol"] == protocol.PROTOCOL_VERSION
    assert hello["engine_version"] and hello["pid"] == eng.proc.pid
    import torch
    assert hello["torch"] == torch.__version__


def test_echo_returns_arrays_and_params(eng):
    arrays = {"mask": np.random.default_rng(0).random((300, 200)) > 0.5, "x": np.arange(12, dtype=np.float32),
              "zero_d": np.array(7, dtype=np.int64), "empty": np.zeros((0, 3), np.float32)}
    eng.send(protocol.request(1, "echo", {"a": [1, "b"]}, arrays))
    progress, out = eng.until_final(1)
    assert out.kind == "result" and out["params"] == {"a": [1, "b"]} and not progress
    for name, array in arrays.items():
        assert out.arrays[name].shape == array.shape
        np.testing.assert_array_equal(out.arrays[name], array)


def test_progress_then_result_and_library_prints_do_not_corrupt_the_stream(eng):
    eng.send(protocol.request(2, "sleep_steps", {"steps": 4, "seconds": 0.03, "print": "chatty library"}))
    progress, out = eng.until_final(2)
    assert out.kind == "result" and out["params"] == {"steps": 4}
    assert [round(p["fraction"], 2) for p in progress] == [0.25, 0.5, 0.75, 1.0]
    assert progress[0]["stage"] == "step 1 of 4"
    eng.send(protocol.shutdown())
    assert eng.exit_code() == 0
    assert eng.stderr.count(b"chatty library") == 2  # print() and a raw write to fd 1 both went to stderr


def test_cancel_stops_a_running_request_and_the_engine_goes_on(eng):
    eng.send(protocol.request(3, "sleep_steps", {"steps": 500, "seconds": 0.01}))
    first = eng.read()
    assert first.kind == "progress" and first.id == 3
    eng.send(protocol.cancel(3))
    progress, out = eng.until_final(3)
    assert out.kind == "error" and out["error_type"] == "CancelledError"
    assert len(progress) < 100
    eng.send(protocol.request(4, "echo", {"after": True}))
    assert eng.until_final(4)[1]["params"] == {"after": True}


def test_errors_keep_their_type_and_bugs_become_engine_errors(eng):
    eng.send(protocol.request(5, "no_such_request", {}))
    out = eng.until_final(5)[1]
    assert out["error_type"] == "EngineError" and "no_such_request" in out["message"]
    eng.send(protocol.request(6, "scene_info", {"ply_path": "/nonexistent/scene.ply"}))
    out = eng.until_final(6)[1]
    assert out["error_type"] == "InputFileError" and out["hint"]
    eng.send(protocol.request(7, "sleep_steps", {"steps": 1, "seconds": 0, "fail": "kaboom"}))
    out = eng.until_final(7)[1]
    assert out["error_type"] == "EngineError" and "RuntimeError: kaboom" in out["message"]
    eng.send(protocol.shutdown())
    assert eng.exit_code() == 0
    assert b"Traceback" in eng.stderr and b"kaboom" in eng.stderr


def test_a_bad_frame_in_sync_gets_an_error_reply_and_service_continues(eng):
    header = json.dumps({"msg": "request", "id": 8, "request": "echo", "params": {},
                         "arrays": [{"name": "a", "dtype": "<f4", "shape": [5], "offset": 0}]}).encode()
    eng.send_raw(struct.pack("<4sIQ", protocol.MAGIC, len(header), 8) + header + bytes(8))  # 20 bytes > 8
    out = eng.read()
    assert out.kind == "error" and out.id == 8 and out["error_type"] == "ProtocolError"
    bad_json = b"{oops"
    eng.send_raw(struct.pack("<4sIQ", protocol.MAGIC, len(bad_json), 0) + bad_json)
    out = eng.read()
    assert out.kind == "error" and out.id is None and "JSON" in out["message"]
    eng.send(protocol.result(9, {}))  # a kind the engine never accepts
    assert eng.read()["error_type"] == "ProtocolError"
    eng.send(protocol.request(10, "echo", {"ok": 1}))
    assert eng.until_final(10)[1]["params"] == {"ok": 1}


@pytest.mark.parametrize("raw", [
    b"GARBAGE-NOT-A-FRAME-AT-ALL",
    struct.pack("<4sIQ", protocol.MAGIC, 2, 2**62) + b"{}",                  # absurd body size
    struct.pack("<4sIQ", protocol.MAGIC, 2**31, 0),                          # absurd header size
])
def test_an_unreadable_stream_gets_an_error_and_a_clean_exit(eng, raw):
    eng.send_raw(raw)
    out = eng.read()
    assert out.kind == "error" and out["error_type"] == "ProtocolError"
    assert eng.read() is None
    assert eng.exit_code() == 2


def test_truncated_frame_then_eof_exits(eng):
    eng.send_raw(struct.pack("<4sIQ", protocol.MAGIC, 100, 0) + b'{"msg":')
    eng.proc.stdin.close()
    out = eng.read()
    assert out.kind == "error" and "ended inside" in out["message"]
    assert eng.exit_code() == 2


def test_eof_on_stdin_exits_cleanly_and_answers_queued_requests(eng):
    eng.send(protocol.request(11, "sleep_steps", {"steps": 1000, "seconds": 0.01}))
    eng.send(protocol.request(12, "echo", {}))
    assert eng.read().id == 11
    eng.proc.stdin.close()
    finals = {}
    while (msg := eng.read()) is not None:
        if msg.kind != "progress":
            finals[msg.id] = msg["error_type"]
    assert finals == {11: "CancelledError", 12: "CancelledError"}
    assert eng.exit_code() == 0


def test_duplicate_request_id_is_refused(eng):
    eng.send(protocol.request(13, "sleep_steps", {"steps": 20, "seconds": 0.01}))
    eng.send(protocol.request(13, "echo", {}))
    messages = []
    while not (messages and messages[-1].kind == "result"):
        messages.append(eng.read())
    errors = [m for m in messages if m.kind == "error"]
    assert len(errors) == 1 and "already running" in errors[0]["message"]


def test_the_engine_says_hello_without_importing_torch():
    code = ("import sys; import engine.server, engine.handlers, engine.scene_cache, engine.protocol; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          timeout=TIMEOUT)
    assert done.returncode == 0


def test_the_engine_warms_up_after_hello_and_can_stop_meanwhile(eng):
    # Right after hello a background thread imports torch and the render job (engine/warmup.py).
    eng.send(protocol.request(40, "warm_up", {"timeout": 120}))
    out = eng.until_final(40)[1]
    assert out.kind == "result" and out["params"]["warm"] is True
    assert {"import torch", "CUDA", "render job", "first frame", "kernels"} <= set(out["params"]["seconds"])
    stopping = Engine()          # shut down while the warm-up is still importing: a clean, prompt exit
    stopping.send(protocol.shutdown())
    assert stopping.exit_code() == 0 and b"Traceback" not in stopping.stderr


def test_the_warm_up_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("ANIMATE_GAUSSIANS_WARMUP", "0")
    cold = Engine()
    try:
        cold.send(protocol.request(41, "warm_up", {"timeout": 0.5}))
        assert cold.until_final(41)[1]["params"] == {"warm": False, "seconds": {}}
        cold.send(protocol.request(42, "echo", {}))
        assert cold.until_final(42)[1].kind == "result"
    finally:
        cold.close()
