"""A rendered view as Blender's render result holds it: scene-linear, premultiplied RGBA and a Depth pass, rows
from the bottom. The engine converts on its device so Blender copies the arrays as they come (F12, viewport).
"""

from __future__ import annotations

import torch

# What Blender's Depth (Z) pass holds where nothing was drawn (Cycles and EEVEE write the same).
EMPTY_DEPTH = 1.0e10


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function inverted (IEC 61966-2-1): what Blender's Standard view undoes on display."""
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function: srgb_to_linear's inverse (what Blender's Standard view applies)."""
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def blender_pixels(rgb: torch.Tensor, alpha: torch.Tensor, depth: torch.Tensor, transparent: bool
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(combined (H, W, 4), depth (H, W)) float32, bottom row first, from the rasterizer's output.

    The splats' colours are display-referred (sRGB, as trained), composited in that space; Blender's
    Combined pass is scene-linear with premultiplied alpha. So the straight colour goes through the inverse
    sRGB curve and is premultiplied again: with the Standard view transform Blender's saved image equals the
    engine's own PNG. An opaque film (`transparent` False: `rgb` holds the background) has alpha 1.
    Depth is the camera z the rasterizer composited (the Z pass's convention), EMPTY_DEPTH where alpha is 0.
    """
    a = alpha.clamp(0, 1)
    if transparent:
        straight = (rgb / a.clamp_min(1e-6)[..., None]).clamp(0, 1)
        combined = torch.cat([srgb_to_linear(straight) * a[..., None], a[..., None]], dim=-1)
    else:
        combined = torch.cat([srgb_to_linear(rgb.clamp(0, 1)), torch.ones_like(a)[..., None]], dim=-1)
    z = torch.where(alpha > 0, depth, torch.full_like(depth, EMPTY_DEPTH))
    return combined.flip(0).float().contiguous(), z.flip(0).float().contiguous()
