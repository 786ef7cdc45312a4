"""The image-to-video model profiles (presets/models/*.json) as data: read them, name one by a short id.

Torch-free, so the add-on's panel and the batch command line list and check models without the engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Type

from ..data_files import presets_dir
from ..errors import AnimateGaussiansError

PROFILES_DIR = presets_dir() / "models"
# What the add-on and the batch ask for when the user names no model: it takes a first and a last frame and
# runs on a 24 GB GPU (the Wan 2.1 14B profiles need about 80 GB, or offloading).
DEFAULT_24GB_MODEL = "ltx-video-0.9.5"


class UnknownModelError(AnimateGaussiansError):
    """A video model name that matches no profile."""

    hint = "choose one of the ids of presets/models"


def load_profiles(folder: Path = PROFILES_DIR) -> dict[str, dict]:
    """Every model profile, by id."""
    profiles = {}
    for path in sorted(folder.glob("*.json")):
        profile = json.loads(path.read_text())
        profiles[profile["id"]] = profile
    return profiles


def resolve_model_id(name: str, profiles: dict[str, dict] | None = None,
                     error: Type[AnimateGaussiansError] = UnknownModelError) -> str:
    """The profile id `name` stands for: itself, or the one id it starts (`ltx` → `ltx-video-0.9.5`)."""
    profiles = load_profiles() if profiles is None else profiles
    key = name.strip().lower()
    if key in profiles:
        return key
    matches = sorted(pid for pid in profiles if pid.startswith(key))
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(sorted(profiles))
    if matches:
        raise error(f"the model name {name!r} is ambiguous: {', '.join(matches)}", hint=f"give one of: {known}")
    raise error(f"unknown video model {name!r}", hint=f"choose one of: {known}")
