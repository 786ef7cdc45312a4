"""Pure-torch 3D Gaussian splat rasterizer that follows gsplat 1.5's rules, so its images match the CUDA path.

Projection (EWA, 0.3 px low-pass, near/far and opacity-aware 3-sigma culling), 16×16 tile binning sorted by
depth, and front-to-back compositing of batches of tiles with a cumulative product (no per-pixel loop), a
depth chunk at a time so saturated tiles stop early. No in-place updates of differentiable tensors, so
gradients flow to every input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

TILE = 16
EPS2D = 0.3
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4
SIGMA_CUTOFF = 20.0
# Gaussians per tile composited in one step before saturated tiles are dropped.
CHUNK = 32
# Elements (tiles × pixels × Gaussians) composited at once: bounds the batch's memory to tens of MB.
BATCH_ELEMENTS = 1 << 21


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """(N, 4) wxyz quaternions (any norm) -> (N, 3, 3) rotation matrices."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(quats.shape[:-1] + (3, 3))


@dataclass
class Projected:
    """Per-Gaussian screen-space quantities of the visible Gaussians (index into the input in `ids`)."""

    ids: torch.Tensor        # (M,) int64
    means2d: torch.Tensor    # (M, 2) pixels
    conics: torch.Tensor     # (M, 3) inverse 2-D covariance (a, b, c): a·dx² + 2b·dx·dy + c·dy²
    depths: torch.Tensor     # (M,) camera z
    opacities: torch.Tensor  # (M,)
    radii: torch.Tensor      # (M, 2) int64 pixels (not differentiable)


def project_gaussians(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor,
                      opacities: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, width: int,
                      height: int, near: float, far: float) -> Projected:
    """EWA projection as gsplat's fully fused projection, keeping only Gaussians it would rasterize."""
    R_view, t_view = viewmat[:3, :3], viewmat[:3, 3]
    means_c = means @ R_view.T + t_view
    z = means_c[:, 2]
    keep = (z >= near) & (z <= far) & (opacities >= ALPHA_THRESHOLD)
    ids = torch.nonzero(keep).squeeze(1)
    means_c, z = means_c[ids], z[ids]
    M = quat_to_rotmat(quats[ids]) * scales[ids][:, None, :]
    cov_c = R_view @ (M @ M.transpose(1, 2)) @ R_view.T

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # Clamp the Jacobian's evaluation point to 1.3× the field of view, as gsplat does, so Gaussians far
    # outside the frame do not get huge footprints.
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    rz = 1.0 / z
    tx = z * torch.minimum(torch.maximum(means_c[:, 0] * rz, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(means_c[:, 1] * rz, -lim_y_neg), lim_y_pos)
    zeros = torch.zeros_like(z)
    J = torch.stack([fx * rz, zeros, -fx * tx * rz * rz,
                     zeros, fy * rz, -fy * ty * rz * rz], dim=-1).reshape(-1, 2, 3)
    cov2d = J @ cov_c @ J.transpose(1, 2)
    a = cov2d[:, 0, 0] + EPS2D
    b = 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0])
    c = cov2d[:, 1, 1] + EPS2D
    det = a * c - b * b
    means2d = torch.stack([fx * means_c[:, 0] * rz + cx, fy * means_c[:, 1] * rz + cy], dim=-1)
    opac = opacities[ids]

    with torch.no_grad():
        extend = torch.clamp(torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)),
                             max=3.33)
        rx = torch.ceil(extend * torch.sqrt(a.clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.clamp_min(0)))
        mx, my = means2d[:, 0], means2d[:, 1]
        visible = (det > 0) & ((rx > 0) | (ry > 0)) & (mx + rx > 0) & (mx - rx < width) & \
            (my + ry > 0) & (my - ry < height)
        sel = torch.nonzero(visible).squeeze(1)
    safe_det = det[sel]
    conics = torch.stack([c[sel] / safe_det, -b[sel] / safe_det, a[sel] / safe_det], dim=-1)
    return Projected(ids=ids[sel], means2d=means2d[sel], conics=conics, depths=z[sel], opacities=opac[sel],
                     radii=torch.stack([rx[sel], ry[sel]], dim=-1).long())


