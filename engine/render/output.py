"""What a render returns, shared by the rasterizer interface and both backends (a module of its own so the
gsplat backend does not import the interface that dispatches to it)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RenderOutput:
    """One rendered view, as torch tensors on the device the Gaussians were on.

    `depth` is the expected camera z: Σ wᵢ zᵢ / Σ wᵢ over the Gaussians composited into a pixel (gsplat's
    "ED"), 0 where nothing was drawn. Its accuracy degrades where `alpha` is tiny (a faint fringe).
    `rgb` includes the background weighted by 1 − alpha; `features` never has a background.
    """

    rgb: torch.Tensor                 # (H, W, 3)
    depth: torch.Tensor               # (H, W)
    alpha: torch.Tensor               # (H, W)
    features: torch.Tensor | None     # (H, W, D)
