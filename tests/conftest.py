"""Shared fixtures: the repo on sys.path, the `gpu` marker's skip, synthetic scenes, the shared real capture."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED_DATA = ROOT.parent / "shared" / "data"
REAL_PLY = SHARED_DATA / "real_small_sh3.ply"


HAS_TORCH = importlib.util.find_spec("torch") is not None


def pytest_ignore_collect(collection_path, config):
    """Without torch (the bpy-only venvs of the other Blender versions, `make test-bpy-versions`) collect only
    the files that hold Blender-side tests; the full suite runs in .venv. Those tests start the engine with
    $ANIMATE_GAUSSIANS_PYTHON (tests/engine_python.py)."""
    if HAS_TORCH or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    return True if "pytest.mark.blender" not in collection_path.read_text() else None


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: run on the device machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def real_ply() -> Path:
    if not REAL_PLY.exists():
        pytest.skip(f"real capture not found at {REAL_PLY}")
    return REAL_PLY


@pytest.fixture(scope="session")
def primitives_scene():
    from engine.synthetic_scene import make_primitives_scene
    return make_primitives_scene(gaussians_per_object=1500, sh_degree=3, seed=0)


@pytest.fixture(scope="session")
def primitives_ply(tmp_path_factory, primitives_scene) -> Path:
    path = tmp_path_factory.mktemp("scenes") / "primitives.ply"
    return primitives_scene.write(path)
