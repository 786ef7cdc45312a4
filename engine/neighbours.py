"""Nearest neighbours of Gaussian centres, the one k-d tree search of the engine: a scene's kNN graph (built
once per scene and k, kept in memory and on disk by the scene's hash), the graph of a subset or of a moving
sequence, and the nearest of one point set to another. Used by segmentation (region growing, label smoothing
and propagation, clean-up, SAGA) and by the 4D feature field."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .atomic_files import atomic_write

if TYPE_CHECKING:
    import torch

DEFAULT_K = 16
# Points whose nearest-neighbour distances estimate a selection's spacing (enough for a stable median).
SPACING_SAMPLE = 20000


def nearest(points: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices (Q, k) into `points`, distances (Q, k)) of each query's k nearest points, nearest first (scipy
    cKDTree; k ≤ len(points))."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(np.asarray(points, np.float64)).query(np.asarray(queries, np.float64), k=k, workers=-1)
    return idx.reshape(len(queries), k), dist.reshape(len(queries), k)


def knn_graph(means: np.ndarray, k: int = DEFAULT_K) -> tuple[np.ndarray, np.ndarray]:
    """(indices (N, k) int32, distances (N, k) float32) of each centre's k nearest other centres.

    Fewer than k+1 points: missing neighbours point at the point itself with distance inf.
    """
    means = np.asarray(means, np.float64)
    n = len(means)
    if n == 0:
        return np.zeros((0, k), np.int32), np.zeros((0, k), np.float32)
    idx, dist = nearest(means, means, min(k + 1, n))
    dist, idx = dist[:, 1:], idx[:, 1:]   # drop the point itself
    if idx.shape[1] < k:
        pad = k - idx.shape[1]
        idx = np.concatenate([idx, np.repeat(np.arange(n)[:, None], pad, 1)], 1)
        dist = np.concatenate([dist, np.full((n, pad), np.inf)], 1)
    return idx.astype(np.int32), dist.astype(np.float32)


def median_spacing(points: np.ndarray, knn: np.ndarray | None = None) -> float:
    """The median distance from a point to its nearest other point: from the kNN graph `knn` (N, k) when the
    caller has one, else searched for an even sample of up to SPACING_SAMPLE points (a selection of millions
    needs no more for its median)."""
    points = np.asarray(points, np.float64)
    if knn is not None:
        return float(np.median(np.linalg.norm(points - points[np.asarray(knn)[:, 0]], axis=1)))
    sample = points[np.linspace(0, len(points) - 1, min(len(points), SPACING_SAMPLE)).astype(int)]
    _, dist = nearest(points, sample, 2)    # the first is the sample point itself
    return float(np.median(dist[:, 1]))


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
    one built for the subset (objects made by segmentation are subsets of their .ply), kept in memory."""
    if scene is not None and indices is None:
        return scene_knn(scene, k)
    if scene is not None:
        key = f"knn_{k}_subset_{hash(np.asarray(indices).tobytes())}"
        return scene.cached(key, lambda: knn_graph(means, k))
    return knn_graph(means, k)


class MovingNeighbours:
    """The kNN graph of Gaussians that move (a sequence's timesteps), rebuilt only when some Gaussian has
    moved further than the typical neighbour distance since the last build (a k-d tree over every Gaussian
    costs seconds at 300k)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.built_at: np.ndarray | None = None
        self.index: torch.Tensor | None = None
        self.reach = 0.0
        self.builds = 0

    def at(self, means: torch.Tensor) -> torch.Tensor:
        """(N, k) int64 neighbour indices on the device of `means`."""
        import torch

        m = means.detach().float().cpu().numpy()
        if self.built_at is None or np.abs(m - self.built_at).max() > self.reach:
            idx, dist = knn_graph(m, self.k)
            finite = dist[np.isfinite(dist)]
            self.reach = float(np.median(finite)) if len(finite) else 0.0
            self.built_at, self.builds = m, self.builds + 1
            self.index = torch.from_numpy(idx.astype(np.int64)).to(means.device)
        return self.index
