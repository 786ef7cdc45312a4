"""The engine's one neighbour search (engine/neighbours.py): kNN graphs against brute force, the spacing both
ways, and the per-scene cache (memory and disk, by content hash and k; subsets apart)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import neighbours
from engine.scene_cache import LoadedScene
from engine.synthetic_scene import make_random_gaussians


def _brute_knn(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, 1)


def test_knn_graph_is_the_brute_force_graph():
    points = np.random.default_rng(0).random((300, 3))
    idx, dist = neighbours.knn_graph(points, 8)
    want_idx, want_dist = _brute_knn(points, 8)
    assert idx.dtype == np.int32 and dist.dtype == np.float32
    np.testing.assert_allclose(dist, want_dist, rtol=1e-6)
    assert (idx == want_idx).mean() > 0.999            # ties aside
    # Fewer points than k + 1: the missing neighbours are the point itself, at distance inf.
    idx, dist = neighbours.knn_graph(points[:3], 4)
    assert idx.shape == (3, 4) and (idx[:, 2:] == np.arange(3)[:, None]).all() and np.isinf(dist[:, 2:]).all()
    assert neighbours.knn_graph(points[:0], 4)[0].shape == (0, 4)


def test_nearest_and_spacing():
    rng = np.random.default_rng(1)
    points, queries = rng.random((200, 3)), rng.random((20, 3))
    idx, dist = neighbours.nearest(points, queries, 3)
    d = np.linalg.norm(queries[:, None] - points[None], axis=-1)
    np.testing.assert_allclose(dist, np.sort(d, 1)[:, :3])
    assert (idx[:, 0] == d.argmin(1)).all()
    want = float(np.median(_brute_knn(points, 1)[1]))
    knn, _ = neighbours.knn_graph(points, 4)
    assert np.isclose(neighbours.median_spacing(points), want)
    assert np.isclose(neighbours.median_spacing(points, knn), want)


def test_scene_graph_is_cached_by_scene_and_k(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path))
    g = make_random_gaussians(500, sh_degree=0, seed=4)
    scene = LoadedScene(tmp_path / "scene.ply", "ab" * 32, g)
    first = neighbours.scene_knn(scene, 8)
    assert neighbours.scene_knn(scene, 8) is first                          # from memory
    assert neighbours.scene_knn(scene, 4)[0].shape == (500, 4)             # another k, another graph
    assert (tmp_path / "scenes" / ("ab" * 32) / "knn_8.npz").is_file()
    again = LoadedScene(scene.path, scene.hash, g)                         # a restart: from disk
    build = neighbours.knn_graph
    monkeypatch.setattr(neighbours, "knn_graph", lambda *a: (_ for _ in ()).throw(AssertionError("rebuilt")))
    idx, dist = neighbours.scene_knn(again, 8)
    assert np.array_equal(idx, first[0]) and np.array_equal(dist, first[1])
    # The whole scene takes the scene's graph; a subset gets its own, kept per subset.
    assert neighbours.subset_knn(g.means, 8, scene=again) is neighbours.scene_knn(again, 8)
    monkeypatch.setattr(neighbours, "knn_graph", build)
    subset = np.arange(0, 500, 2)
    sub = neighbours.subset_knn(g.means[subset], 8, scene=again, indices=subset)
    assert sub[0].shape == (250, 8) and sub[0].max() < 250
    assert neighbours.subset_knn(g.means[subset], 8, scene=again, indices=subset) is sub


def test_moving_graph_updates_where_things_moved_and_equals_a_full_search():
    import torch

    from engine.neighbours import MovingNeighbours, knn_graph

    rng = np.random.default_rng(4)
    means = rng.random((3000, 3))
    ball = np.flatnonzero(np.linalg.norm(means - 0.5, axis=1) < 0.2)       # an object inside the scene
    nb = MovingNeighbours(8)
    nb.at(torch.from_numpy(means))
    for step in range(1, 6):   # it rolls through the still points around it, then out of the box
        moved = means.copy()
        moved[ball] += np.array([0.12, 0.0, 0.03]) * step
        got = nb.at(torch.from_numpy(moved)).numpy()
        want, want_dist = knn_graph(moved, 8)
        dist = np.linalg.norm(moved[got] - moved[:, None], axis=-1)
        np.testing.assert_allclose(dist, want_dist, rtol=1e-5)          # the same distances: an exact graph
        assert (got == want).mean() > 0.999                            # and the same neighbours (ties aside)
    assert nb.builds == 6 and nb._still is not None                    # updates, not full searches


def test_grid_search_is_the_tree_graph():
    """grid_knn (the GPU's search, run here on the CPU) gives the k-d tree's graph: on uniform points, on
    dense clumps with far strays (cells doubled, then the brute-force rest) and on a surface."""
    import torch

    rng = np.random.default_rng(2)
    surface = rng.standard_normal((2000, 3))
    cases = {"uniform": rng.random((2000, 3)),
             "clumps": np.concatenate([rng.normal(c, 0.01, (600, 3)) for c in rng.random((3, 3))]
                                      + [rng.random((20, 3)) * 10]),
             "sphere": surface / np.linalg.norm(surface, axis=1, keepdims=True)}
    for name, points in cases.items():
        want_idx, want_dist = neighbours.knn_graph(points, 8, device="cpu")
        idx, dist = neighbours.grid_knn(torch.from_numpy(points), 8)
        np.testing.assert_allclose(dist.numpy(), want_dist, rtol=1e-6, err_msg=name)
        assert (idx.numpy() == want_idx).mean() > 0.999, name                 # ties aside


@pytest.mark.gpu
def test_knn_graph_on_the_gpu_is_the_tree_graph():
    points = np.random.default_rng(3).random((200_000, 3))
    want_idx, want_dist = neighbours.knn_graph(points, 16, device="cpu")
    idx, dist = neighbours.knn_graph(points, 16)                       # "auto": CUDA at this size
    assert idx.dtype == np.int32 and dist.dtype == np.float32
    np.testing.assert_allclose(dist, want_dist, rtol=1e-6)
    assert (idx == want_idx).mean() > 0.999
