"""Which Python runs the engine: the preference, $ANIMATE_GAUSSIANS_PYTHON, an `engine-env` by the extension's user
folder, or this interpreter when it has torch; checked (torch importable) without importing torch here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import engine
from engine.errors import EngineError

ENV_PYTHON = "ANIMATE_GAUSSIANS_PYTHON"
ENGINE_ENV_DIR = "engine-env"
# The add-on's own package (this module sits in its engine_link/): the extension's id for its user folder.
ADDON_PACKAGE = __package__.rpartition(".")[0] if __package__ else "blender_addon"

SETUP_HINT = ("create it with `python build_addon.py --engine-env DIR` and set DIR's python as the engine "
              "interpreter in the add-on preferences (or export ANIMATE_GAUSSIANS_PYTHON)")
_TORCH_CHECK = ("import importlib.util as u, sys; "
                "sys.exit(0 if u.find_spec('torch') and u.find_spec('numpy') else 3)")
_torch_checked: dict[tuple[str, int], bool] = {}


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
                              "point it at the python of the engine environment; " + SETUP_HINT)
        if not python_has_torch(str(path)):
            raise EngineError(f"the engine interpreter {str(path)!r} set in {source} cannot import torch",
                              "install the engine requirements into it; " + SETUP_HINT)
        return str(path)
    for candidate in engine_env_candidates():
        if candidate.is_file() and python_has_torch(str(candidate)):
            return str(candidate)
    if sys.executable and python_has_torch(sys.executable):
        return sys.executable
    raise EngineError("no Python with torch was found to run the engine", SETUP_HINT)


def engine_pythonpath() -> str:
    """The folder holding the `engine` package this add-on imported, so the child runs the same code."""
    return str(Path(engine.__file__).resolve().parent.parent)
