"""Where the project's data files (presets/: motion presets, model profiles) are: the repository's folder in a
checkout, the copy build_addon.py puts inside the engine package when it is installed as a wheel."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def presets_dir() -> Path:
    checkout = _HERE.parent / "presets"
    return checkout if checkout.is_dir() else _HERE / "presets"
