"""The engine's rasterizer backend (gsplat / torch CUDA / torch CPU, and the device), as its hello said it.

The engine works it out without importing torch (engine/backend_probe.py). Here the add-on records a lesser
path as a notice (the panel and the batch report show it: never silent) and draws the backend in the panel;
engine_client.current_backend() gives the running engine's. Pure Python apart from the panel's layout call.
"""

from __future__ import annotations

from typing import Any, Mapping

from engine.backend_probe import summary

from .. import notices

SOURCE = "engine"     # the notices source of warnings the engine gives at start


def from_hello(hello: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """{"rasterizer", "device"} of a hello; None for an engine too old to say."""
    backend = (hello or {}).get("backend")
    if not isinstance(backend, Mapping):
        return None
    return {"rasterizer": backend.get("rasterizer"), "device": backend.get("device")}


def record(hello: Mapping[str, Any] | None) -> str | None:
    """File the hello's backend warning as a notice; returns its message (None when the backend is the best)."""
    backend = (hello or {}).get("backend")
    warning = backend.get("warning") if isinstance(backend, Mapping) else None
    if not isinstance(warning, Mapping) or not warning.get("message"):
        return None
    notices.add(SOURCE, str(warning.get("code", "")), str(warning["message"]))
    return str(warning["message"])


def draw(layout, backend: Mapping[str, Any] | None) -> None:
    """One line in the main panel, "Engine: gsplat on NVIDIA H200", for the backend engine_client.current_backend()
    gives once the engine has started (nothing before)."""
    if backend is not None:
        icon = "CHECKMARK" if backend["rasterizer"] == "gsplat" else "INFO"
        layout.label(text=f"Engine: {summary(backend)}", icon=icon)
