"""engine.scene_cache: content-hash keys, the on-disk cache folder, the in-memory LRU of loaded scenes."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest

from engine import scene_cache
from engine.errors import InputFileError


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(scene_cache.CACHE_ENV, str(tmp_path / "cache"))
    scene_cache.clear_loaded()
    yield
    scene_cache.clear_loaded()


def test_content_hash_is_sha256_of_the_bytes(primitives_ply):
    assert scene_cache.content_hash(primitives_ply) == hashlib.sha256(primitives_ply.read_bytes()).hexdigest()


def test_path_for_lives_under_the_cache_env_and_refuses_escapes(tmp_path):
    h = "ab" * 32
    path = scene_cache.path_for(h, "masks/view_000.npy")
    assert path == tmp_path / "cache" / "scenes" / h / "masks" / "view_000.npy" and path.parent.is_dir()
    for bad_hash, name in (("../etc", "x"), ("", "x"), (h, "../x"), (h, "/abs"), (h, "")):
        with pytest.raises(ValueError):
            scene_cache.path_for(bad_hash, name)


def test_default_cache_dir_is_in_the_home_cache(monkeypatch):
    monkeypatch.delenv(scene_cache.CACHE_ENV)
    assert scene_cache.cache_dir() == scene_cache.Path.home() / ".cache" / "animate_gaussians"


def test_loaded_scenes_are_reused_until_the_file_changes(tmp_path, primitives_ply, primitives_scene):
    path = tmp_path / "scene.ply"
    shutil.copy(primitives_ply, path)
    first = scene_cache.load_scene(path)
    np.testing.assert_allclose(first.gaussians.means, primitives_scene.gaussians.means, atol=0)
    assert scene_cache.load_scene(str(path)) is first  # no reload, no re-hash
    assert first.cached("tensors", lambda: [1]) is first.cached("tensors", lambda: [2])
    copy = tmp_path / "renamed.ply"
    shutil.copy(path, copy)
    assert scene_cache.load_scene(copy).hash == first.hash  # same content, same cache key
    with open(path, "r+b") as f:  # change one float of the last Gaussian
        f.seek(-4, os.SEEK_END)
        f.write(np.float32(0.123).tobytes())
    changed = scene_cache.load_scene(path)
    assert changed is not first and changed.hash != first.hash


def test_lru_keeps_at_most_max_loaded(tmp_path, primitives_ply):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"s{i}.ply")
        shutil.copy(primitives_ply, paths[-1])
    scenes = [scene_cache.load_scene(p, max_loaded=2) for p in paths]
    assert scene_cache.load_scene(paths[2], max_loaded=2) is scenes[2]
    assert scene_cache.load_scene(paths[0], max_loaded=2) is not scenes[0]  # evicted, loaded again


def test_missing_scene_is_an_input_file_error(tmp_path):
    with pytest.raises(InputFileError, match="missing.ply"):
        scene_cache.load_scene(tmp_path / "missing.ply")


def test_the_hash_is_taken_when_asked_from_the_file_as_loaded(tmp_path, primitives_ply):
    path = tmp_path / "late.ply"
    shutil.copy(primitives_ply, path)
    scene = scene_cache.load_scene(path)       # a render loads without hashing the file
    with open(path, "r+b") as f:               # the file changes before anything asks for its hash
        f.seek(-4, os.SEEK_END)
        f.write(np.float32(0.5).tobytes())
    st = path.stat()                           # a later mtime, whatever the file system's clock granularity
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(InputFileError, match="changed while the engine was using it"):
        scene.hash
    assert scene_cache.load_scene(path).hash == scene_cache.content_hash(path)   # reloaded: the new content
