"""Pure-torch reference of the CUDA kernels (any device, any float dtype), and the host-side packing of
per-object transform parameters that both the kernel and the reference read."""

from __future__ import annotations

import numpy as np
import torch

from engine.gaussian_transform import quat_from_matrix, sh_rotation_matrices, uniform_parts
from engine.neighbours import SEARCH_ELEMENTS

# One object's parameter row; cuda_ext/csrc/transform_gaussians.cu reads the same offsets.
LINEAR, TRANSLATION, QUAT, LOG_SCALE, D1, D2, D3 = 0, 9, 12, 16, 17, 26, 51
PARAMS_PER_OBJECT = 100


def pack_object_parameters(matrices: np.ndarray) -> np.ndarray:
    """(O, 4, 4) affine matrices -> (O, PARAMS_PER_OBJECT) float32 rows.

    Positions get each matrix's exact linear part. Orientation, scale and SH get its uniform part s·Q
    (s = |det A|^(1/3), Q the orthogonal polar factor): exact for rotation + uniform scale (+ mirror); for
    non-uniform scale or shear an approximation of the covariance (the add-on's export uses the exact path
    of engine.gaussian_transform instead).
    """
    mats = np.asarray(matrices, dtype=np.float64)
    if mats.ndim != 3 or mats.shape[1:] != (4, 4):
        raise ValueError(f"matrices must be (O, 4, 4), got shape {mats.shape}")
    if not np.isfinite(mats).all() or not np.allclose(mats[:, 3], (0.0, 0.0, 0.0, 1.0)):
        raise ValueError("matrices must be finite affine matrices (last row 0, 0, 0, 1)")
    count = mats.shape[0]
    q, s, _ = uniform_parts(mats[:, :3, :3])
    proper = q * np.sign(np.linalg.det(q))[:, None, None]  # a mirror turns covariances as −Q, a rotation
    out = np.empty((count, PARAMS_PER_OBJECT), dtype=np.float64)
    out[:, LINEAR:LINEAR + 9] = mats[:, :3, :3].reshape(count, 9)
    out[:, TRANSLATION:TRANSLATION + 3] = mats[:, :3, 3]
    out[:, QUAT:QUAT + 4] = quat_from_matrix(proper)
    out[:, LOG_SCALE] = np.log(s)
    for start, block in zip((D1, D2, D3), sh_rotation_matrices(q)):
        out[:, start:start + block.shape[-1] ** 2] = block.reshape(count, -1)
    return out.astype(np.float32)


