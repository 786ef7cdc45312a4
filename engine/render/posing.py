"""Posing a render request's Gaussians frame by frame without touching the ones that did not move.

Gaussians are rendered in the frame of one reference object, the largest, as long as its matrix is a
rotation, a translation and one uniform scale: its motion goes into the camera (viewmat @ matrix, its scale
divided out, with near, far and the depth scaled to match), so its Gaussians are never transformed at all. Every
other object is drawn with its matrix relative to the reference, and its rows are transformed (SH rotated
along, cuda_ext.transform_gaussians) into a posed copy only on frames where that relative matrix changes.
Every frame's matrices are inverted and packed once per request on the host, so a frame costs no host
round trip (no .item(), no per-frame upload). A camera-only animation, or one object moving on its own,
renders the Gaussians as loaded, which is what raw gsplat is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class DeviceGaussians:
    """All objects' Gaussians concatenated on one device, in their file (object-local) frames."""

    means: torch.Tensor          # (N, 3)
    quats: torch.Tensor          # (N, 4) wxyz as stored
    log_scales: torch.Tensor     # (N, 3)
    sh_dc: torch.Tensor          # (N, 1, 3)
    sh_rest: torch.Tensor        # (N, K, 3)
    opacities: torch.Tensor      # (N,) in [0, 1]
    object_index: torch.Tensor   # (N,) int32 into the request's objects
    sh_degree: int
    counts: tuple[int, ...] | None = None   # Gaussians per object (rows are in object order)

    @property
    def count(self) -> int:
        return int(self.means.shape[0])

    def object_counts(self, objects: int) -> np.ndarray:
        """(objects,) Gaussians per object, without a host round trip when the loader recorded them."""
        if self.counts is not None:
            return np.asarray(self.counts, np.int64)
        return np.bincount(self.object_index.cpu().numpy(), minlength=objects)


# How far a relative matrix may drift before its object's rows are transformed again (entries, scene units).
UNCHANGED_ATOL = 1e-9


def is_rigid(matrices: np.ndarray, atol: float = 1e-5) -> np.ndarray:
    """(...,) bool: affine (..., 4, 4) matrices whose linear part is a rotation (no scale, no mirror)."""
    a = np.asarray(matrices, np.float64)[..., :3, :3]
    orthonormal = np.abs(np.swapaxes(a, -1, -2) @ a - np.eye(3)).max(axis=(-2, -1)) <= atol
    return orthonormal & (np.linalg.det(a) > 0)


def uniform_scale(matrices: np.ndarray, atol: float = 1e-5) -> np.ndarray:
    """(...,) s of affine (..., 4, 4) matrices whose linear part is s times a rotation (s > 0, no mirror, the
    same scale on every axis), NaN for any other."""
    a = np.asarray(matrices, np.float64)[..., :3, :3]
    det = np.linalg.det(a)
    s = np.cbrt(np.where(det > 0, det, 1.0))
    return np.where((det > 0) & is_rigid(a / s[..., None, None], atol), s, np.nan)


