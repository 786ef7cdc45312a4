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
# From this many points a graph is searched on the GPU when there is one (a k-d tree over a million points
# takes seconds even on many cores); below, the tree is quick and CUDA need not start.
GPU_MIN_POINTS = 100_000
# grid_knn: rounds of the grid search (the cell doubling each) before the last points are searched against all,
# elements (query × candidate) per chunk of a search, and the sample that sets the first cell size.
GRID_ROUNDS = 4
SEARCH_ELEMENTS = 1 << 23
GRID_SAMPLE = 1024
# Points whose nearest-neighbour distances estimate a selection's spacing (enough for a stable median).
SPACING_SAMPLE = 20000


def nearest(points: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices (Q, k) into `points`, distances (Q, k)) of each query's k nearest points, nearest first (scipy
    cKDTree; k ≤ len(points))."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(np.asarray(points, np.float64)).query(np.asarray(queries, np.float64), k=k, workers=-1)
    return idx.reshape(len(queries), k), dist.reshape(len(queries), k)


def knn_graph(means: np.ndarray, k: int = DEFAULT_K, device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(indices (N, k) int32, distances (N, k) float32) of each centre's k nearest other centres: the k-d tree
    on the CPU, or grid_knn on CUDA for GPU_MIN_POINTS points or more (device "auto": when CUDA is here;
    "cuda"/"cpu" force one). Both give the same graph, ties aside.

    Fewer than k+1 points: missing neighbours point at the point itself with distance inf.
    """
    means = np.asarray(means, np.float64)
    n = len(means)
    if n == 0:
        return np.zeros((0, k), np.int32), np.zeros((0, k), np.float32)
    if n > k and _on_gpu(n, device):
        import torch

        idx, dist = grid_knn(torch.from_numpy(means).to("cuda" if device == "auto" else device), k)
        return idx.cpu().numpy().astype(np.int32), dist.cpu().numpy().astype(np.float32)
    idx, dist = nearest(means, means, min(k + 1, n))
    dist, idx = dist[:, 1:], idx[:, 1:]   # drop the point itself
    if idx.shape[1] < k:
        pad = k - idx.shape[1]
        idx = np.concatenate([idx, np.repeat(np.arange(n)[:, None], pad, 1)], 1)
        dist = np.concatenate([dist, np.full((n, pad), np.inf)], 1)
    return idx.astype(np.int32), dist.astype(np.float32)


def _on_gpu(n: int, device: str) -> bool:
    if device == "cpu":
        return False
    if device != "auto":
        return True
    if n < GPU_MIN_POINTS:
        return False
    import torch

    return torch.cuda.is_available()


def grid_knn(points: "torch.Tensor", k: int, cell: float | None = None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(indices (N, k) int64, distances (N, k) float64) of each point's k nearest other points, exact, on the
    points' device (the GPU's answer to the k-d tree). Points are binned in a grid of cell h; a point's k
    nearest among the 3×3×3 cells around its own are its true k nearest when the k-th is nearer than h
    (everything outside those cells is at least h away). Points not settled so are searched again with h
    doubled, GRID_ROUNDS times, then against all points. Distances in float64, as the tree's. `cell`: the
    first cell size (grid_cell's), for a caller that searches points of the same spacing again and again."""
    import torch

    p = points.double()
    n = len(p)
    idx = torch.empty((n, k), dtype=torch.long, device=p.device)
    d2 = torch.empty((n, k), dtype=torch.float64, device=p.device)
    todo = torch.arange(n, device=p.device)
    cell = grid_cell(p, k) if cell is None else max(cell, _smallest_cell(p))
    for _ in range(GRID_ROUNDS):
        found, found_d2, settled = _grid_search(p, todo, k, cell)
        idx[todo[settled]], d2[todo[settled]] = found[settled], found_d2[settled]
        todo = todo[~settled]
        if todo.numel() == 0:
            break
        cell *= 2.0
    for chunk in torch.split(todo, max(1, SEARCH_ELEMENTS // n)):     # the rest: against every point
        all_d2 = ((p[chunk, None] - p[None]) ** 2).sum(-1)
        all_d2[torch.arange(len(chunk), device=p.device), chunk] = float("inf")
        d2[chunk], idx[chunk] = torch.topk(all_d2, k, dim=1, largest=False, sorted=True)
    return idx, d2.sqrt()


def grid_cell(p: "torch.Tensor", k: int) -> float:
    """A first cell size: the k-th neighbour distance most sample points have (brute force on a sample), but
    never so small that the grid's cell keys would overflow."""
    import torch

    sample = p[torch.linspace(0, len(p) - 1, min(len(p), GRID_SAMPLE), device=p.device).long()]
    kth = []
    for chunk in torch.split(sample, max(1, SEARCH_ELEMENTS // len(p))):
        kth.append(torch.topk(((chunk[:, None] - p[None]) ** 2).sum(-1), k + 1, dim=1, largest=False).values[:, -1])
    cell = float(torch.quantile(torch.cat(kth).sqrt(), 0.9))
    return max(cell, _smallest_cell(p))


def _smallest_cell(p: "torch.Tensor") -> float:
    """The smallest cell whose keys cannot overflow: a millionth of the points' extent."""
    return max(float((p.max(0).values - p.min(0).values).max()) / 1e6, 1e-12)


def _grid_search(p: "torch.Tensor", queries: "torch.Tensor", k: int, cell: float
                 ) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """(indices (Q, k), squared distances (Q, k), settled (Q,)) of the queries' k nearest among the 27 grid
    cells around each; settled where the k-th is nearer than `cell`. The search itself is cuda_ext.grid_knn:
    its kernel on CUDA (one thread per query), its torch reference elsewhere."""
    import torch

    import cuda_ext

    device = p.device
    ijk = torch.floor((p - p.min(0).values) / cell).long() + 1      # + 1: a free layer for the offsets
    dims = ijk.max(0).values + 2
    key = (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2]
    order = torch.argsort(key)
    cells, counts = torch.unique_consecutive(key[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    steps = torch.tensor([-1, 0, 1], device=device)
    offsets = ((steps[:, None, None] * dims[1] + steps[None, :, None]) * dims[2] + steps[None, None, :]).reshape(-1)
    by_cell = torch.argsort(key[queries])       # neighbours read the same cells: one warp, or one chunk's padding
    queries = queries[by_cell]
    out_idx, out_d2 = cuda_ext.grid_knn(p[order], order, cells, starts, counts, offsets, p[queries], key[queries],
                                        queries, k)
    back = torch.empty_like(by_cell)
    back[by_cell] = torch.arange(len(by_cell), device=device)     # the caller's order
    out_idx, out_d2 = out_idx[back], out_d2[back]
    return out_idx, out_d2, out_d2[:, -1] < cell * cell


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
    """The kNN graph of Gaussians that move (a sequence's timesteps), updated only when some Gaussian has
    moved further than the typical neighbour distance since the last update.

    A sequence's motion is mostly a few objects over a still scene, so an update searches only where the
    answer can have changed: the Gaussians that moved since the first graph (against a k-d tree of the still
    ones, kept, and one of the moved ones) and the still ones close enough to the moved ones' bounding box
    that one of them could be nearer than their k-th still neighbour. The result is the exact kNN graph of
    the current positions; a full search (seconds at 300k Gaussians) runs only when most Gaussians move.

    With the positions on a GPU that runs our kernels, every update is instead a whole grid_knn search there
    (its cell kept from the first): 24 ms an update at 300k Gaussians on the H200, grid set-up included,
    against 125 ms for the tree update on its 16 cores, and the same graph, ties aside."""

    # A Gaussian counts as moved once it is this fraction of the neighbour distance from its first position.
    MOVED = 1e-3

    def __init__(self, k: int) -> None:
        self.k = k
        self.built_at: np.ndarray | None = None
        self.first: np.ndarray | None = None
        self.index: torch.Tensor | None = None
        self.reach = 0.0
        self.builds = 0
        self._still: tuple | None = None    # (moved mask bytes, still ids, their tree, their graph, k-th dist)
        self._cell: float | None = None      # grid_knn's cell, on the GPU

    def at(self, means: torch.Tensor) -> torch.Tensor:
        """(N, k) int64 neighbour indices on the device of `means`."""
        import torch

        import cuda_ext

        # Only on our kernel: grid_knn's torch reference is slower than the k-d tree update.
        if means.is_cuda and len(means) > self.k and cuda_ext.available():
            return self._at_on_gpu(means.detach().double())
        m = means.detach().float().cpu().numpy().astype(np.float64)
        if self.built_at is not None and np.abs(m - self.built_at).max() <= self.reach:
            return self.index
        moved = None
        if self.first is not None:
            moved = np.abs(m - self.first).max(1) > self.MOVED * self.reach
        if moved is None or moved.mean() > 0.5 or moved.sum() <= self.k or (~moved).sum() <= self.k:
            idx, dist = knn_graph(m, self.k)
            finite = dist[np.isfinite(dist)]
            if self.first is None:
                self.reach = float(np.median(finite)) if len(finite) else 0.0
                self.first = m
        else:
            idx = self._update(m, moved)
        self.built_at, self.builds = m, self.builds + 1
        self.index = torch.from_numpy(idx.astype(np.int64)).to(means.device)
        return self.index

    def _at_on_gpu(self, m: "torch.Tensor") -> "torch.Tensor":
        import torch

        if self.built_at is not None and float((m - self.built_at).abs().max()) <= self.reach:
            return self.index
        if self._cell is None:
            self._cell = grid_cell(m, self.k)
        idx, dist = grid_knn(m, self.k, self._cell)
        if self.built_at is None:
            finite = dist[torch.isfinite(dist)]
            self.reach = float(finite.median()) if finite.numel() else 0.0
        self.built_at, self.builds, self.index = m, self.builds + 1, idx
        return idx

    def _update(self, m: np.ndarray, moved: np.ndarray) -> np.ndarray:
        from scipy.spatial import cKDTree

        k = self.k
        key = moved.tobytes()
        if self._still is None or self._still[0] != key:
            still = np.flatnonzero(~moved)
            tree = cKDTree(m[still])
            dist, idx = tree.query(m[still], k=k + 1, workers=-1)
            self._still = (key, still, tree, still[idx[:, 1:]], dist[:, 1:])
        _, still, still_tree, still_idx, still_dist = self._still
        movers = np.flatnonzero(moved)
        mover_tree = cKDTree(m[movers])
        out = np.empty((len(m), k), np.int64)
        # Moved Gaussians: the nearest among the moved ones (itself dropped), and among the still ones for
        # those with a still Gaussian nearer than their k-th moved neighbour. (A k-nearest search far from
        # the still points visits much of their tree: an object in the air costs seconds. The one-nearest
        # search within a bound prunes at once.)
        d_m, i_m = mover_tree.query(m[movers], k=k + 1, workers=-1)
        d_m, i_m = d_m[:, 1:], movers[i_m[:, 1:]]
        d_1, _ = still_tree.query(m[movers], k=1, distance_upper_bound=float(d_m[:, -1].max()), workers=-1)
        out[movers] = i_m
        touching = np.flatnonzero(d_1 < d_m[:, -1])
        if len(touching):
            d_s, i_s = still_tree.query(m[movers[touching]], k=k, workers=-1)
            out[movers[touching]] = _k_nearest(np.concatenate([d_s, d_m[touching]], 1),
                                               np.concatenate([still[i_s], i_m[touching]], 1), k)
        # Still Gaussians: their still neighbours, unless a moved one can be nearer than the k-th of those
        # (the distance to the moved ones' bounding box bounds the distance to any of them from below).
        out[still] = still_idx
        lo, hi = m[movers].min(0), m[movers].max(0)
        gap = np.linalg.norm(np.maximum(np.maximum(lo - m[still], m[still] - hi), 0.0), axis=1)
        near = np.flatnonzero(gap < still_dist[:, -1])
        if len(near):
            d_n, i_n = mover_tree.query(m[still[near]], k=k, workers=-1)
            out[still[near]] = _k_nearest(np.concatenate([still_dist[near], d_n], 1),
                                          np.concatenate([still_idx[near], movers[i_n]], 1), k)
        return out


def _k_nearest(dist: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """Per row, the k indices of the smallest distances, nearest first."""
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(idx, order, 1)
