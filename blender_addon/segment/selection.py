"""A segmentation answer as data, in pure numpy (no bpy): split an object's attribute buffers by a mask, where a
segment's origin goes, its segment id, and the highlight values shown in the viewport."""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from engine.errors import AnimateGaussiansError


class SelectionError(AnimateGaussiansError):
    """The selection cannot be used as asked (empty, all of the object, or of the wrong size)."""

    hint = "segment again (click, box or text) and check the highlighted Gaussians before Apply"


def as_mask(mask: np.ndarray, count: int, what: str = "the selection") -> np.ndarray:
    """`mask` as a (count,) bool array; raises SelectionError when its size is not the object's."""
    mask = np.asarray(mask)
    if mask.shape != (count,):
        raise SelectionError(f"{what} has {mask.size} values but the object has {count} Gaussians",
                             hint="the object changed since the query: segment again")
    return mask.astype(bool) if mask.dtype != bool else mask


def check_splittable(mask: np.ndarray) -> None:
    """A split needs at least one Gaussian on each side."""
    selected = int(mask.sum())
    if selected == 0:
        raise SelectionError("nothing is selected")
    if selected == mask.size:
        raise SelectionError("every Gaussian of the object is selected, so there is nothing to split off",
                             hint="lower the granularity, or use the object as it is")


def split_buffers(buffers: Mapping[str, np.ndarray], mask: np.ndarray
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(kept, moved): each (N, ...) buffer cut into the rows where `mask` is False and where it is True.
    Every row ends up in exactly one of the two, values untouched, in their original order."""
    kept, moved = {}, {}
    for name, values in buffers.items():
        values = np.asarray(values)
        if len(values) != len(mask):
            raise SelectionError(f"attribute {name!r} has {len(values)} values, expected {len(mask)}")
        kept[name] = np.ascontiguousarray(values[~mask])
        moved[name] = np.ascontiguousarray(values[mask])
    return kept, moved


def translation(offset: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = np.asarray(offset, dtype=np.float64)
    return m


def bottom_centre(positions_file: np.ndarray, file_to_world: np.ndarray) -> np.ndarray:
    """The point (file frame) under the middle of the Gaussians' world bounding box, at its lowest world z:
    where a segment's origin goes, so it rotates and scales about where it stands."""
    m = np.asarray(file_to_world, dtype=np.float64)
    world = np.asarray(positions_file, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]
    low, high = world.min(axis=0), world.max(axis=0)
    base = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2], 1.0])
    return (np.linalg.inv(m) @ base)[:3]


def segment_frame(positions_local: np.ndarray, file_to_local: np.ndarray, file_to_world: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where a segment made of these Gaussians (positions as their object holds them) puts its origin.

    Returns (its file_to_local: a translation, its matrix_world, its positions as it holds them, float32);
    its file_to_world equals its object's, so the Gaussians stay where they are.
    """
    file_to_local = np.asarray(file_to_local, dtype=np.float64)
    local = np.asarray(positions_local, dtype=np.float64)
    to_file = np.linalg.inv(file_to_local)
    positions_file = local @ to_file[:3, :3].T + to_file[:3, 3]
    origin = bottom_centre(positions_file, file_to_world)
    new_file_to_local = translation(-origin)
    matrix_world = np.asarray(file_to_world, dtype=np.float64) @ translation(origin)
    return new_file_to_local, matrix_world, (positions_file - origin).astype(np.float32)


def next_segment_id(existing: Iterable[np.ndarray]) -> int:
    """A segment id no Gaussian of these objects (of one source .ply) has yet; 0 means "no segment"."""
    top = 0
    for ids in existing:
        ids = np.asarray(ids)
        if ids.size:
            top = max(top, int(ids.max()))
    return top + 1


def highlight_values(mask: np.ndarray) -> np.ndarray:
    """The `selection` attribute: 1 for a selected Gaussian, 0 otherwise (the display tints by it)."""
    return np.asarray(mask, dtype=bool).astype(np.float32)
