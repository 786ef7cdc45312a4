"""The engine process: reads requests from stdin, runs their handlers one at a time, answers on stdout.

A reader thread takes frames off stdin (so `cancel` arrives while a handler runs); the main thread runs the
handlers. The protocol owns the real stdout: at start the process moves it to a private fd and points fd 1
at stderr, so nothing a library prints (Python or C) can corrupt the stream.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import BinaryIO, Mapping

import engine
from engine import backend_probe, fallbacks, protocol, request_progress, warmup
from engine.errors import AnimateGaussiansError, CancelledError
from engine.handlers import HANDLERS, Handler, resolve

_PROGRESS_INTERVAL_S = 0.02  # at most ~50 progress frames a second per request, whatever a handler sends


class RequestContext:
    """What a handler gets: progress reporting and the cancel flag of its request."""

    def __init__(self, request_id: int, send, cancelled: threading.Event) -> None:
        self.request_id = request_id
        self._send = send
        self._cancelled = cancelled
        self._last_sent = 0.0
        self._last_stage = None
        self._last_fraction = 0.0

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check_cancelled(self) -> None:
        """Raise CancelledError if the add-on cancelled this request; call it at every step boundary."""
        if self._cancelled.is_set():
            raise CancelledError(f"request {self.request_id} was cancelled")

    def progress(self, fraction: float, stage: str) -> None:
        """Report progress (and stop here if the request was cancelled)."""
        self.check_cancelled()
        now = time.monotonic()
        if stage == self._last_stage and fraction < 1.0 and now - self._last_sent < _PROGRESS_INTERVAL_S:
            return
        self._last_sent, self._last_stage, self._last_fraction = now, stage, fraction
        self._send(protocol.progress(self.request_id, fraction, stage))

    def note(self, stage: str) -> None:
        """Show `stage` at the current fraction, for something slow below the handler (request_progress.say)."""
        self._last_sent, self._last_stage = time.monotonic(), stage
        self._send(protocol.progress(self.request_id, self._last_fraction, stage))


def torch_version_without_import() -> tuple[str | None, str | None]:
    """torch's version and CUDA build, read from torch/version.py so hello does not pay for importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None, None
    try:
        text = (Path(spec.submodule_search_locations[0]) / "version.py").read_text()
    except OSError:
        return "unknown", None
    version = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)", text, re.M)
    cuda = re.search(r"^cuda\b[^=]*=\s*['\"]([^'\"]+)", text, re.M)
    return (version.group(1) if version else "unknown"), (cuda.group(1) if cuda else None)


