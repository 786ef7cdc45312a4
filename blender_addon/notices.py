"""Warnings (and operator errors) the user must see: every engine fallback (no depth, torch instead of gsplat, region growing instead
of SAM, ...) arrives with its result as `params["warnings"]` (engine/fallbacks.py). The engine client records
them here by request type as results arrive; the panel draws them, operators report them, and the batch report
lists them under `warnings`. Pure Python (no bpy), so the batch and the tests read it directly.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

from engine import fallbacks
from engine.errors import AnimateGaussiansError

_lock = threading.Lock()
_latest: dict[str, list[dict[str, str]]] = {}     # request type → warnings of its latest result
_history: list[dict[str, str]] = []               # every warning of this session, in order (the batch report)
_required: list[str] = []                         # fallback codes every request of this session refuses


def record(source: str, result_params: Mapping[str, Any] | None) -> list[str]:
    """Store the warnings of `source`'s latest result (replacing the previous ones); returns their messages."""
    found = fallbacks.warnings_of(result_params)
    with _lock:
        _latest[source] = found
        for w in found:
            _remember(source, w)
    return [w["message"] for w in found]


def add(source: str, code: str, message: str) -> None:
    """A warning the add-on itself raises (e.g. no engine backend information)."""
    with _lock:
        _latest.setdefault(source, [])
        warning = {"code": code, "message": message}
        if not any(w["message"] == message for w in _latest[source]):
            _latest[source].append(warning)
        _remember(source, warning)


def _remember(source: str, warning: dict[str, str]) -> None:
    """Append to the session's history once (the caller holds _lock)."""
    entry = {"source": source, **warning}
    if entry not in _history:
        _history.append(entry)


def latest(source: str | None = None) -> list[str]:
    """Messages of the latest result of `source` (all sources when None), for the panel."""
    with _lock:
        sources = [source] if source is not None else list(_latest)
        return [w["message"] for s in sources for w in _latest.get(s, [])]


def history() -> list[dict[str, str]]:
    """Every warning of this session: {"source", "code", "message"}."""
    with _lock:
        return [dict(w) for w in _history]


def clear(source: str | None = None) -> None:
    with _lock:
        if source is None:
            _latest.clear()
            _history.clear()
        else:
            _latest.pop(source, None)


def require(codes) -> None:
    """Refuse these fallbacks (fallbacks.CODES) in every request from now on (batch --require-*)."""
    with _lock:
        _required[:] = [str(c) for c in codes]


def with_required(params: Mapping[str, Any] | None) -> dict:
    """A request's params with the session's refused fallbacks added to its own `require`."""
    out = dict(params or {})
    with _lock:
        if _required:
            own = out.get("require") or []
            own = [own] if isinstance(own, str) else list(own)
            out["require"] = own + [c for c in _required if c not in own]
    return out


def report(operator, messages: list[str]) -> None:
    """Show each warning through Operator.report (the status bar and the info log)."""
    for message in messages:
        operator.report({"WARNING"}, message)


def fail(operator, error: Exception) -> set[str]:
    """An operator's failure as its one ERROR report (our errors say what to do; an OSError names the path);
    returns {"CANCELLED"}, what the operator then returns. The scene is as the operator found it."""
    if isinstance(error, AnimateGaussiansError):
        operator.report({"ERROR"}, error.user_message())
    else:
        operator.report({"ERROR"}, f"{type(error).__name__}: {error}")
    return {"CANCELLED"}


def draw(layout, source: str | None = None) -> None:
    """A box of the latest warnings (of `source`, or all) in a panel; nothing when there are none."""
    messages = latest(source)
    if not messages:
        return
    box = layout.box()
    for message in messages:
        box.label(text=message, icon="ERROR")
