"""3D noise clean-up of a selection: connected components of the selected Gaussians on a voxel grid (26-
neighbourhood), keeping the component(s) that hold the seed(s), else the large ones. Vectorised (no loop
per Gaussian): voxel keys are sorted once and neighbours found by binary search."""

from __future__ import annotations

import numpy as np

# Voxel edge, in multiples of the selection's median nearest-neighbour spacing.
VOXEL_SPACINGS = 3.0
# Without seeds, components smaller than this fraction of the largest are dropped as floaters.
MIN_COMPONENT_FRACTION = 0.1


def voxel_components(points: np.ndarray, voxel: float) -> np.ndarray:
    """(M,) component id of each point: points in touching voxels (26-neighbourhood) share one."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    cells = np.floor(points / voxel).astype(np.int64)
    cells -= cells.min(0)
    dims = cells.max(0) + 3
    keys = ((cells[:, 0] + 1) * dims[1] + cells[:, 1] + 1) * dims[2] + cells[:, 2] + 1
    uniq, point_voxel = np.unique(keys, return_inverse=True)
    rows, cols = [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                if (dx, dy, dz) <= (0, 0, 0):   # each neighbour pair once
                    continue
                other = uniq + (dx * dims[1] + dy) * dims[2] + dz
                pos = np.searchsorted(uniq, other)
                hit = (pos < len(uniq)) & (uniq[np.minimum(pos, len(uniq) - 1)] == other)
                rows.append(np.nonzero(hit)[0])
                cols.append(pos[hit])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(uniq), len(uniq)))
    _, voxel_comp = connected_components(graph, directed=False)
    return voxel_comp[point_voxel]


def voxel_size(points: np.ndarray, knn: np.ndarray | None = None) -> float:
    """The voxel edge for `points`: VOXEL_SPACINGS of their median nearest-neighbour spacing (from their kNN
    graph when given)."""
    from ..neighbours import median_spacing

    return VOXEL_SPACINGS * max(median_spacing(points, knn), 1e-9)


def keep_connected(means: np.ndarray, mask: np.ndarray, seeds=None, voxel: float | None = None,
                   min_fraction: float = MIN_COMPONENT_FRACTION) -> np.ndarray:
    """The selection `mask` (N,) bool without its floaters: the components holding any selected seed, else
    those at least `min_fraction` the size of the largest. `voxel` defaults to a few point spacings."""
    mask = np.asarray(mask, bool)
    sel = np.nonzero(mask)[0]
    if sel.size < 2:
        return mask.copy()
    points = np.asarray(means, np.float64)[sel]
    comp = voxel_components(points, voxel_size(points) if voxel is None else voxel)
    sizes = np.bincount(comp)
    keep = np.zeros(len(sizes), bool)
    if seeds is not None:
        where = np.full(len(mask), -1)
        where[sel] = np.arange(sel.size)
        seed_rows = where[np.asarray(seeds, np.int64)]
        keep[comp[seed_rows[seed_rows >= 0]]] = True
    if not keep.any():
        keep = sizes >= min_fraction * sizes.max()
    out = np.zeros_like(mask)
    out[sel[keep[comp]]] = True
    return out
