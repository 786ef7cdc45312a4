"""The Gaussians as both rasterizers take them (torch tensors on one device, linear scales, opacities in
[0, 1], view-independent colour), made from a scene's GaussianArrays once and reused by every render and lift."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..ply import GaussianArrays


@dataclass
class SplatTensors:
    """The Gaussians as the rasterizers take them, on one device (file frame)."""

    means: torch.Tensor      # (N, 3)
    quats: torch.Tensor      # (N, 4) wxyz
    scales: torch.Tensor     # (N, 3) linear
    opacities: torch.Tensor  # (N,) in [0, 1]
    rgb: torch.Tensor        # (N, 3) view-independent colour (SH DC)

    @property
    def count(self) -> int:
        return int(self.means.shape[0])


def splat_tensors(gaussians: GaussianArrays, device: torch.device | str = "cpu",
                  indices: np.ndarray | None = None) -> SplatTensors:
    """SplatTensors of a .ply's Gaussians, or of the subset `indices` (in that order)."""
    sel = slice(None) if indices is None else np.asarray(indices, np.int64)

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a[sel], dtype=np.float32)).to(device)

    return SplatTensors(t(gaussians.means), t(gaussians.quats_wxyz), t(np.exp(gaussians.log_scales)),
                        t(gaussians.opacities()), t(gaussians.colors()))
