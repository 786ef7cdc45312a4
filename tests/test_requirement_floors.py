"""requirements.txt's floors cover what the code calls: every model profile's pipeline class exists in the
installed diffusers and its __call__ takes the arguments the profile passes, and the floor is at least the
release those came in (a floor below it installs a diffusers the engine cannot run)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

diffusers = pytest.importorskip("diffusers")
from packaging.version import Version  # noqa: E402

from engine.motion.model_profiles import load_profiles  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The diffusers release that first has each thing the engine uses (diffusers' release notes).
SINCE = {"WanImageToVideoPipeline": "0.33.0", "LTXConditionPipeline": "0.33.0", "last_image": "0.34.0",
         "CogVideoXImageToVideoPipeline": "0.30.0", "StableVideoDiffusionPipeline": "0.24.0",
         "MarigoldDepthPipeline": "0.28.0"}


def _floor(package: str) -> Version:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(rf"^{re.escape(package)}\s*>=\s*([0-9][0-9.]*)", line.strip(), re.IGNORECASE)
        if m:
            return Version(m.group(1))
    raise AssertionError(f"requirements.txt has no floor for {package}")


def _used() -> dict[str, set[str]]:
    """Pipeline class → the call arguments the profiles pass it."""
    from engine.motion.generators.diffusers_i2v import call_arguments

    used: dict[str, set[str]] = {}
    for profile in load_profiles().values():
        args = set(profile.get("call_options") or {})
        if profile.get("last_frame_argument") not in (None, "conditions"):
            args.add(profile["last_frame_argument"])
        used.setdefault(profile["pipeline"], set()).update(args)
    assert call_arguments   # the function that builds the calls is the one these profiles feed
    return used


def test_the_installed_diffusers_has_what_the_profiles_call():
    for cls_name, args in _used().items():
        cls = getattr(diffusers, cls_name, None)
        assert cls is not None, f"diffusers {diffusers.__version__} has no {cls_name}"
        parameters = inspect.signature(cls.__call__).parameters
        missing = args - set(parameters)
        assert not missing, f"{cls_name}.__call__ takes no {sorted(missing)}"


def test_the_floor_is_the_release_that_has_them():
    floor = _floor("diffusers")
    needed = max(Version(SINCE[name]) for name in (*_used(), *[a for s in _used().values() for a in s])
                 if name in SINCE)
    needed = max(needed, Version(SINCE["MarigoldDepthPipeline"]))
    assert floor >= needed, f"requirements.txt says diffusers>={floor}, the code needs {needed}"
    assert Version(diffusers.__version__) >= floor