def bin_tiles(proj: Projected, tiles_x: int, tiles_y: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tile-Gaussian intersections sorted by tile, then depth (front to back), as gsplat's isect_tiles.

    Returns (gaussian index into `proj` per intersection, first intersection of each tile, count per tile).
    """
    with torch.no_grad():
        m = proj.means2d.detach() / TILE
        r = proj.radii.to(m.dtype) / TILE
        x0 = torch.floor(m[:, 0] - r[:, 0]).clamp(0, tiles_x).long()
        x1 = torch.ceil(m[:, 0] + r[:, 0]).clamp(0, tiles_x).long()
        y0 = torch.floor(m[:, 1] - r[:, 1]).clamp(0, tiles_y).long()
        y1 = torch.ceil(m[:, 1] + r[:, 1]).clamp(0, tiles_y).long()
        w, h = (x1 - x0).clamp_min(0), (y1 - y0).clamp_min(0)
        counts = w * h
        n_tiles = tiles_x * tiles_y
        device = counts.device
        gauss = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
        if gauss.numel() == 0:
            zeros = torch.zeros(n_tiles, dtype=torch.long, device=device)
            return gauss, zeros, zeros
        first = torch.cumsum(counts, 0) - counts
        local = torch.arange(gauss.numel(), device=device) - first[gauss]
        tile_x = x0[gauss] + local % w[gauss]
        tile_y = y0[gauss] + local // w[gauss]
        tile = tile_y * tiles_x + tile_x
        depth_rank = torch.empty_like(counts)
        depth_rank[torch.argsort(proj.depths.detach(), stable=True)] = torch.arange(len(counts), device=device)
        order = torch.argsort(tile * len(counts) + depth_rank[gauss])
        gauss, tile = gauss[order], tile[order]
        per_tile = torch.bincount(tile, minlength=n_tiles)
        starts = torch.cumsum(per_tile, 0) - per_tile
    return gauss, starts, per_tile


def _tile_batches(per_tile: torch.Tensor) -> list[torch.Tensor]:
    """Non-empty tiles grouped by similar list length, each group within the element budget."""
    nonempty = torch.nonzero(per_tile > 0).squeeze(1)
    if nonempty.numel() == 0:
        return []
    nonempty = nonempty[torch.argsort(per_tile[nonempty])]
    counts = per_tile[nonempty].tolist()
    batches, start = [], 0
    while start < len(counts):
        end = start + 1
        # Sorted ascending, so the last tile in a batch sets its padded (chunk) length.
        while end < len(counts) and (end + 1 - start) * min(counts[end], CHUNK) * TILE * TILE <= BATCH_ELEMENTS:
            end += 1
        batches.append(nonempty[start:end])
        start = end
    return batches


def composite_weights(proj: Projected, width: int, height: int
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The weight alpha × transmittance of every Gaussian in every pixel it is composited into, chunk by chunk
    of the tiles' depth-sorted lists: the one compositing rule that composite (forward), accumulate (its
    transpose) and weight_triplets (the weights themselves) read.

    gsplat's per-pixel rule: alpha = min(0.999, o·exp(-½ dᵀ Σ⁻¹ d)) with d from the pixel centre; Gaussians
    with alpha < 1/255 are skipped; the pixel stops before the Gaussian that would take its transmittance to
    1e-4 or below. Yields (tiles (B,) of the batch, rows (b,) of it in this chunk, gaussians (b, lc) rows of
    `proj` (len(proj.ids) = padding, weight 0), weights (b, TILE², lc) with pixels row-major in the tile,
    the batch's transmittance (B, TILE²) after the chunk); every chunk of one batch yields the same `tiles`.
    """
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    dtype, device = proj.means2d.dtype, proj.means2d.device
    gauss, starts, per_tile = bin_tiles(proj, tiles_x, tiles_y)
    # Pixel-centre offsets inside a tile (rows and columns alike).
    offsets = torch.arange(TILE, dtype=dtype, device=device) + 0.5

    # One padding Gaussian (opacity 0) at index M lets ragged tile lists share one dense batch.
    means2d = torch.cat([proj.means2d, proj.means2d.new_zeros(1, 2)])
    conics = torch.cat([proj.conics, proj.conics.new_zeros(1, 3)])
    opac = torch.cat([proj.opacities, proj.opacities.new_zeros(1)])
    pad = len(means2d) - 1

    P = TILE * TILE
    for tiles in _tile_batches(per_tile):
        B = len(tiles)
        counts = per_tile[tiles]
        corners = torch.stack([tiles % tiles_x, tiles // tiles_x], dim=-1).to(dtype) * TILE          # (B, 2)
        trans = torch.ones(B, P, dtype=dtype, device=device)
        done = torch.zeros(B, P, dtype=torch.bool, device=device)
        active = torch.arange(B, device=device)
        L = int(counts.max())
        # Walk the depth-sorted lists a chunk at a time; tiles whose pixels have all stopped (opaque
        # surfaces) or whose lists ended drop out, so work follows what is visible, not what is listed.
        for start in range(0, L, CHUNK):
            if start:
                with torch.no_grad():
                    active = active[(counts[active] > start) & ~done[active].all(-1)]
                if active.numel() == 0:
                    break
            lc = min(CHUNK, L - start)
            slot = start + torch.arange(lc, device=device)
            idx = starts[tiles[active]][:, None] + slot
            valid = slot < counts[active][:, None]
            g = torch.where(valid, gauss[idx.clamp_max(len(gauss) - 1)], torch.full_like(idx, pad))   # (b, lc)
            corner = corners[active]
            # The quadratic form is separable over a tile's 16 columns and 16 rows: build its three terms
            # on (b, 16, lc) and combine them once on the full (b, 16, 16, lc) grid.
            m = means2d[g]
            dx = m[:, None, :, 0] - (corner[:, None, 0:1] + offsets[None, :, None])
            dy = m[:, None, :, 1] - (corner[:, None, 1:2] + offsets[None, :, None])
            con = conics[g][:, None]
            term_x = 0.5 * con[..., 0] * dx * dx
            term_y = 0.5 * con[..., 2] * dy * dy
            sigma = (term_y[:, :, None, :] + term_x[:, None, :, :]
                     + (con[..., 1] * dx)[:, None, :, :] * dy[:, :, None, :]).reshape(len(active), P, lc)
            # Past sigma = ln 255 no Gaussian reaches the 1/255 cut-off; clamping keeps exp() out of the
            # denormal range, where CPUs slow down by orders of magnitude.
            alpha = torch.clamp(opac[g][:, None, :] * torch.exp(-sigma.clamp(max=SIGMA_CUTOFF)), max=MAX_ALPHA)
            keep = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
            if start:
                keep = keep & ~done[active][..., None]
            alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
            t_prev = trans[active]
            t_incl = t_prev[..., None] * torch.cumprod(1.0 - alpha, dim=-1)
            with torch.no_grad():
                used = t_incl > MIN_TRANSMITTANCE      # monotone: exactly the Gaussians before the stop
            t_excl = torch.cat([t_prev[..., None], t_incl[..., :-1]], dim=-1)
            weights = torch.where(used, alpha * t_excl, torch.zeros_like(alpha))                     # (b, P, lc)
            trans = trans.index_add(0, active, -weights.sum(-1))
            with torch.no_grad():
                done[active] = done[active] | (~used & keep).any(-1)
            yield tiles, active, g, weights, trans


def composite(proj: Projected, channels: torch.Tensor, width: int, height: int,
              background: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back alpha compositing of per-Gaussian `channels` (M, C) -> ((H, W, C), alpha (H, W)), by
    composite_weights' rule. `background` (C,) is added with the remaining transmittance."""
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    n_tiles = tiles_x * tiles_y
    C = channels.shape[1]
    chans = torch.cat([channels, channels.new_zeros(1, C)])     # the padding Gaussian's row
    tile_ids, tile_colors, tile_trans = [], [], []
    for tiles, active, g, weights, trans in composite_weights(proj, width, height):
        if not tile_ids or tile_ids[-1] is not tiles:
            tile_ids.append(tiles)
            tile_colors.append(channels.new_zeros(len(tiles), TILE * TILE, C))
            tile_trans.append(trans)
        tile_colors[-1] = tile_colors[-1].index_add(0, active, weights @ chans[g])
        tile_trans[-1] = trans

    all_colors = channels.new_zeros(n_tiles, TILE * TILE, C)
    all_trans = channels.new_ones(n_tiles, TILE * TILE)
    if tile_ids:
        ids = torch.cat(tile_ids)
        all_colors = all_colors.index_copy(0, ids, torch.cat(tile_colors))
        all_trans = all_trans.index_copy(0, ids, torch.cat(tile_trans))
    if background is not None:
        all_colors = all_colors + all_trans[..., None] * background.to(channels.dtype)
    image = all_colors.reshape(tiles_y, tiles_x, TILE, TILE, C).permute(0, 2, 1, 3, 4)
    image = image.reshape(tiles_y * TILE, tiles_x * TILE, C)[:height, :width]
    alpha = (1.0 - all_trans).reshape(tiles_y, tiles_x, TILE, TILE).permute(0, 2, 1, 3)
    alpha = alpha.reshape(tiles_y * TILE, tiles_x * TILE)[:height, :width]
    return image, alpha


def accumulate(proj: Projected, pixel_values: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The transpose of composite: (M, C) per Gaussian of `proj`, Σ over pixels p of its weight in p × the
    pixel's values (H, W, C) — what composite's backward pass gives its channels, computed directly."""
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    C = pixel_values.shape[-1]
    values = pixel_values.to(proj.means2d.dtype).new_zeros(tiles_y * TILE, tiles_x * TILE, C)
    values[:height, :width] = pixel_values
    values = values.reshape(tiles_y, TILE, tiles_x, TILE, C).permute(0, 2, 1, 3, 4).reshape(-1, TILE * TILE, C)
    out = values.new_zeros(len(proj.ids) + 1, C)                  # + the padding Gaussian's row
    for tiles, active, g, weights, _ in composite_weights(proj, width, height):
        out.index_add_(0, g.reshape(-1), (weights.transpose(1, 2) @ values[tiles[active]]).reshape(-1, C))
    return out[:-1]


def weight_triplets(proj: Projected, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every non-zero compositing weight as (pixel (K,) row-major y·width + x, row of `proj` (K,), weight
    (K,)): a sparse (H·W, M) matrix through which rendering is a product (composite_weights' rule)."""
    tiles_x = math.ceil(width / TILE)
    rows, cols, vals = [], [], []
    for tiles, active, g, weights, _ in composite_weights(proj, width, height):
        b, p, l = torch.nonzero(weights > 0, as_tuple=True)
        tile = tiles[active][b]
        x = (tile % tiles_x) * TILE + p % TILE
        y = (tile // tiles_x) * TILE + p // TILE
        inside = (x < width) & (y < height)
        rows.append((y * width + x)[inside])
        cols.append(g[b, l][inside])
        vals.append(weights[b, p, l][inside])
    if not rows:
        empty = torch.zeros(0, dtype=torch.long, device=proj.means2d.device)
        return empty, empty, proj.means2d.new_zeros(0)
    return torch.cat(rows), torch.cat(cols), torch.cat(vals)
