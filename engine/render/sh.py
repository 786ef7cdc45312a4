"""Real spherical harmonics of degree 0-3 in the 3DGS basis (INRIA / gsplat order and signs), in torch.

Colour of a Gaussian seen along unit direction d = max(Σ_k coeff_k · Y_k(d) + 0.5, 0), with d pointing
from the camera centre to the Gaussian. engine/gaussian_transform.py rotates coefficients in this same basis.
"""

from __future__ import annotations

import torch

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
         0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def sh_degree_from_bases(count: int) -> int:
    for degree in range(4):
        if count == num_sh_bases(degree):
            return degree
    raise ValueError(f"{count} SH coefficients per channel is not (d+1)^2 for a degree d in 0..3")


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """The (d+1)² basis values (..., K) at unit directions `dirs` (..., 3). Built without in-place writes,
    so gradients flow to `dirs`."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be 0..3, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        out += [SH_C2[0] * xy,
                SH_C2[1] * yz,
                SH_C2[2] * (2.0 * zz - xx - yy),
                SH_C2[3] * xz,
                SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3.0 * xx - yy),
                SH_C3[1] * xy * z,
                SH_C3[2] * y * (4.0 * zz - xx - yy),
                SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
                SH_C3[4] * x * (4.0 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy),
                SH_C3[6] * x * (xx - 3.0 * yy)]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Σ_k coeffs[..., k, :] · Y_k(dirs) for the first (degree+1)² coefficients; `dirs` need not be unit.

    Returns the raw value (..., C) without the +0.5 offset; see `sh_to_color`.
    """
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(f"SH degree {degree} needs {k} coefficients, got {coeffs.shape[-2]}")
    unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(degree, unit)
    return (basis[..., None] * coeffs[..., :k, :]).sum(dim=-2)


def sh_to_color(degree: int, coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Colour as 3DGS and gsplat compute it: max(eval_sh + 0.5, 0) (no upper clamp)."""
    return torch.clamp_min(eval_sh(degree, coeffs, dirs) + 0.5, 0.0)
