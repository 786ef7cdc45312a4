"""Two processes share one on-disk scene cache: artefacts are written under a name unique to the writer and
moved into place at once (engine/atomic_files.py), so concurrent writers and readers of the same artefact never
see a partial or mixed file, and no temporary file is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from engine.atomic_files import atomic_write, partial_path
from engine.synthetic_scene import make_random_gaussians
from engine.ply import write_gaussians

ROOT = Path(__file__).resolve().parents[1]

# Each worker, in its own engine-code process, rebuilds the scene's kNN cache artefact again and again (removing
# it first so the write path runs every time) and reads it back from disk, counting what it could not read whole.
_WORKER = textwrap.dedent("""
    import sys, zipfile
    import numpy as np
    from engine import scene_cache
    from engine.neighbours import scene_knn
    ply, rounds = sys.argv[1], int(sys.argv[2])
    loaded = scene_cache.load_scene(ply)
    bad = 0
    for _ in range(rounds):
        scene = scene_cache.LoadedScene(loaded.path, loaded.hash, loaded.gaussians)   # nothing in memory
        path = scene.artefact_path("knn_16.npz")
        path.unlink(missing_ok=True)
        idx, dist = scene_knn(scene)
        try:
            with np.load(path) as data:
                ok = np.array_equal(data["indices"], idx) and np.array_equal(data["distances"], dist)
        except FileNotFoundError:      # the other worker removed it in between: not a damaged file
            ok = True
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            ok = False
        bad += not ok
    print(bad)
""")


def test_two_engine_processes_share_one_cache_dir(tmp_path):
    ply = tmp_path / "scene.ply"
    write_gaussians(ply, make_random_gaussians(8_000, sh_degree=0, seed=2))
    cache = tmp_path / "cache"
    env = {**os.environ, "ANIMATE_GAUSSIANS_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, str(ply), "25"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
        assert out.strip() == "0", f"damaged cache reads: {out}"
    files = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert files == ["knn_16.npz"], files            # no partial file left behind


def test_concurrent_writers_never_share_a_partial_file(tmp_path):
    target = tmp_path / "a" / "artefact.npz"
    first, second = partial_path(target), partial_path(target)
    assert first != second and first.parent == target.parent and first.name.endswith(".partial.npz")
    with atomic_write(target) as tmp:
        np.savez(tmp, x=np.arange(3))
    with np.load(target) as data:
        assert data["x"].tolist() == [0, 1, 2]
    try:
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("the writer failed")
    except RuntimeError:
        pass
    with np.load(target) as data:                   # the old file is untouched, the partial one gone
        assert data["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([first.name, second.name, "artefact.npz"])
