"""Offline selection (no model weights): region growing over the Gaussians' kNN graph by position and colour,
from a clicked Gaussian or from what a box shows; the granularity slider is the growth tolerance.

Growing from a seed with tolerance t reaches exactly the Gaussians joined to it by a chain of edges no
dissimilar than t, which is its connected component in the graph's minimum spanning tree cut at t. So the
tree is built once per scene (rooted, as parent pointers) and a query is a pointer-jumping pass (log depth
gathers, on the GPU when there is one): a click or a slider move costs milliseconds, not a graph search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Tolerance at granularity 0 and 1: colour distance (RGB in [0, 1]) plus the spatial-gap penalty below.
TOLERANCE_RANGE = (0.03, 0.8)
# Cost of a spatial gap, per local point spacing beyond GAP_FREE spacings.
GAP_COST = 0.05
GAP_FREE = 1.5
# A box selects the components of which at least this fraction of Gaussians project inside it.
BOX_INSIDE_FRACTION = 0.6


@dataclass
class RegionTree:
    """The minimum spanning forest of the kNN graph, rooted: each Gaussian's parent and the edge's weight
    (inf at roots, so no tolerance joins two trees)."""

    parent: np.ndarray         # (N,) int64
    parent_weight: np.ndarray  # (N,) float32
    _device_cache: dict | None = None

    def on(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """(parent, parent_weight) as tensors on `device`, kept for later queries."""
        if self._device_cache is None:
            self._device_cache = {}
        key = str(torch.device(device))
        if key not in self._device_cache:
            self._device_cache[key] = (torch.from_numpy(self.parent).to(device),
                                       torch.from_numpy(self.parent_weight).to(device))
        return self._device_cache[key]


def granularity_tolerance(granularity: float) -> float:
    """Slider 0..1 (fine part .. whole object) → growth tolerance, log-spaced so both ends are usable."""
    g = float(np.clip(granularity, 0.0, 1.0))
    lo, hi = TOLERANCE_RANGE
    return lo * (hi / lo) ** g


def edge_weights(means: np.ndarray, rgb: np.ndarray, knn: np.ndarray, knn_dist: np.ndarray) -> np.ndarray:
    """(N, k) dissimilarity of each kNN edge: colour distance plus a cost for gaps wider than the local
    spacing (a hole between two surfaces of one colour still separates them)."""
    spacing = np.median(knn_dist, axis=1).astype(np.float32)
    local = 0.5 * (spacing[:, None] + spacing[knn])
    gap = np.maximum(knn_dist / np.maximum(local, 1e-12) - GAP_FREE, 0.0)
    colour = np.linalg.norm(rgb[:, None, :] - rgb[knn], axis=-1)
    return (colour + GAP_COST * gap).astype(np.float32)


def build_region_tree(means: np.ndarray, rgb: np.ndarray, knn: np.ndarray, knn_dist: np.ndarray) -> RegionTree:
    """Minimum spanning forest of the kNN graph under edge_weights, rooted by a breadth-first pass."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree

    n, k = knn.shape
    w = edge_weights(means, rgb, knn, knn_dist)
    rows = np.repeat(np.arange(n), k)
    cols = knn.ravel().astype(np.int64)
    ok = (rows != cols) & np.isfinite(w.ravel())
    # Zero weights would be read as missing edges by scipy's sparse graphs: keep them just above zero.
    graph = coo_matrix((w.ravel()[ok] + 1e-6, (rows[ok], cols[ok])), shape=(n, n)).tocsr()
    mst = minimum_spanning_tree(graph)
    mst = (mst + mst.T).tocsr()
    # A virtual root above one node of each tree makes the forest one tree for a single breadth-first pass.
    count, comp = connected_components(mst, directed=False)
    reps = np.unique(comp, return_index=True)[1]
    m, top = mst.tocoo(), np.full(count, n)
    full = coo_matrix((np.r_[m.data, np.ones(2 * count)], (np.r_[m.row, top, reps], np.r_[m.col, reps, top])),
                      shape=(n + 1, n + 1)).tocsr()
    _, pred = breadth_first_order(full, n, directed=False, return_predecessors=True)
    pred = pred[:n].astype(np.int64)
    parent = np.where((pred < 0) | (pred == n), np.arange(n), pred)
    weight = np.asarray(mst[np.arange(n), parent]).ravel().astype(np.float32)
    weight[parent == np.arange(n)] = np.inf
    return RegionTree(parent, weight)


def component_roots(tree: RegionTree, tolerance: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N,) for each Gaussian the root of its component in the tree cut at `tolerance` (pointer jumping)."""
    parent, weight = tree.on(device)
    n = parent.shape[0]
    p = torch.where(weight <= tolerance, parent, torch.arange(n, device=parent.device))
    while True:
        for _ in range(4):   # check for convergence only every few jumps (each check syncs the GPU)
            p = p[p]
        if bool((p[p] == p).all()):
            return p


def grow_from_seeds(tree: RegionTree, seeds, tolerance: float, device: torch.device | str = "cpu") -> np.ndarray:
    """(N,) bool: the Gaussians within `tolerance` (chained) of any seed index."""
    roots = component_roots(tree, tolerance, device)
    seeds = torch.as_tensor(np.atleast_1d(np.asarray(seeds, np.int64)), device=roots.device)
    if seeds.numel() == 0:
        return np.zeros(roots.shape[0], bool)
    return torch.isin(roots, roots[seeds]).cpu().numpy()


def box_components(tree: RegionTree, tolerance: float, visible: np.ndarray, inside: np.ndarray,
                   device: torch.device | str = "cpu", inside_fraction: float = BOX_INSIDE_FRACTION) -> np.ndarray:
    """(N,) bool: the components (tree cut at `tolerance`) that the box shows (a visible Gaussian in it) and
    that lie mostly inside it (at least `inside_fraction` of their centres project into the box), so the
    ground or a wall around an object is left out while the object's hidden back comes with it."""
    roots = component_roots(tree, tolerance, device).cpu().numpy()
    n = len(roots)
    size = np.bincount(roots, minlength=n)
    n_inside = np.bincount(roots, weights=inside.astype(np.float64), minlength=n)
    shown = np.zeros(n, bool)
    shown[roots[visible]] = True
    chosen = shown & (n_inside >= inside_fraction * np.maximum(size, 1))
    return chosen[roots]