def _quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def transform_gaussians_reference(means: torch.Tensor, quats: torch.Tensor, log_scales: torch.Tensor,
                                  sh_rest: torch.Tensor, object_index: torch.Tensor, params: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the kernel computes: Gaussian i gets object `object_index[i]`'s packed transform.

    A Gaussian whose index is outside [0, O) is returned unchanged (the kernel does the same, so a bad
    index never reads out of bounds); the public API rejects such indices before either runs.
    """
    num_objects = params.shape[0]
    idx = object_index.long()
    valid = (idx >= 0) & (idx < num_objects)
    idx = idx.clamp(0, max(num_objects - 1, 0))
    params = params.to(means.dtype)

    def part(start: int, size: int) -> torch.Tensor:
        return params[:, start:start + size][idx]

    linear = part(LINEAR, 9).view(-1, 3, 3)
    new_means = torch.bmm(linear, means.unsqueeze(-1)).squeeze(-1) + part(TRANSLATION, 3)
    new_quats = _quat_multiply(part(QUAT, 4), quats)
    new_log_scales = log_scales + part(LOG_SCALE, 1)
    k = sh_rest.shape[1]
    if k not in (0, 3, 8, 15):
        raise ValueError(f"sh_rest has {k} coefficients per channel; expected 0, 3, 8 or 15")
    bands = []
    for offset, size, start in ((0, 3, D1), (3, 5, D2), (8, 7, D3)):
        if offset + size > k:
            break
        d = part(start, size * size).view(-1, size, size)
        bands.append(torch.bmm(d, sh_rest[:, offset:offset + size, :]))
    new_sh = torch.cat(bands, dim=1) if bands else sh_rest.clone()

    keep = ~valid
    if keep.any():
        new_means[keep], new_quats[keep] = means[keep], quats[keep]
        new_log_scales[keep], new_sh[keep] = log_scales[keep], sh_rest[keep]
    return new_means, new_quats, new_log_scales, new_sh


def contributions_reference(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor,
                            opacities: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor,
                            pixel_values: torch.Tensor, near: float = 0.01, far: float = 1e10) -> torch.Tensor:
    """(N, D): Σ_p w_g(p)·pixel_values[p] for every Gaussian g, where w_g(p) is the weight (alpha ×
    transmittance) with which g is composited into pixel p, on the pure-torch rasterizer (any device).

    With label one-hots as the values (H, W, L) this is what accumulate_contributions computes (labels outside
    [0, L) one-hot to zeros); for any values it is the backward pass of feature rendering (the image is linear
    in the features), which engine.render.contributions takes from gsplat on CUDA.
    """
    from engine.render import cpu_rasterizer

    height, width, dim = pixel_values.shape
    with torch.no_grad():
        proj = cpu_rasterizer.project_gaussians(means, quats, scales, opacities, viewmat, K, width, height,
                                                near, far)
        sums = cpu_rasterizer.accumulate(proj, pixel_values.to(means.device), width, height)
    out = torch.zeros(means.shape[0], dim, dtype=means.dtype, device=means.device)
    return out.index_add_(0, proj.ids, sums.to(means.dtype))


def lerf_relevancy_reference(codes: torch.Tensor, proj: torch.Tensor, offs: torch.Tensor, inverse: torch.Tensor,
                             unseen: torch.Tensor) -> torch.Tensor:
    """(s, N) float16 LERF relevancy of codes (s, N, d) against texts whose directions in code space are the
    columns of proj (d, 1 + K) (the positive first) and whose products with the decoder bias are offs (1 + K,):
    cosine c = (z·p + o)·inverse, then min over negatives of sigmoid(10·(c₀ − cₖ)), 0.5 where unseen (s, N).
    The products are made in proj's dtype (float16 on a GPU, as the kernel's tensor cores make them).

    The minimum of the sigmoids is sigmoid(10·(c₀ − max cₖ)): every step is monotonic, so one sigmoid per
    value gives the same number. The kernel (cuda_ext.lerf_relevancy) repeats these steps and their roundings."""
    cos = (codes.to(proj.dtype) @ proj).float().add_(offs).mul_(inverse[..., None])
    rel = torch.sigmoid((cos[..., 0] - cos[..., 1:].amax(-1)).mul_(10.0))
    return rel.masked_fill_(unseen, 0.5).half()


def grid_knn_reference(points: torch.Tensor, order: torch.Tensor, cells: torch.Tensor, starts: torch.Tensor,
                       counts: torch.Tensor, offsets: torch.Tensor, query_points: torch.Tensor,
                       query_keys: torch.Tensor, query_ids: torch.Tensor, k: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (Q, k), squared distances (Q, k)) of each query's k nearest among the points of the 27 grid
    cells around its own (nearest first; index −1 and distance inf where fewer than k are there), never itself.

    points (N, 3) sorted by cell key, order (N,) each sorted point's index in the caller's numbering, cells (C,)
    the occupied keys increasing with their first sorted point `starts` and point `counts`, offsets (27,) the
    key offsets of a 3 × 3 × 3 block, query_points (Q, 3), query_keys (Q,), query_ids (Q,) the queries' own
    indices. The kernel (cuda_ext.grid_knn) is the same search, one thread per query; distances agree to the
    bit (the same three squares summed in the same order), ties may come in another order."""
    device = points.device
    near = query_keys[:, None] + offsets                                               # (Q, 27)
    slot = torch.searchsorted(cells, near).clamp_max(len(cells) - 1)
    count = torch.where(cells[slot] == near, counts[slot], 0)
    first = starts[slot]
    # A query's candidates are its 27 cells' points one after another: lane j of a query lies in the cell
    # whose running count first exceeds j (rows padded only to the chunk's largest total, not 27 × its
    # fullest cell).
    ends = torch.cumsum(count, 1)
    total, begins = ends[:, -1], ends - count
    out_idx = torch.empty((len(query_points), k), dtype=torch.long, device=device)
    out_d2 = torch.empty((len(query_points), k), dtype=points.dtype, device=device)
    start = 0
    while start < len(query_points):
        stop = min(len(query_points), start + max(1, SEARCH_ELEMENTS // max(int(total[start]), k)))
        width = max(int(total[start:stop].max()), k)
        stop = min(stop, start + max(1, SEARCH_ELEMENTS // width))
        rows = slice(start, stop)
        lane = torch.arange(width, device=device).expand(stop - start, width).contiguous()
        cell_of = torch.searchsorted(ends[rows].contiguous(), lane, right=True).clamp_max(26)
        member = (first[rows].gather(1, cell_of) + lane - begins[rows].gather(1, cell_of)).clamp(0, len(points) - 1)
        diff = points[member] - query_points[rows, None]
        dist2 = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1] + diff[..., 2] * diff[..., 2]
        candidate = order[member]
        dist2 = torch.where((lane < total[rows, None]) & (candidate != query_ids[rows, None]), dist2, float("inf"))
        best, at = torch.topk(dist2, k, dim=1, largest=False, sorted=True)
        out_idx[rows] = torch.where(torch.isinf(best), -1, torch.gather(candidate, 1, at))
        out_d2[rows] = best
        start = stop
    return out_idx, out_d2


def composite_pixel_reference(means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor,
                              channels: torch.Tensor, gaussian_ids: torch.Tensor, tile_offsets: torch.Tensor,
                              flatten_ids: torch.Tensor, tile: int, px: float, py: float) -> torch.Tensor:
    """(C + 1,): one pixel (centre px, py) composited front to back from its tile's Gaussians as gsplat's
    rasterize_to_pixels does it (alpha = min(0.999, o·exp(−σ)), skipped below 1/255 or for σ < 0, stopping
    before the Gaussian that would take the transmittance to 1e-4 or less), its channels then its alpha.

    means2d (M, 2), conics (M, 3) gsplat's packed projection; opacities (N,) and channels (N, C) indexed by
    gaussian_ids (M,); tile_offsets (tiles,) and flatten_ids (into M) from gsplat's isect_tiles and
    isect_offset_encode of one image. The kernel (cuda_ext.composite_pixel) keeps gsplat's order of every
    product and sum; this reference sums the channels in another, so the two agree to rounding."""
    offsets = tile_offsets.reshape(-1)
    lo = int(offsets[tile])
    hi = int(offsets[tile + 1]) if tile + 1 < offsets.numel() else len(flatten_ids)
    flat = flatten_ids[lo:hi].long()
    rows = gaussian_ids[flat].long()
    d = means2d[flat].float() - torch.tensor([px, py], dtype=torch.float32, device=means2d.device)
    c = conics[flat].float()
    sigma = 0.5 * (c[:, 0] * d[:, 0] * d[:, 0] + c[:, 2] * d[:, 1] * d[:, 1]) + c[:, 1] * d[:, 0] * d[:, 1]
    alpha = torch.clamp_max(opacities[rows].float() * torch.exp(-sigma), 0.999)
    used = (sigma >= 0) & (alpha >= 1.0 / 255.0)
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))
    after = torch.cumprod(1.0 - alpha, 0)                      # transmittance after each Gaussian
    stops = torch.nonzero(used & (after <= 1e-4)).squeeze(1)
    end = int(stops[0]) if len(stops) else len(flat)           # the pixel is done before this one
    before = torch.cat([after.new_ones(1), after[:-1]])
    vis = torch.where(torch.arange(len(flat), device=alpha.device) < end, alpha * before, torch.zeros_like(alpha))
    out = (vis[:, None] * channels[rows].float()).sum(0)
    transmittance = before[end] if end < len(flat) else (after[-1] if len(flat) else after.new_ones(()))
    return torch.cat([out, (1.0 - transmittance).reshape(1)])
