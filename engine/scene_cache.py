"""Scenes the engine has loaded, and where per-scene results live on disk.

A scene is keyed by the sha256 of its .ply content, so anything computed for it (masks, features) is found
again after a rename or a restart (`path_for`). Loaded scenes stay in memory (LRU by path + mtime + size),
so repeated requests on the same file neither re-read nor re-hash it. numpy only.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from engine.errors import InputFileError
from engine.formats import read_scene
from engine.ply import GaussianArrays

CACHE_ENV = "ANIMATE_GAUSSIANS_CACHE"
MAX_LOADED_SCENES = 3
_HASH_CHUNK = 8 << 20


def cache_dir() -> Path:
    """The root of the on-disk cache: $ANIMATE_GAUSSIANS_CACHE, else ~/.cache/animate_gaussians."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "animate_gaussians"


def path_for(scene_hash: str, name: str) -> Path:
    """Where the per-scene artefact `name` of the scene with this content hash lives (its folder is created)."""
    if not scene_hash or any(c not in "0123456789abcdef" for c in scene_hash):
        raise ValueError(f"not a scene hash: {scene_hash!r}")
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"artefact name {name!r} must be a relative path inside the scene's folder")
    path = cache_dir() / "scenes" / scene_hash / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _file_key(path: Path) -> tuple[str, int, int]:
    try:
        st = (path / "meta.json").stat() if path.is_dir() else path.stat()   # a SOG folder: its meta.json
    except OSError as exc:
        raise InputFileError(f"cannot read scene file {str(path)!r}: {exc.strerror or exc}") from None
    return str(path), st.st_mtime_ns, st.st_size


def content_hash(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes (hex), streamed in large chunks; of a folder (a SOG), its files' names and
    bytes in name order."""
    digest = hashlib.sha256()
    path = Path(path)
    try:
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        buffer = bytearray(_HASH_CHUNK)
        view = memoryview(buffer)
        for file in files:
            if path.is_dir():
                digest.update(file.name.encode() + b"\0")
            with open(file, "rb") as f:
                while n := f.readinto(buffer):
                    digest.update(view[:n])
    except OSError as exc:
        raise InputFileError(f"cannot read scene file {str(path)!r}: {exc.strerror or exc}") from None
    return digest.hexdigest()


class LoadedScene:
    """One .ply as the engine holds it: its Gaussians (file frame), content hash, and derived data in memory.

    The hash is taken on first use (segmentation and the 4D query key their disk cache by it; a render never
    needs it), from the file as it was loaded: if the file changed since, asking for it is an error.
    """

    def __init__(self, path: Path, hash: str | None, gaussians: GaussianArrays,
                 derived: dict[str, Any] | None = None, file_key: tuple[str, int, int] | None = None) -> None:
        self.path = path
        self.gaussians = gaussians
        self.derived: dict[str, Any] = {} if derived is None else derived
        self._hash = hash
        self._file_key = file_key
        self._hash_lock = threading.Lock()

    @property
    def hash(self) -> str:
        with self._hash_lock:
            if self._hash is None:
                digest = content_hash(self.path)
                if self._file_key is not None and _file_key(self.path) != self._file_key:
                    raise InputFileError(f"the scene file {str(self.path)!r} changed while the engine was using it",
                                         hint="run the step again: the engine reloads the file")
                self._hash = digest
            return self._hash

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """In-memory per-scene data (e.g. device tensors), made once per loaded scene."""
        if key not in self.derived:
            self.derived[key] = make()
        return self.derived[key]

    def artefact_path(self, name: str) -> Path:
        return path_for(self.hash, name)


_loaded: OrderedDict[tuple[str, int, int], LoadedScene] = OrderedDict()
_lock = threading.Lock()


def load_scene(path: str | os.PathLike, max_loaded: int = MAX_LOADED_SCENES) -> LoadedScene:
    """The scene at `path`, from memory when the file is unchanged since it was loaded."""
    resolved = Path(path).expanduser().resolve()
    key = _file_key(resolved)
    with _lock:
        scene = _loaded.get(key)
        if scene is not None:
            _loaded.move_to_end(key)
            return scene
    # Any format the add-on imports (engine.formats), in the file's own frame: the add-on's object matrices
    # carry the frame change (.spz's RUB), so the values must stay as stored.
    scene = LoadedScene(resolved, None, read_scene(resolved).gaussians, file_key=key)
    with _lock:
        for old in [k for k in _loaded if k[0] == key[0]]:  # an older version of the same file
            del _loaded[old]
        _loaded[key] = scene
        while len(_loaded) > max(1, max_loaded):
            _loaded.popitem(last=False)
    return scene


def clear_loaded() -> None:
    """Forget the scenes held in memory (the on-disk cache stays)."""
    with _lock:
        _loaded.clear()
