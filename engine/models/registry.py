"""The one registry of model weights the engine can use, and how they reach the disk.

An entry names where the weights come from (a URL or a Hugging Face hub repo), their size, licence and
sha256. `fetch` finds them in the cache (or at a path the user gave through $ANIMATE_GAUSSIANS_MODEL_<ID>),
else downloads them with progress, checks the checksum and moves them into place atomically. With
downloads off ($ANIMATE_GAUSSIANS_OFFLINE=1, or `allow_download=False`) a missing model raises
ModelUnavailableError saying where to put the file. Tests build tiny random models in code instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..atomic_files import partial_path
from ..errors import AnimateGaussiansError

MODELS_ENV = "ANIMATE_GAUSSIANS_MODELS"
OFFLINE_ENV = "ANIMATE_GAUSSIANS_OFFLINE"
_CHUNK = 1 << 20

Progress = Callable[[float, str], None]


class ModelUnavailableError(AnimateGaussiansError):
    """A model's weights are not on this machine and cannot be fetched now."""

    hint = "download the weights once with a network connection, or set the model's path in the environment"


@dataclass(frozen=True)
class ModelEntry:
    """One set of weights. `source` is "url" (one file at `location`) or "hf" (a hub repo at `location`,
    `revision` pinned; `filename` optional: the whole snapshot when empty)."""

    id: str
    kind: str                 # "sam", "clip", "depth", "image_to_video", "video_text", ...
    source: str               # "url" | "hf"
    location: str             # URL or hub repo id
    size_bytes: int
    licence: str
    description: str
    sha256: str = ""          # of the file ("url"), empty where the hub's own hashes are trusted ("hf")
    filename: str = ""
    revision: str = "main"

    @property
    def env_var(self) -> str:
        """The environment variable that points at a local copy of the weights."""
        return "ANIMATE_GAUSSIANS_MODEL_" + "".join(c if c.isalnum() else "_" for c in self.id).upper()


REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    """Add an entry (each id once); the stage modules register their models when imported."""
    if entry.source not in ("url", "hf"):
        raise ValueError(f"model {entry.id!r}: source must be 'url' or 'hf', got {entry.source!r}")
    existing = REGISTRY.get(entry.id)
    if existing is not None and existing != entry:
        raise ValueError(f"model id {entry.id!r} is registered twice with different entries")
    REGISTRY[entry.id] = entry
    return entry


def model_entry(model_id: str) -> ModelEntry:
    try:
        return REGISTRY[model_id]
    except KeyError:
        raise ModelUnavailableError(f"unknown model {model_id!r} (known: {', '.join(sorted(REGISTRY)) or 'none'})",
                                    hint="choose one of the known models") from None


def models_dir() -> Path:
    """Where weights are cached: $ANIMATE_GAUSSIANS_MODELS, else the engine cache's models/ folder."""
    root = os.environ.get(MODELS_ENV)
    if root:
        return Path(root).expanduser()
    from ..scene_cache import cache_dir
    return cache_dir() / "models"


def _cached_path(entry: ModelEntry) -> Path:
    if entry.source == "url":
        name = entry.filename or entry.location.rstrip("/").rsplit("/", 1)[-1]
        return models_dir() / entry.id / name
    return models_dir() / entry.id / "snapshot"


def local_path(entry: ModelEntry) -> Path | None:
    """The weights on this machine (user-given path first, then the cache), or None."""
    given = os.environ.get(entry.env_var)
    if given:
        path = Path(given).expanduser()
        if not path.exists():
            raise ModelUnavailableError(f"{entry.env_var} points at {path}, which does not exist",
                                        hint=f"fix or unset {entry.env_var}")
        return path
    path = _cached_path(entry)
    if entry.source == "hf":
        return path if (path / ".complete").exists() else None
    return path if path.is_file() else None


def is_available(model_id: str) -> bool:
    """True when the model's weights are on this machine (no download is tried)."""
    return local_path(model_entry(model_id)) is not None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _download_url(entry: ModelEntry, target: Path, progress: Progress | None, timeout: float) -> None:
    partial = partial_path(target)   # unique: two engines fetching the same model never share it
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(entry.location, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or entry.size_bytes or 0)
            done = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None and total:
                    progress(min(done / total, 1.0), f"downloading {entry.id}: {done >> 20} of {total >> 20} MB")
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ModelUnavailableError(f"cannot download {entry.id} from {entry.location}: {exc}",
                                    hint=f"check the network, or download it yourself and set {entry.env_var}") from exc
    if entry.sha256 and digest.hexdigest() != entry.sha256:
        partial.unlink(missing_ok=True)
        raise ModelUnavailableError(f"the download of {entry.id} is corrupt (sha256 {digest.hexdigest()[:12]}…, "
                                    f"expected {entry.sha256[:12]}…)", hint="try again; the partial file was removed")
    os.replace(partial, target)


def _download_hf(entry: ModelEntry, target: Path, progress: Progress | None) -> None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelUnavailableError(f"{entry.id} comes from the Hugging Face hub, but huggingface_hub is missing",
                                    hint="pip install huggingface_hub in the engine environment") from exc
    if progress is not None:
        progress(0.0, f"downloading {entry.id} from the Hugging Face hub ({entry.size_bytes >> 20} MB)")
    staging = target.with_name(target.name + ".partial")
    try:
        snapshot_download(repo_id=entry.location, revision=entry.revision, local_dir=str(staging),
                          allow_patterns=[entry.filename] if entry.filename else None)
    except Exception as exc:  # noqa: BLE001 - the hub raises many types; all mean "not fetched"
        raise ModelUnavailableError(f"cannot download {entry.id} ({entry.location}): {exc}",
                                    hint=f"check the network, or download it yourself and set {entry.env_var}") from exc
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    (target / ".complete").touch()
    if progress is not None:
        progress(1.0, f"{entry.id} downloaded")


def fetch(model_id: str, progress: Progress | None = None, allow_download: bool | None = None,
          timeout: float = 60.0) -> Path:
    """The local path of a model's weights (a file for "url" entries, a folder for "hf"), downloading them
    into the cache first when allowed."""
    entry = model_entry(model_id)
    path = local_path(entry)
    if path is not None:
        return path
    if allow_download is None:
        allow_download = os.environ.get(OFFLINE_ENV, "") in ("", "0")
    target = _cached_path(entry)
    if not allow_download:
        raise ModelUnavailableError(f"{entry.id} ({entry.description}, {entry.size_bytes >> 20} MB) is not on this "
                                    "machine and downloads are off",
                                    hint=f"put it at {target} or set {entry.env_var} to its path")
    if entry.source == "url":
        _download_url(entry, target, progress, timeout)
    else:
        _download_hf(entry, target, progress)
    return target


def status(kind: str | None = None) -> list[dict]:
    """Each registered model (of one kind, if given) with whether it is on this machine; for panels/reports."""
    rows = []
    for entry in sorted(REGISTRY.values(), key=lambda e: e.id):
        if kind is not None and entry.kind != kind:
            continue
        try:
            present = local_path(entry) is not None
        except ModelUnavailableError:
            present = False
        rows.append({"id": entry.id, "kind": entry.kind, "available": present, "size_mb": entry.size_bytes >> 20,
                     "description": entry.description, "env_var": entry.env_var})
    return rows
