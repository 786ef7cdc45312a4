"""Nearest-neighbour graph of a scene's Gaussian centres, shared by region growing, label propagation and
clean-up; built once per scene (scipy cKDTree) and kept in memory and on disk by the scene's hash."""

from __future__ import annotations

import numpy as np

from ..atomic_files import atomic_write

DEFAULT_K = 16


def knn_graph(means: np.ndarray, k: int = DEFAULT_K) -> tuple[np.ndarray, np.ndarray]:
    """(indices (N, k) int32, distances (N, k) float32) of each centre's k nearest other centres.

    Fewer than k+1 points: missing neighbours point at the point itself with distance inf.
    """
    from scipy.spatial import cKDTree

    means = np.asarray(means, np.float64)
    n = len(means)
    if n == 0:
        return np.zeros((0, k), np.int32), np.zeros((0, k), np.float32)
    tree = cKDTree(means)
    dist, idx = tree.query(means, k=min(k + 1, n), workers=-1)
    dist, idx = np.atleast_2d(dist)[:, 1:], np.atleast_2d(idx)[:, 1:]   # drop the point itself
    if idx.shape[1] < k:
        pad = k - idx.shape[1]
        idx = np.concatenate([idx, np.repeat(np.arange(n)[:, None], pad, 1)], 1)
        dist = np.concatenate([dist, np.full((n, pad), np.inf)], 1)
    return idx.astype(np.int32), dist.astype(np.float32)


def scene_knn(scene, k: int = DEFAULT_K) -> tuple[np.ndarray, np.ndarray]:
    """knn_graph of a LoadedScene's Gaussians: from memory, else from its on-disk cache, else built."""

    def make():
        path = scene.artefact_path(f"knn_{k}.npz")
        if path.exists():
            try:
                with np.load(path) as data:
                    if data["indices"].shape == (scene.gaussians.count, k):
                        return data["indices"], data["distances"]
            except (OSError, ValueError, KeyError):
                pass   # a damaged cache file is rebuilt
        idx, dist = knn_graph(scene.gaussians.means, k)
        with atomic_write(path) as tmp:
            np.savez(tmp, indices=idx, distances=dist)
        return idx, dist

    return scene.cached(f"knn_{k}", make)


def subset_knn(means: np.ndarray, k: int = DEFAULT_K, scene=None, indices: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The kNN graph of the Gaussians at hand: the scene's cached graph when they are the whole scene, else
    one built for the subset (objects made by segmentation are subsets of their .ply)."""
    if scene is not None and indices is None:
        return scene_knn(scene, k)
    if scene is not None:
        key = f"knn_{k}_subset_{hash(np.asarray(indices).tobytes())}"
        return scene.cached(key, lambda: knn_graph(means, k))
    return knn_graph(means, k)