class ScenePoser:
    """(means, quats, scales, sh, viewmat) per frame index for render_gaussians, from Gaussians in their file
    frames, (F, O, 4, 4) object matrices and (F, 4, 4) viewmats."""

    def __init__(self, g: "DeviceGaussians", object_matrices: np.ndarray, viewmats: np.ndarray) -> None:
        from cuda_ext import pack_object_parameters

        mats = np.asarray(object_matrices, np.float64)
        frames, count = mats.shape[:2]
        self.g = g
        rows = np.concatenate([[0], np.cumsum(g.object_counts(count))]).astype(int)
        self._rows = [(int(rows[j]), int(rows[j + 1])) for j in range(count)]
        # The reference: the object with the most Gaussians, if it stays a rotation, a translation and one
        # uniform scale (else the world frame). Its scale s goes into the camera as well: the scene around
        # the camera scaled by 1/s projects to the same image, footprints included, at 1/s the depth, which
        # `depth_scale` gives back.
        self.reference = int(np.argmax(rows[1:] - rows[:-1])) if count else 0
        scale = uniform_scale(mats[:, self.reference]) if count else np.full(frames, np.nan)
        if np.isfinite(scale).all():
            reference = mats[:, self.reference]
        else:
            self.reference = -1
            reference = np.broadcast_to(np.eye(4), (frames, 4, 4))
            scale = np.ones(frames)
        self._depth_scale = scale
        device = g.means.device
        views = np.asarray(viewmats, np.float64) @ reference
        views[:, :3] /= scale[:, None, None]
        self._views = torch.from_numpy(views.astype(np.float32)).to(device)
        self._relative = np.linalg.inv(reference)[:, None] @ mats                        # (F, O, 4, 4)
        self._moving = [j for j in range(count) if j != self.reference]
        self._params = None
        if self._moving:
            packed = pack_object_parameters(self._relative[:, self._moving].reshape(-1, 4, 4))
            self._params = torch.from_numpy(packed.reshape(frames, len(self._moving), -1)).to(device)
        # The Gaussians as loaded (the reference's rows never change), and a posed copy made on first need.
        with torch.no_grad():
            self._rest = (g.means, g.quats, torch.exp(g.log_scales), torch.cat([g.sh_dc, g.sh_rest], dim=1))
        # Per moving object and frame, which run of equal matrices the frame is in, and whether its matrix is
        # the identity: a frame's pose compares two ints instead of two matrices (host time is frame time).
        rel = self._relative[:, self._moving]                                           # (F, M, 4, 4)
        changed = np.zeros(rel.shape[:2], bool)
        changed[1:] = (np.abs(rel[1:] - rel[:-1]) > UNCHANGED_ATOL).any(axis=(-2, -1))
        self._version = np.cumsum(changed, axis=0)                                    # (F, M)
        self._identity = (np.abs(rel - np.eye(4)) <= UNCHANGED_ATOL).all(axis=(-2, -1))  # (F, M)
        self._posed: list[torch.Tensor] | None = None
        self._applied: dict[int, int] = {}             # object -> the run of matrices its posed rows hold
        self._zeros: dict[int, torch.Tensor] = {}
        self.transforms = 0                             # objects' rows transformed so far (tests, benchmarks)

    def depth_scale(self, frame: int) -> float:
        """What frame index `frame`'s view is scaled by: render it with near and far divided by this and
        multiply the depth it gives by it (1.0 unless the reference object is scaled)."""
        return float(self._depth_scale[frame])

    def pose(self, frame: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The Gaussians and the viewmat to render frame index `frame` with (see `depth_scale`)."""
        for k, j in enumerate(self._moving):
            held, version = self._applied.get(j), int(self._version[frame, k])
            if held is None and self._identity[frame, k]:
                continue                                  # still where its file puts it
            if held == version:
                continue
            self._transform_rows(j, self._params[frame, k:k + 1])
            self._applied[j] = version
        return (*(self._posed if self._posed is not None else self._rest), self._views[frame])

    @torch.no_grad()
    def _transform_rows(self, j: int, params: torch.Tensor) -> None:
        from cuda_ext import transform_gaussians_packed

        if self._posed is None:
            self._posed = [t.clone() for t in self._rest]
        start, end = self._rows[j]
        if end == start:
            return
        g = self.g
        rows = slice(start, end)
        if j not in self._zeros:     # every row of the slice takes the one packed matrix given
            self._zeros[j] = torch.zeros(end - start, dtype=torch.int32, device=g.means.device)
        means, quats, log_scales, sh_rest = transform_gaussians_packed(
            g.means[rows], g.quats[rows], g.log_scales[rows], g.sh_rest[rows], self._zeros[j], params)
        posed_means, posed_quats, posed_scales, posed_sh = self._posed
        posed_means[rows] = means
        posed_quats[rows] = quats
        posed_scales[rows] = torch.exp(log_scales)
        posed_sh[rows, 1:] = sh_rest
        self.transforms += 1
