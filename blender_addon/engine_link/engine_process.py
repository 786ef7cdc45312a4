"""One running engine process: the child, a reader thread that turns its frames (engine.protocol) into events on
a queue, a drained stderr tail, and the requests it still owes; engine_client.EngineClient holds one at a time.
"""

from __future__ import annotations

import collections
import logging
import queue
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

import engine
from engine import protocol
from engine.errors import AnimateGaussiansError, CancelledError, EngineError

from .. import notices
from . import engine_backend
from .engine_python import engine_pythonpath
from .engine_watchdog import StallWatch

log = logging.getLogger("animate_gaussians.engine")


@dataclass
class EngineEvent:
    """What the engine said about a request: `progress`, then one `result` or `error`."""

    kind: str
    request_id: int
    fraction: float = 0.0
    stage: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    error: AnimateGaussiansError | None = None

    @property
    def final(self) -> bool:
        return self.kind in ("result", "error")


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class EngineProcess:
    """One running engine: the child, its reader and stderr threads, and the requests it still owes."""

    def __init__(self, python: str, env: Mapping[str, str], events: queue.Queue, stderr_lines: int) -> None:
        # cwd is the folder holding `engine`, so `-m engine` cannot pick up another `engine` from Blender's cwd
        self.python = python
        self.events = events
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=stderr_lines)
        self.pending: dict[int, str] = {}    # id → request type of each unanswered request (warnings are filed by it)
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.ready = threading.Event()
        self.hello: dict[str, Any] | None = None
        self.failure: EngineError | None = None
        self.stall_error: EngineError | None = None   # set when the client stops a hung engine
        self.watch = StallWatch()
        self.stopping = False
        self.popen = subprocess.Popen([python, "-m", "engine"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=dict(env), cwd=engine_pythonpath())
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True,
                                               name=f"engine-{self.popen.pid}-stderr")
        self._reader_thread = threading.Thread(target=self._read, daemon=True, name=f"engine-{self.popen.pid}-reader")
        self._stderr_thread.start()
        self._reader_thread.start()

    @property
    def alive(self) -> bool:
        return self.failure is None and not self.stopping and self.popen.poll() is None

    def _drain_stderr(self) -> None:
        for raw in iter(self.popen.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            log.info("engine: %s", line)

    def last_stderr(self, n: int = 12) -> str:
        return "\n".join(list(self.stderr_tail)[-n:])

    def _read(self) -> None:
        stdout = self.popen.stdout
        problem = None
        try:
            first = protocol.read_message(stdout)
            if first is None:
                pass  # died at start: _finish names the exit code
            elif first.kind != "hello":
                problem = EngineError(f"the engine did not start properly (its first message was {first.kind!r})")
            elif first["protocol"] != protocol.PROTOCOL_VERSION:
                problem = EngineError(
                    f"the engine speaks protocol {first['protocol']} (engine {first.fields.get('engine_version')}),"
                    f" the add-on protocol {protocol.PROTOCOL_VERSION} (engine {engine.__version__})",
                    "the engine environment runs other engine code than the add-on: reinstall the add-on's engine")
            else:
                self.hello = dict(first.fields)
                engine_backend.record(self.hello)      # a lesser rasterizer is a warning from the start
                self.ready.set()
                while (msg := protocol.read_message(stdout)) is not None:
                    self._dispatch(msg)
        except protocol.FrameError as exc:
            problem = EngineError(f"the engine sent an unreadable frame: {exc}")
        except (OSError, ValueError) as exc:  # the pipe closed under us (stop())
            if not self.stopping:
                problem = EngineError(f"lost the engine's output: {exc}")
        finally:
            self._finish(problem)

    def _dispatch(self, msg: protocol.Message) -> None:
        if msg.id is None:  # an error about a frame it could not attribute; the stream may be lost next
            log.warning("engine: %s: %s", msg.fields.get("error_type"), msg.fields.get("message"))
            return
        self.watch.heard(msg.id)
        if msg.kind == "progress":
            event = EngineEvent("progress", msg.id, fraction=float(msg["fraction"]), stage=msg["stage"])
        elif msg.kind == "result":
            event = EngineEvent("result", msg.id, fraction=1.0, params=msg["params"], arrays=msg.arrays)
            with self.lock:
                request_type = self.pending.get(msg.id, "engine")
            notices.record(request_type, msg["params"])
        elif msg.kind == "error":
            event = EngineEvent("error", msg.id, error=protocol.exception_from_error(msg))
        else:
            log.warning("engine sent an unexpected %r message", msg.kind)
            return
        if event.final:
            with self.lock:
                self.pending.pop(msg.id, None)
            self.watch.finished(msg.id)
        self.events.put(event)

    def _finish(self, problem: EngineError | None) -> None:
        if problem is not None and self.popen.poll() is None:
            self.popen.kill()
        try:
            code = self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait()
        self._stderr_thread.join(timeout=2)
        with self.lock:
            owed = sorted(self.pending)
            self.pending.clear()
            problem = self.stall_error or problem
            if problem is None and not self.stopping:
                when = "" if self.hello is not None else " before it was ready"
                problem = EngineError(f"the engine stopped{when}: it {_describe_exit(code)}")
            if problem is not None:
                tail = self.last_stderr()
                if tail:
                    problem = type(problem)(f"{problem}. Its last output:\n{tail}", problem.hint)
                self.failure = problem
        for request_id in owed:
            error = self.failure or CancelledError("the engine was stopped before it answered")
            self.events.put(EngineEvent("error", request_id, error=error))
        self.ready.set()

    def send(self, msg: protocol.Message) -> None:
        with self.write_lock:
            protocol.write_message(self.popen.stdin, msg)

    def wait_dead(self, timeout: float) -> None:
        self._reader_thread.join(timeout)

    def stop(self, timeout: float) -> None:
        self.stopping = True
        try:
            self.send(protocol.shutdown())
            self.popen.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._reader_thread.join(timeout=5)
        self.close_pipes()

    def close_pipes(self) -> None:
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
