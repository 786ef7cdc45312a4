"""Contribution-weighted lifting of pixel-aligned features onto Gaussians: each Gaussian gets the average of the
features of the pixels it was composited into, weighted by its compositing weight (alpha × transmittance).

Σ_p w_gp·G_p is exactly the gradient of Σ_p ⟨F_p, G_p⟩ with respect to Gaussian g's feature when F is a
rendered feature image, so one backward pass of the differentiable feature rasterizer (gsplat on CUDA, the
torch rasterizer on CPU) lifts a whole feature image; a constant channel gives the weight sum Σ_p w_gp.
"""

from __future__ import annotations

import torch

from ..render.rasterizer import render_gaussians


def lift_feature_image(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                       viewmat: torch.Tensor, K: torch.Tensor, pixel_features: torch.Tensor,
                       backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_p w_gp·F_p (N, D), Σ_p w_gp (N,)) for a (H, W, D) feature image seen from this camera."""
    H, W, D = pixel_features.shape
    n = means.shape[0]
    probe = torch.zeros((n, D + 1), device=means.device, dtype=torch.float32, requires_grad=True)
    colors = torch.zeros((n, 3), device=means.device)
    with torch.enable_grad():
        out = render_gaussians(means.detach(), quats.detach(), scales.detach(), opacities.detach(), colors,
                               viewmat, K, W, H, features=probe, backend=backend)
        target = torch.cat([pixel_features.float(), pixel_features.new_ones((H, W, 1)).float()], dim=-1)
        (grad,) = torch.autograd.grad((out.features * target).sum(), probe)
    return grad[:, :D], grad[:, D]