class EngineServer:
    def __init__(self, rx: BinaryIO, tx: BinaryIO, registry: Mapping[str, Handler | str] = HANDLERS) -> None:
        self._rx, self._tx = rx, tx
        self._registry = registry
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._queue: queue.Queue[protocol.Message | None] = queue.Queue()
        self._cancel_flags: dict[int, threading.Event] = {}
        self._exit_code = 0

    def send(self, msg: protocol.Message) -> None:
        with self._write_lock:
            protocol.write_message(self._tx, msg)

    def _stop_all(self, exit_code: int) -> None:
        with self._state_lock:
            self._exit_code = max(self._exit_code, exit_code)
            for flag in self._cancel_flags.values():
                flag.set()
        self._queue.put(None)

    def _read_loop(self) -> None:
        try:
            self._read_frames()
        except Exception:  # a bug here must not leave the main thread waiting forever
            traceback.print_exc(file=sys.stderr)
            self._stop_all(2)

    def _read_frames(self) -> None:
        while True:
            try:
                msg = protocol.read_message(self._rx)
            except protocol.FrameError as exc:
                self.send(protocol.error(exc.request_id, "ProtocolError", str(exc),
                                         "the add-on and the engine disagree on the protocol; restart Blender"))
                if exc.in_sync:
                    continue
                print(f"engine: unreadable input, exiting: {exc}", file=sys.stderr, flush=True)
                self._stop_all(2)
                return
            except (OSError, ValueError) as exc:  # stdin closed under us
                print(f"engine: stdin failed: {exc}", file=sys.stderr, flush=True)
                self._stop_all(0)
                return
            if msg is None or msg.kind == "shutdown":
                self._stop_all(0)
                return
            if msg.kind == "cancel":
                with self._state_lock:
                    flag = self._cancel_flags.get(msg.id)
                if flag is not None:
                    flag.set()
            elif msg.kind == "request":
                with self._state_lock:
                    duplicate = msg.id in self._cancel_flags
                    if not duplicate:
                        self._cancel_flags[msg.id] = threading.Event()
                if duplicate:
                    self.send(protocol.error(msg.id, "ProtocolError", f"request id {msg.id} is already running",
                                             "use a new id for every request"))
                else:
                    self._queue.put(msg)
            else:
                self.send(protocol.error(msg.id, "ProtocolError", f"the engine does not accept {msg.kind!r}",
                                         "only request, cancel and shutdown go to the engine"))

    def _run(self, msg: protocol.Message) -> None:
        with self._state_lock:
            flag = self._cancel_flags[msg.id]
        ctx = RequestContext(msg.id, self.send, flag)
        request_type = msg["request"]
        try:
            ctx.check_cancelled()
            handler = resolve(request_type, self._registry)
            with fallbacks.collecting(msg["params"]) as warnings, request_progress.serving(ctx):
                out = handler(ctx, msg["params"], msg.arrays)
            params, arrays = out if out is not None else ({}, {})
            params = fallbacks.attach(dict(params), warnings)
            reply = protocol.result(msg.id, params, arrays)
            protocol.encode(reply)  # fail here (as an error reply) if the handler returned something unsendable
        except AnimateGaussiansError as exc:
            if not isinstance(exc, CancelledError):
                print(f"engine: request {msg.id} ({request_type}) failed: {exc.user_message()}",
                      file=sys.stderr, flush=True)
            reply = protocol.error_from_exception(msg.id, exc)
        except Exception as exc:  # an engine bug: the traceback goes to stderr, the add-on gets one line
            print(f"engine: request {msg.id} ({request_type}) raised:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            reply = protocol.error(msg.id, "EngineError",
                                   f"the engine failed in {request_type!r}: {type(exc).__name__}: {exc}",
                                   "the engine's log (stderr) has the traceback; please report it")
        finally:
            with self._state_lock:
                self._cancel_flags.pop(msg.id, None)
        self.send(reply)

    def serve(self) -> int:
        torch_version, torch_cuda = torch_version_without_import()
        self.send(protocol.hello(engine.__version__, sys.version.split()[0], os.getpid(), torch_version,
                                 torch_cuda, backend_probe.probe(torch_version, torch_cuda)))
        threading.Thread(target=self._read_loop, name="engine-stdin", daemon=True).start()
        while True:
            # Torch, CUDA, gsplat and the render job load once the add-on has had nothing to ask for a
            # moment (engine/warmup.py): a request that is already waiting runs first, undisturbed.
            try:
                msg = self._queue.get(timeout=warmup.IDLE_S if warmup.waiting() else None)
            except queue.Empty:
                warmup.start()
                continue
            if msg is None:
                break
            try:
                self._run(msg)
            except (BrokenPipeError, OSError) as exc:  # the add-on went away
                print(f"engine: cannot answer: {exc}", file=sys.stderr, flush=True)
                return 0
        # requests still queued when we stop are answered (cancelled), so no caller waits forever
        while True:
            try:
                msg = self._queue.get_nowait()
            except queue.Empty:
                break
            if msg is not None:
                try:
                    self.send(protocol.error(msg.id, "CancelledError", "the engine is shutting down",
                                             CancelledError.hint))
                except OSError:
                    break
        return self._exit_code


def claim_stdio() -> tuple[BinaryIO, BinaryIO]:
    """Take fds 0/1 for the protocol; afterwards fd 1 and sys.stdout write to stderr and fd 0 reads nothing."""
    rx_fd, tx_fd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull)
    return os.fdopen(rx_fd, "rb", buffering=1 << 16), os.fdopen(tx_fd, "wb", buffering=1 << 16)


def main() -> int:
    rx, tx = claim_stdio()
    try:
        return EngineServer(rx, tx).serve()
    except BrokenPipeError:
        return 0
    finally:
        try:
            tx.close()
        except OSError:
            pass
