"""Fallbacks: what the engine did instead of what was asked, said to the user, never silently.

Anything in the engine that takes a lesser path (no depth model, the torch rasterizer instead of gsplat,
region growing instead of SAM, ...) calls `warn(code, message)`. Inside a request the warning is collected
for that request and the server sends it with the result as `params["warnings"]` (a list of
{"code", "message"}); the add-on shows it in the panel and `Operator.report`, the batch lists it in the
report's `warnings`. A request whose params carry `"require": [code, ...]` turns that warning into a
FallbackRefusedError instead (batch `--require-depth` and friends).

Torch-free: both processes import it.
"""

from __future__ import annotations

import contextvars
import sys
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping

from engine.errors import FallbackRefusedError

# The codes a request may require away, and the batch option that does it. Add a code here when a new
# fallback appears, so `--require-…` and the docs stay complete.
CODES: dict[str, str] = {
    "no_depth": "--require-depth",             # motion lifted from colour alone: no depth model
    "torch_rasterizer": "--require-gsplat",    # CUDA present but gsplat missing: the slow torch rasterizer
    "cpu_device": "--require-cuda",            # asked for auto/cuda but ran on the CPU
    "region_growing": "--require-sam",         # segmentation without SAM masks
    "no_clip": "--require-clip",               # text matching without CLIP
}


class _Collector:
    def __init__(self, required: Iterable[str]) -> None:
        self.required = set(required)
        self.warnings: list[dict[str, str]] = []

    def add(self, code: str, message: str) -> bool:
        """Record it; False when this request had it already."""
        if any(w["code"] == code and w["message"] == message for w in self.warnings):
            return False
        self.warnings.append({"code": code, "message": message})
        return True


_current: contextvars.ContextVar[_Collector | None] = contextvars.ContextVar("animate_gaussians_fallbacks",
                                                                           default=None)
_said_outside: set[tuple[str, str]] = set()   # warnings printed outside any request


def warn(code: str, message: str) -> None:
    """Say that the engine fell back to a lesser method; raises if the current request requires `code` away.
    Safe to call on every use of the lesser method (every frame, say): the engine's log gets it once a request
    (once a process outside requests), the result once."""
    collector = _current.get()
    if collector is not None and code in collector.required:
        option = CODES.get(code)
        raise FallbackRefusedError(f"{message} (refused: the request requires {code!r}"
                                   + (f", {option})" if option else ")"))
    if collector is not None:
        new = collector.add(code, message)
    else:
        new = (code, message) not in _said_outside
        _said_outside.add((code, message))
    if new:
        print(f"engine: warning: {message}", file=sys.stderr, flush=True)


@contextmanager
def collecting(params: Mapping[str, Any] | None = None) -> Iterator[list[dict[str, str]]]:
    """Collect the warnings raised inside (the server wraps every request in this); yields the live list."""
    require = (params or {}).get("require") or []
    if isinstance(require, str):
        require = [require]
    collector = _Collector(str(r) for r in require)
    token = _current.set(collector)
    try:
        yield collector.warnings
    finally:
        _current.reset(token)


def attach(result_params: dict, warnings: list[dict[str, str]]) -> dict:
    """Merge collected warnings into a result's params (keeps any the handler put there itself)."""
    if warnings:
        merged = list(result_params.get("warnings") or [])
        for w in warnings:
            if w not in merged:
                merged.append(w)
        result_params["warnings"] = merged
    return result_params


def warnings_of(result_params: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """The warnings of a result, as {"code", "message"} dicts (tolerates plain strings)."""
    out = []
    for w in (result_params or {}).get("warnings") or []:
        if isinstance(w, str):
            out.append({"code": "warning", "message": w})
        elif isinstance(w, Mapping) and "message" in w:
            out.append({"code": str(w.get("code", "warning")), "message": str(w["message"])})
    return out
