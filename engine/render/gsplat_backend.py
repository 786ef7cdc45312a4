"""The CUDA backend of `render_gaussians`: one gsplat.rasterization call in "RGB+ED" mode.

gsplat takes the same conventions as our interface (wxyz quats, linear scales, opacities in [0, 1],
world-to-camera viewmats, pixel K); features ride along as extra colour channels.
"""

from __future__ import annotations

import torch

from .output import RenderOutput


def render_gsplat(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                  colors: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                  near: float, far: float, background: torch.Tensor | None, features: torch.Tensor | None,
                  sh_degree: int | None) -> RenderOutput:
    from gsplat import rasterization, spherical_harmonics

    if colors.dim() == 3 and features is not None:
        # SH cannot share channels with features: evaluate the colour first (as gsplat would), then render
        # colour + features as plain channels.
        campos = torch.linalg.inv(viewmat)[:3, 3]
        colors = torch.clamp_min(spherical_harmonics(sh_degree, means - campos, colors) + 0.5, 0.0)
        sh_degree = None
    n_color = 3
    if colors.dim() == 3:
        channels, degree = colors, sh_degree
    else:
        n_color = colors.shape[1]
        channels = colors if features is None else torch.cat([colors, features], dim=1)
        degree = None
    # The background is composited here rather than by gsplat: gsplat 1.5.3 rejects `backgrounds` in its
    # default packed mode (a shape check written for unpacked tensors). Same formula: colour + (1 − alpha)·bg.
    render, alpha, _ = rasterization(
        means, quats, scales, opacities, channels, viewmat[None], K[None], width, height,
        near_plane=near, far_plane=far, sh_degree=degree, render_mode="RGB+ED")
    render, alpha = render[0], alpha[0, ..., 0]
    rgb = render[..., :n_color]
    if background is not None:
        rgb = rgb + (1.0 - alpha)[..., None] * background[:n_color]
    # gsplat normalises depth by alpha clamped at 1e-10, so empty pixels already read 0.
    return RenderOutput(rgb=rgb, depth=render[..., -1], alpha=alpha,
                        features=render[..., n_color:-1] if features is not None else None)


def render_gsplat_views(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                        channels: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
                        near: float = 0.01, far: float = 1e10) -> tuple[torch.Tensor, torch.Tensor]:
    """(channels (V, H, W, C), alpha (V, H, W)) of plain per-Gaussian channels (N, C) seen from V cameras in
    one gsplat call (no depth, no background): what many views of one pose cost in one launch."""
    from gsplat import rasterization

    render, alpha, _ = rasterization(means, quats, scales, opacities, channels, viewmats, Ks, width, height,
                                     near_plane=near, far_plane=far, render_mode="RGB")
    return render, alpha[..., 0]


def render_gsplat_tile(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                       channels: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                       col: int, row: int, near: float = 0.01, far: float = 1e10, tile_size: int = 16
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(channels (C,), alpha ()) at pixel (col, row) of a width × height view, from that pixel's tile alone.
    The steps are gsplat.rasterization's (packed projection at the full view, so every Gaussian's footprint
    and depth order are the whole view's), and a pixel's compositing does not depend on other channels or
    tiles, so the value is the whole render's, bit for bit, for a fraction of the work (a click needs one
    pixel). The pixel is composited by cuda_ext.composite_pixel when our kernels are built (gsplat's
    arithmetic, one block for the pixel), else by gsplat's rasterizer with every other tile masked off (a
    block for the tile's 256 pixels, running until the last is saturated: 0.8 ms on a fine-grained tile)."""
    import math

    from gsplat.cuda._wrapper import fully_fused_projection, isect_offset_encode, isect_tiles, rasterize_to_pixels

    import cuda_ext

    batch_ids, camera_ids, gaussian_ids, radii, means2d, depths, conics, _ = fully_fused_projection(
        means, None, quats, scales, viewmat[None], K[None], width, height, eps2d=0.3, packed=True,
        near_plane=near, far_plane=far, radius_clip=0.0, opacities=opacities)
    tiles_w, tiles_h = math.ceil(width / tile_size), math.ceil(height / tile_size)
    _, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, tile_size, tiles_w, tiles_h, packed=True,
                                            n_images=1, image_ids=batch_ids + camera_ids, gaussian_ids=gaussian_ids)
    offsets = isect_offset_encode(isect_ids, 1, tiles_w, tiles_h).reshape(1, tiles_h, tiles_w)
    if cuda_ext.ready():
        out = cuda_ext.composite_pixel(means2d, conics, opacities, channels, gaussian_ids, offsets, flatten_ids,
                                       (row // tile_size) * tiles_w + col // tile_size, col + 0.5, row + 0.5)
        return out[:-1], out[-1]
    mask = torch.zeros((1, tiles_h, tiles_w), dtype=torch.bool, device=means.device)
    mask[0, row // tile_size, col // tile_size] = True
    render, alpha = rasterize_to_pixels(means2d, conics, channels[gaussian_ids], opacities[gaussian_ids], width,
                                        height, tile_size, offsets, flatten_ids, masks=mask, packed=True)
    return render[0, row, col], alpha[0, row, col, 0]
