"""Queries of trained SAGA features: the feature rendered at a click (or averaged over a mask) against every
Gaussian's, gated at the granularity; text through SAM masks scored by CLIP (by lifting when no features)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...render.contributions import label_votes
from ...render.rasterizer import render_gaussians
from ..views import View
from .features import AffinityFeatures, SagaError, features_ready, gated_similarity, load_features
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


@torch.no_grad()
def click_scores(features: AffinityFeatures, scene, view: View, x: float, y: float, granularity: float,
                 device="auto") -> np.ndarray:
    """(N,) float32 gated cosine similarity of each Gaussian's feature to the feature rendered at pixel (x, y)
    of the view (image coordinates, origin top-left). The segment is scores > CLICK_THRESHOLD."""
    device = as_device(device)
    fmap, alpha = render_feature_map(features, scene, view, device)
    col, row = int(np.clip(np.floor(x), 0, view.width - 1)), int(np.clip(np.floor(y), 0, view.height - 1))
    if float(alpha[row, col]) < 0.05:
        raise SagaError(f"nothing of the scene is at pixel ({x:.0f}, {y:.0f})", hint="click on an object")
    feats, gate = features.device_tensors(device)
    return gated_similarity(feats, gate, fmap[row, col], granularity).float().cpu().numpy()


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
    feats, gate = features.device_tensors(device)
    return gated_similarity(feats, gate, query, granularity).float().cpu().numpy()


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
