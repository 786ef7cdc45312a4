"""The add-on's handle on the engine (engine.protocol over its stdin/stdout) without blocking Blender: submit
requests, poll (the UI) or wait (batch) for their events, cancel them; and the add-on's one shared client.

The process itself is engine_process.EngineProcess; which interpreter runs it, engine_python. No torch, no bpy
at import: bpy is only asked for the preferences and the extension's user folder.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import os
import queue
import threading
import time
from typing import Any, Callable, Mapping

import numpy as np

from engine import protocol
from engine.errors import EngineError

from .. import notices
from . import engine_backend
from .engine_process import EngineEvent, EngineProcess
from .engine_python import SETUP_HINT, engine_pythonpath, find_engine_python
from .engine_watchdog import stall_timeout, stop_if_hung

STDERR_LINES = 200


class EngineClient:
    """The add-on's handle on the engine: submit requests, poll or wait for their events, cancel them.

    A request to a dead (or never started) engine starts a new one; requests in flight when an engine dies
    end with an EngineError naming its exit code and its last stderr lines.
    """

    def __init__(self, python: str | Callable[[], str] | None = None, env: Mapping[str, str] | None = None,
                 stderr_lines: int = STDERR_LINES, stall_timeout_s: float | Callable[[], float] | None = None
                 ) -> None:
        self._python = python
        self._stall_timeout = stall_timeout_s
        self._env = env
        self._stderr_lines = stderr_lines
        self._events: queue.Queue[EngineEvent] = queue.Queue()
        self._stash: collections.deque[EngineEvent] = collections.deque()
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._proc: EngineProcess | None = None
        self._last_hello: dict[str, Any] | None = None     # of a stopped engine (hello stays readable)

    # -- process ----------------------------------------------------------------------------------------------
    def _resolve_python(self) -> str:
        if callable(self._python):
            return self._python()
        return self._python or find_engine_python("")

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ if self._env is None else self._env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (engine_pythonpath(), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"  # stderr lines reach the log as they are written
        return env

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.alive

    @property
    def python(self) -> str | None:
        return self._proc.python if self._proc else None

    @property
    def hello(self) -> dict[str, Any] | None:
        """The running (or last) engine's hello, None before one said it; never starts an engine."""
        hello = self._proc.hello if self._proc is not None and self._proc.hello is not None else self._last_hello
        return dict(hello) if hello is not None else None

    def start(self) -> None:
        """Start the engine if it is not running (returns at once; `wait_ready` waits for its hello)."""
        with self._lock:
            if self.running:
                return
            if self._proc is not None:  # a dead engine: let its reader name the exit to the requests it owed
                self._proc.wait_dead(timeout=15)
                self._proc.close_pipes()
            python = self._resolve_python()
            try:
                self._proc = EngineProcess(python, self._child_env(), self._events, self._stderr_lines)
            except OSError as exc:
                raise EngineError(f"cannot start the engine with {python!r}: {exc}", SETUP_HINT) from None

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Start the engine if needed and wait for its hello; returns it (protocol, versions, torch)."""
        self.start()
        proc = self._proc
        if not proc.ready.wait(timeout):
            raise EngineError(f"the engine did not say hello within {timeout:g} s. Its last output:\n"
                              f"{proc.last_stderr()}")
        if proc.failure is not None:
            raise proc.failure
        return dict(proc.hello)

    @property
    def stderr_tail(self) -> list[str]:
        return list(self._proc.stderr_tail) if self._proc else []

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the engine to exit (kill it after `timeout`); requests in flight end with CancelledError."""
        with self._lock:
            if self._proc is not None:
                self._proc.stop(timeout)
                self._last_hello = self._proc.hello or self._last_hello
                self._proc = None

    # -- requests ---------------------------------------------------------------------------------------------
    def submit(self, request_type: str, params: Mapping[str, Any] | None = None,
               arrays: Mapping[str, np.ndarray] | None = None) -> int:
        """Send a request (starting the engine if needed); returns its id at once."""
        msg = protocol.request(0, request_type, notices.with_required(params), arrays)
        protocol.encode(msg)  # unsendable params fail here, before an id is owed
        with self._lock:
            self.start()
            proc = self._proc
            request_id = next(self._ids)
            msg.id = request_id
            with proc.lock:
                proc.pending[request_id] = request_type
            proc.watch.heard(request_id)
        try:
            proc.send(msg)
        except (OSError, ValueError):
            proc.wait_dead(timeout=15)
            with proc.lock:
                owed = request_id in proc.pending
                proc.pending.pop(request_id, None)
            if owed:
                raise proc.failure or EngineError("the engine stopped before it took the request") from None
        return request_id

    def stall_limit(self) -> float:
        """Seconds of engine silence on a request before it counts as hung (0: never)."""
        value = self._stall_timeout() if callable(self._stall_timeout) else self._stall_timeout
        return stall_timeout(value)

    def check_stalled(self) -> None:
        """Stop the engine if a request has been silent past the limit (poll and wait call this)."""
        proc = self._proc
        if proc is not None and proc.alive:
            stop_if_hung(proc, self.stall_limit())

    def cancel(self, request_id: int) -> None:
        """Ask the engine to stop the request at its next step; it then ends with a CancelledError event."""
        proc = self._proc
        if proc is not None and proc.alive:
            try:
                proc.send(protocol.cancel(request_id))
            except (OSError, ValueError):
                pass

    def poll(self, request_id: int | None = None) -> list[EngineEvent]:
        """Events that arrived since the last poll, oldest first (never blocks): all of them, or only those of
        `request_id` (the others are kept for their own pollers)."""
        self.check_stalled()
        with self._lock:
            while True:
                try:
                    self._stash.append(self._events.get_nowait())
                except queue.Empty:
                    break
            if request_id is None:
                events = list(self._stash)
                self._stash.clear()
            else:
                events = [e for e in self._stash if e.request_id == request_id]
                rest = [e for e in self._stash if e.request_id != request_id]
                self._stash.clear()
                self._stash.extend(rest)
        return events

    def wait(self, request_id: int, on_progress: Callable[[float, str], None] | None = None,
             timeout: float | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Block until the request ends: its (params, arrays), or its error raised here (batch mode)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            mine = [e for e in self._stash if e.request_id == request_id]
            for e in mine:
                self._stash.remove(e)
        while True:
            for event in mine:
                if event.kind == "progress":
                    if on_progress is not None:
                        on_progress(event.fraction, event.stage)
                elif event.kind == "result":
                    return event.params, event.arrays
                else:
                    raise event.error
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self.cancel(request_id)
                raise EngineError(f"request {request_id} got no answer within {timeout:g} s",
                                  "the engine may be stuck; stop it and try again")
            try:
                event = self._events.get(timeout=0.5 if remaining is None else min(0.5, remaining))
            except queue.Empty:
                mine = []
                self.check_stalled()
                proc = self._proc
                if proc is None or request_id not in proc.pending:  # its end went to poll(), or it never was
                    raise EngineError(f"request {request_id} is not running") from None
                continue
            if event.request_id == request_id:
                mine = [event]
            else:
                with self._lock:
                    self._stash.append(event)
                mine = []

    def request(self, request_type: str, params: Mapping[str, Any] | None = None,
                arrays: Mapping[str, np.ndarray] | None = None, on_progress: Callable[[float, str], None] | None = None,
                timeout: float | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """submit + wait."""
        return self.wait(self.submit(request_type, params, arrays), on_progress, timeout)


# ---- the add-on's shared client -------------------------------------------------------------------------------

def _preferred_python() -> str:
    from .. import preferences  # bpy: imported only when the add-on asks for its shared client

    return preferences.settings().engine_python


def _preferred_stall_timeout() -> float:
    from .. import preferences

    return preferences.settings().stall_timeout


def preferred_device() -> str:
    """The device preference as the protocol spells it: "auto", "cpu" or "cuda"."""
    from .. import preferences

    return preferences.settings().device.lower()


_shared: EngineClient | None = None
_shared_setting: str | None = None
_shared_lock = threading.Lock()


def get_client() -> EngineClient:
    """The add-on's one engine client; a changed interpreter preference stops the old engine."""
    global _shared, _shared_setting
    setting = _preferred_python()
    with _shared_lock:
        if _shared is not None and setting != _shared_setting:
            _shared.stop()
            _shared = None
        if _shared is None:
            _shared = EngineClient(python=lambda: find_engine_python(setting), stall_timeout_s=_preferred_stall_timeout)
            _shared_setting = setting
        return _shared


def request_blocking(request_type: str, params: Mapping[str, Any] | None = None,
                     arrays: Mapping[str, np.ndarray] | None = None, report: Callable[[str], None] | None = None,
                     client: EngineClient | None = None, label: str | None = None
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Send a request and wait for its answer (batch, scripts): each progress step goes to `report` as one line,
    "<label>: NN% stage". The shared client unless `client` is given; the request's error is raised here."""
    client = client or get_client()

    def on_progress(fraction: float, stage: str) -> None:
        if report is not None:
            report(f"{label or request_type}: {100 * fraction:3.0f}% {stage}")

    return client.request(request_type, params, arrays, on_progress=on_progress)


def current_backend() -> dict[str, Any] | None:
    """The rasterizer and device ({"rasterizer", "device"}) of the shared client's engine once it has said hello
    in this session; None before (starts nothing). The panel's line and the batch report's `engine_backend`."""
    try:
        client = get_client()
    except Exception:    # no preferences outside Blender's UI, etc.: nothing is known then
        return None
    return engine_backend.from_hello(getattr(client, "hello", None))   # test doubles of the client may not have one


def shutdown_client() -> None:
    """Stop the shared engine (add-on unregister, Blender exit)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.stop()
            _shared = None


atexit.register(shutdown_client)
