"""Queries of trained SAGA features: the feature rendered at a click (or averaged over a mask) against every
Gaussian's, gated at the granularity; text through SAM masks scored by CLIP (by lifting when no features)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...render.contributions import label_votes
from ...render.frame_sink import to_host
from ...render.gsplat_backend import render_gsplat_tile
from ...render.rasterizer import gsplat_available, render_gaussians
from ..views import View
from ...render.cpu_rasterizer import EPS2D, TILE
from ...render.splats import SplatTensors
from .features import AffinityFeatures, SagaError, features_ready, load_features
from .rendering import NullContext, as_device, scene_splats, view_images


@torch.no_grad()
def render_feature_map(features: AffinityFeatures, scene, view: View, device="auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(features (H, W, D), alpha (H, W)) rendered from a view (file frame)."""
    device = as_device(device)
    t = scene_splats(scene, device)
    feats, _ = features.device_tensors(device)
    zeros = scene.cached(f"saga_zeros_{device}", lambda: torch.zeros(t.count, 3, device=device))
    out = render_gaussians(t.means, t.quats, t.scales, t.opacities, zeros, view.viewmat, view.K, view.width,
                           view.height, features=feats)
    return out.features, out.alpha


def reaching_pixel(t: SplatTensors, max_scales: torch.Tensor, viewmat: torch.Tensor, K: np.ndarray, width: int,
                   height: int, col: int, row: int) -> torch.Tensor:
    """Indices (increasing) of every Gaussian the rasterizers could composite at pixel (col, row) of a width ×
    height view (viewmat on the Gaussians' device, K (3, 3) on the host), and some more. Both rasterizers bin a Gaussian into every 16-pixel tile its footprint's box meets and composite it
    at every pixel of those tiles, so what counts is the pixel's tile: a Gaussian can reach it only if its
    centre is within its footprint's half-width r plus 8 of the tile's centre. r is bounded from above: 3.33
    standard deviations of the projected covariance (whose largest is at most the largest scale times the
    Jacobian's Frobenius norm, plus the 0.3 px² blur; the Jacobian is taken where the centre is clamped to
    1.3× the view's field, no further out than the centre or that limit), one for rounding r up, one for the
    centre's rounding. The pixel's value from these alone is the value from all: a Gaussian left out has no
    weight there, and the rest keep their depth order."""
    c = t.means @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = c[:, 2]
    inv_z = 1.0 / z.clamp_min(1e-6)
    xz, yz = c[:, 0] * inv_z, c[:, 1] * inv_z
    fx, fy, cx, cy = (float(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    tx, ty = xz.abs(), yz.abs()
    # The clamp moves the point towards the view unless the principal point lies far outside the image (a
    # limit below 0); then the limit itself may be further out than the centre.
    lims_x = ((width - cx) / fx + 0.15 * width / fx, cx / fx + 0.15 * width / fx)
    lims_y = ((height - cy) / fy + 0.15 * height / fy, cy / fy + 0.15 * height / fy)
    if min(lims_x) < 0:
        tx = tx.clamp_min(max(abs(v) for v in lims_x))
    if min(lims_y) < 0:
        ty = ty.clamp_min(max(abs(v) for v in lims_y))
    var = (max_scales * (max(fx, fy) * inv_z)).square_() * (2.0 + tx * tx + ty * ty) + EPS2D
    reach = var.sqrt_().mul_(3.33).add_(1.0 + TILE / 2 + 1.0)
    tile_x, tile_y = (col // TILE) * TILE + TILE / 2, (row // TILE) * TILE + TILE / 2
    near = (z > 0) & ((fx * xz + (cx - tile_x)).abs_() <= reach) & ((fy * yz + (cy - tile_y)).abs_() <= reach)
    return torch.nonzero(near).squeeze(1)


@torch.no_grad()
def click_scores(features: AffinityFeatures, scene, view: View, x: float, y: float, granularity: float,
                 device="auto") -> np.ndarray:
    """(N,) float32 gated cosine similarity of each Gaussian's feature to the feature rendered at pixel (x, y)
    of the view (image coordinates, origin top-left). The segment is scores > CLICK_THRESHOLD.

    Only the Gaussians that can reach the clicked pixel are rendered (reaching_pixel), at the view's full size
    and camera, so each is projected and ordered as in the whole view: the pixel's feature is the same (on
    gsplat to the bit, rasterizing the pixel's tile alone; the torch rasterizer groups its transmittance
    products by chunks, so to rounding)."""
    device = as_device(device)
    col, row = int(np.clip(np.floor(x), 0, view.width - 1)), int(np.clip(np.floor(y), 0, view.height - 1))
    t = scene_splats(scene, device)
    feats, gate = features.device_tensors(device)
    viewmat = torch.as_tensor(np.asarray(view.viewmat), dtype=torch.float32, device=device)
    K = torch.as_tensor(np.asarray(view.K), dtype=torch.float32, device=device)
    max_scales = scene.cached(f"saga_max_scales_{device}", lambda: t.scales.amax(1))
    ids = reaching_pixel(t, max_scales, viewmat, np.asarray(view.K), view.width, view.height, col, row)
    if device.type == "cuda" and gsplat_available():
        pixel, alpha = render_gsplat_tile(t.means[ids], t.quats[ids], t.scales[ids], t.opacities[ids], feats[ids],
                                          viewmat, K, view.width, view.height, col, row)
    else:
        zeros = scene.cached(f"saga_zeros_{device}", lambda: torch.zeros(t.count, 3, device=device))
        out = render_gaussians(t.means[ids], t.quats[ids], t.scales[ids], t.opacities[ids], zeros[:len(ids)],
                               viewmat, K, view.width, view.height, features=feats[ids])
        pixel, alpha = out.features[row, col], out.alpha[row, col]
    if float(alpha) < 0.05:
        raise SagaError(f"nothing of the scene is at pixel ({x:.0f}, {y:.0f})", hint="click on an object")
    return scores_to_host(features.similarity(pixel, granularity, device), scene)


def scores_to_host(scores: torch.Tensor, scene) -> np.ndarray:
    """(N,) float32 scores as a new host array. From a GPU through a pinned buffer kept with the scene: a
    pageable copy of 1M scores took 2.7 ms on the H200, more than the rest of a click."""
    scores = scores.float()
    if not scores.is_cuda:
        return scores.numpy()
    buffer = scene.cached(f"saga_pinned_{len(scores)}", lambda: torch.empty(len(scores), pin_memory=True))
    host, ready = to_host(scores, buffer)
    ready.synchronize()
    return host.numpy().copy()


@torch.no_grad()
def mask_scores(features: AffinityFeatures, scene, view: View, mask: np.ndarray, granularity: float,
                device="auto") -> np.ndarray:
    """Like click_scores for a 2D mask of the view (a box or a text match): the query is the mean rendered
    feature over the mask's pixels."""
    device = as_device(device)
    fmap, alpha = render_feature_map(features, scene, view, device)
    m = torch.as_tensor(np.asarray(mask, bool), device=device) & (alpha > 0.5)
    if not bool(m.any()):
        raise SagaError("the mask covers nothing of the scene", hint="select a region that shows the object")
    query = F.normalize(fmap[m], dim=1).mean(0)
    return scores_to_host(features.similarity(query, granularity, device), scene)


def text_scores(scene, views: Sequence[View], prompt: str, granularity: float, ctx=None, device="auto",
                sam=None, clip=None, features: AffinityFeatures | None = None, max_views: int = 8,
                generator_options: dict | None = None, sam_variant: str | None = None) -> np.ndarray:
    """(N,) float32 scores of each Gaussian for a text prompt: SAM masks of up to `max_views` views, each
    crop scored by CLIP relevancy; the best mask becomes a feature query (when features are trained; scores
    are gated cosine similarities, threshold CLICK_THRESHOLD), else the best mask of every view whose
    relevancy is close to the best is lifted onto the Gaussians by contribution votes (scores = vote share)."""
    from ..clip_text import load_clip, mask_relevancy
    from ..sam_masks import automatic_masks, load_sam, mask_generator

    ctx = ctx or NullContext()
    device = as_device(device)
    if not views:
        raise SagaError("no views to look for the text in")
    chosen = [views[i] for i in np.linspace(0, len(views) - 1, min(max_views, len(views))).round().astype(int)]
    if clip is None:
        clip = load_clip(device, progress=lambda f, s: ctx.progress(0.0, s))
    if sam is None:
        sam = load_sam(sam_variant, device=device, progress=lambda f, s: ctx.progress(0.0, s))
    generator = mask_generator(sam, **(generator_options or {}))
    best_per_view = []
    for i, (view, image) in enumerate(zip(chosen, view_images(scene, chosen, device))):
        ctx.check_cancelled()
        masks = automatic_masks(image, generator)
        rel = mask_relevancy(clip, image, masks, prompt)
        if len(rel):
            j = int(np.argmax(rel))
            best_per_view.append((float(rel[j]), view, masks[j]))
        ctx.progress((i + 1) / len(chosen), f"looking for '{prompt}' in view {i + 1} of {len(chosen)}")
    if not best_per_view:
        raise SagaError(f"no region of the views matched '{prompt}'", hint="try other words, or click instead")
    if features is None and features_ready(scene):
        features = load_features(scene)
    top = max(best_per_view, key=lambda b: b[0])
    if features is not None:
        return mask_scores(features, scene, top[1], top[2], granularity, device)
    picked = [b for b in best_per_view if b[0] >= 0.9 * top[0]]
    shape = (picked[0][1].height, picked[0][1].width)
    picked = [b for b in picked if (b[1].height, b[1].width) == shape]
    labels = np.stack([np.where(b[2], 0, 1) for b in picked]).astype(np.int32)
    votes = label_votes(scene_splats(scene, device), np.stack([b[1].viewmat for b in picked]),
                        np.stack([b[1].K for b in picked]), labels, 2)
    total = votes.sum(1)
    return torch.where(total > 0, votes[:, 0] / total.clamp_min(1e-12), torch.zeros_like(total)).cpu().numpy().astype(np.float32)
