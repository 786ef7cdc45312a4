"""Hung-engine detection: a request the engine has said nothing about (no progress, no result) for N seconds is
declared stuck, so the client can stop that engine and end the request with a clear error instead of waiting
forever. N: $ANIMATE_GAUSSIANS_STALL_TIMEOUT, else the add-on preference, else 180 s; 0 turns it off."""

from __future__ import annotations

import logging
import os
import threading
import time

from engine.errors import EngineError

STALL_ENV = "ANIMATE_GAUSSIANS_STALL_TIMEOUT"
# Long enough for the silent steps we know (importing torch, loading a model from disk, one big CUDA step),
# short enough that a stuck engine is noticed while the user still waits.
DEFAULT_STALL_TIMEOUT_S = 180.0
log = logging.getLogger("animate_gaussians.engine")


def stall_timeout(preference: float | None = None) -> float:
    """Seconds of silence before a request counts as stuck (0: never). The environment variable wins, so batch
    runs and tests can set it without preferences; a value that is not a number is ignored."""
    value = os.environ.get(STALL_ENV, "").strip()
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    if preference is not None:
        return max(0.0, float(preference))
    return DEFAULT_STALL_TIMEOUT_S


class StallWatch:
    """When the engine last spoke about each request in flight (thread-safe: the reader thread reports)."""

    def __init__(self) -> None:
        self._last: dict[int, float] = {}
        self._lock = threading.Lock()

    def heard(self, request_id: int) -> None:
        """The request was sent, or the engine said something about it."""
        with self._lock:
            self._last[request_id] = time.monotonic()

    def finished(self, request_id: int) -> None:
        with self._lock:
            self._last.pop(request_id, None)

    def stalled(self, timeout_s: float) -> tuple[int, float] | None:
        """(request id, seconds silent) of the longest-silent request past `timeout_s`, else None."""
        if timeout_s <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            if not self._last:
                return None
            request_id, last = min(self._last.items(), key=lambda item: item[1])
        silent = now - last
        return (request_id, silent) if silent > timeout_s else None


def stop_if_hung(proc, limit_s: float) -> bool:
    """Kill `proc` (an engine_process.EngineProcess) if one of its requests is silent past `limit_s`. Its reader
    thread then ends every request the engine owed with the error set here. True if it was stopped."""
    stalled = proc.watch.stalled(limit_s)
    if stalled is None:
        return False
    request_id, silent = stalled
    with proc.lock:
        if proc.stall_error is not None:
            return True
        request_type = proc.pending.get(request_id, "a request")
        proc.stall_error = EngineError(
            f"the engine made no progress on {request_type!r} for {silent:.0f} s (limit {limit_s:g} s) and was "
            "stopped; the scene is unchanged",
            "try again (a new engine starts); if that step is only slow, raise 'Hung After' in the add-on "
            f"preferences or ${STALL_ENV} (0: never)")
    log.warning("engine %s: %s", proc.popen.pid, proc.stall_error)
    proc.popen.kill()
    return True
