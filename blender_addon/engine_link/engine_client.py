"""Start the engine process and talk to it (engine.protocol over its stdin/stdout) without blocking Blender.

A reader thread per process turns frames into events on a queue; the UI polls (`poll`), batch waits (`wait`).
stderr is drained into a ring buffer and the log, so the child never blocks on a full pipe. No torch, no bpy
at import: bpy is only asked for the preferences and the extension's user folder.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

import engine
from engine import protocol
from engine.errors import AnimateGaussiansError, CancelledError, EngineError

from .. import notices
from . import engine_backend
from .engine_watchdog import StallWatch, stall_timeout, stop_if_hung

ENV_PYTHON = "ANIMATE_GAUSSIANS_PYTHON"
ENGINE_ENV_DIR = "engine-env"
# The add-on's own package (this module sits in its engine_link/): the extension's id for its user folder.
ADDON_PACKAGE = __package__.rpartition(".")[0] if __package__ else "blender_addon"
STDERR_LINES = 200
log = logging.getLogger("animate_gaussians.engine")

_SETUP_HINT = ("create it with `python build_addon.py --engine-env DIR` and set DIR's python as the engine "
               "interpreter in the add-on preferences (or export ANIMATE_GAUSSIANS_PYTHON)")
_TORCH_CHECK = ("import importlib.util as u, sys; "
                "sys.exit(0 if u.find_spec('torch') and u.find_spec('numpy') else 3)")
_torch_checked: dict[tuple[str, int], bool] = {}


# ---- which Python runs the engine ---------------------------------------------------------------------------

def _venv_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def python_has_torch(python: str) -> bool:
    """Whether `python` runs and can import torch and numpy (checked without importing torch; cached)."""
    try:
        key = (python, os.stat(python).st_mtime_ns)
    except OSError:
        return False
    if key not in _torch_checked:
        try:
            done = subprocess.run([python, "-c", _TORCH_CHECK], capture_output=True, timeout=60)
            _torch_checked[key] = done.returncode == 0
        except (OSError, subprocess.SubprocessError):
            _torch_checked[key] = False
    return _torch_checked[key]


def engine_env_candidates() -> list[Path]:
    """Interpreters of an `engine-env` venv in, or beside, the extension's user folder (when run as one)."""
    try:
        import bpy

        user_dir = Path(bpy.utils.extension_path_user(ADDON_PACKAGE, create=False))
    except Exception:  # not running as an installed extension (tests, the bpy module, a legacy add-on)
        return []
    return [_venv_python(user_dir / ENGINE_ENV_DIR), _venv_python(user_dir.parent / ENGINE_ENV_DIR)]


def find_engine_python(prefs_path: str) -> str:
    """The interpreter for the engine: the preference, else $ANIMATE_GAUSSIANS_PYTHON, else an `engine-env`
    venv by the extension's user folder, else this very interpreter when it has torch (tests, the bpy module).

    A path the user set explicitly must work: it is never silently replaced by a fallback.
    """
    for source, value in (("the add-on preferences", prefs_path), (ENV_PYTHON, os.environ.get(ENV_PYTHON, ""))):
        if not value:
            continue
        path = Path(value).expanduser()
        if path.is_dir():
            path = _venv_python(path)
        if not path.is_file():
            raise EngineError(f"the engine interpreter {str(path)!r} set in {source} does not exist",
                              "point it at the python of the engine environment; " + _SETUP_HINT)
        if not python_has_torch(str(path)):
            raise EngineError(f"the engine interpreter {str(path)!r} set in {source} cannot import torch",
                              "install the engine requirements into it; " + _SETUP_HINT)
        return str(path)
    for candidate in engine_env_candidates():
        if candidate.is_file() and python_has_torch(str(candidate)):
            return str(candidate)
    if sys.executable and python_has_torch(sys.executable):
        return sys.executable
    raise EngineError("no Python with torch was found to run the engine", _SETUP_HINT)


def engine_pythonpath() -> str:
    """The folder holding the `engine` package this add-on imported, so the child runs the same code."""
    return str(Path(engine.__file__).resolve().parent.parent)


# ---- events --------------------------------------------------------------------------------------------------

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


class _EngineProcess:
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
        self._proc: _EngineProcess | None = None
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
                self._proc = _EngineProcess(python, self._child_env(), self._events, self._stderr_lines)
            except OSError as exc:
                raise EngineError(f"cannot start the engine with {python!r}: {exc}", _SETUP_HINT) from None

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


def shutdown_client() -> None:
    """Stop the shared engine (add-on unregister, Blender exit)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.stop()
            _shared = None


atexit.register(shutdown_client)
