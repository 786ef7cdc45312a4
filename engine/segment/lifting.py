"""Direct lifting of 2D masks onto Gaussians (no training): every Gaussian collects, per label, the weight
with which it is composited into that label's pixels, as a share per view averaged over views, and takes the
label with most of it after smoothing over its 3D neighbours; stray fragments and unseen Gaussians take their
neighbours' label.

The votes are engine.render.contributions.label_votes (the cuda_ext kernel on CUDA, the torch rasterizer's
weights elsewhere). Robustness to noisy masks lives in the torch code after them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..render.contributions import label_votes
from ..render.splats import SplatTensors

# A Gaussian whose total vote (its per-view shares summed over views) is below this fraction of the median
# Gaussian's counts as unseen and takes its neighbours' label: Gaussians seen only faintly or at silhouettes
# (where masks are least reliable) are better decided by the well-seen surface they continue.
MIN_SUPPORT = 0.5
# A Gaussian whose winning label has less than this share of its (smoothed) votes is decided by its
# neighbours instead; 0 = plain argmax.
MIN_SHARE = 0.0
# In smoothing, a Gaussian counts fully once its total weight reaches this many times the unseen threshold.
FULL_CONFIDENCE = 2.0
# Pixels this close to a mask edge (fraction of the image's longer side; 3 px at 320 px) do not vote.
EDGE_BAND = 0.01
# Rounds of averaging each Gaussian's label shares with its kNN neighbours' (colour-weighted): a mask edge
# that a few views put on the wrong side is outvoted by the neighbourhood.
SMOOTH_ROUNDS = 4
SMOOTH_COLOUR_SIGMA = 0.1
# A label's 3D fragment (connected component) smaller than this fraction of the label's largest one is a
# stray (mask noise) and takes its neighbours' label.
MIN_FRAGMENT_FRACTION = 0.1
# Side of the window rendered to find the Gaussian under a click (projection clamps depend on the frame).
PICK_WINDOW = 33


def trusted_label_maps(labels: np.ndarray | torch.Tensor, band: int | None = None,
                       num_labels: int | None = None) -> np.ndarray | torch.Tensor:
    """Label maps (V, H, W) with the pixels where masks are least reliable set to -1 (ignored): isolated
    pixels are first given their 3×3 neighbourhood's majority label, then pixels within `band` px of a
    boundary between labels (or a mask's silhouette) are dropped — mask noise lives at edges, and a Gaussian
    seen only there is better decided by its neighbours. `band` None = EDGE_BAND of the longer image side.
    Runs with torch on the maps' device (a tensor stays a tensor there; numpy in, numpy out)."""
    as_numpy = not isinstance(labels, torch.Tensor)
    maps = torch.from_numpy(np.asarray(labels)) if as_numpy else labels
    squeeze = maps.dim() == 2
    maps = maps.reshape(-1, *maps.shape[-2:]).to(torch.int64)
    height, width = maps.shape[-2:]
    if band is None:
        band = max(1, int(round(EDGE_BAND * max(height, width))))
    present = torch.unique(maps)
    if num_labels is not None:
        present = present[present < num_labels]
    present = present[present >= 0]
    # The empty background (-1) is a class of its own in the vote; on ties the first class wins.
    classes = torch.cat([present.new_full((1,), -1), present])
    out = torch.full_like(maps, -1)
    chunk = max(1, (64 << 20) // max(1, height * width * len(classes)))    # bounds the one-hot's memory
    for v0 in range(0, len(maps), chunk):
        part = maps[v0:v0 + chunk]
        onehot = (part[:, None] == classes[None, :, None, None]).float()
        counts = F.avg_pool2d(F.pad(onehot, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        mode = classes[counts.argmax(1)]
        for c in present:
            inside = (mode == c).float()[:, None]
            # Erosion by a (2·band+1)² square = a min-pool (replicated border, as the mask continues).
            inner = -F.max_pool2d(-F.pad(inside, (band,) * 4, mode="replicate"), 2 * band + 1, stride=1)
            out[v0:v0 + chunk][inner[:, 0] > 0.5] = c
    out = out.to(torch.int32)
    out = out[0] if squeeze else out
    return out.numpy() if as_numpy else out


def propagate_labels(labels, confident, knn, rgb, num_labels: int, colour_sigma: float = 0.1,
                     max_rounds: int = 256) -> np.ndarray:
    """Fill labels of the not-`confident` Gaussians from their kNN neighbours, weighted by colour similarity,
    outward from the confident ones, so a hidden face takes the label of the visible surface it continues,
    not of a differently coloured surface touching it. A Gaussian is filled only once a neighbour of
    similar colour is labelled; the similarity asked for is relaxed only when nothing else can advance.
    Gaussians no chain reaches keep -1. Runs on the device of `labels` when it is a tensor."""
    device = labels.device if isinstance(labels, torch.Tensor) else torch.device("cpu")
    labels = torch.as_tensor(labels, device=device).long()
    confident = torch.as_tensor(confident, device=device).bool()
    knn = torch.as_tensor(knn, device=device).long()
    rgb = torch.as_tensor(rgb, device=device).float()
    labels = torch.where(confident, labels, torch.full_like(labels, -1))
    todo = torch.nonzero(~confident).squeeze(1)
    levels = (0.5, 0.1, 1e-3, 0.0)
    level = 0
    for _ in range(max_rounds):
        if todo.numel() == 0:
            break
        nb = knn[todo]                                              # (U, k)
        nb_label = labels[nb]
        d2 = ((rgb[nb] - rgb[todo][:, None]) ** 2).sum(-1)
        w = torch.exp(-d2 / (2 * colour_sigma ** 2)) * (nb_label >= 0)
        reached = w.amax(1) > levels[level]
        if not bool(reached.any()):
            if level + 1 == len(levels):
                break
            level += 1
            continue
        level = 0      # progress made: go back to asking for similar colours
        rows = torch.nonzero(reached).squeeze(1)
        score = torch.zeros(rows.numel(), num_labels, device=device)
        score.scatter_add_(1, nb_label[rows].clamp_min(0), w[rows])
        # Only this round's frontier takes labels, so the fill advances one ring at a time.
        labels[todo[rows]] = score.argmax(1)
        todo = todo[~reached]
    return labels.cpu().numpy()


def smooth_shares(shares: torch.Tensor, confidence: torch.Tensor, knn, rgb, rounds: int = SMOOTH_ROUNDS,
                  colour_sigma: float = SMOOTH_COLOUR_SIGMA) -> torch.Tensor:
    """Label distributions (N, L) averaged `rounds` times with those of the kNN neighbours, weighted by their
    `confidence` (N,) in [0, 1] (how well the views showed them) and colour similarity (a neighbour of
    another colour is likely another object), so wrong votes of Gaussians seen only at mask edges are
    outvoted while boundaries between differently coloured surfaces stay sharp."""
    device = shares.device
    knn = torch.as_tensor(np.asarray(knn), device=device).long()
    rgb = torch.as_tensor(np.asarray(rgb), device=device).float()
    seen_f = confidence.to(shares.dtype)
    d2 = ((rgb[knn] - rgb[:, None]) ** 2).sum(-1)
    w = torch.exp(-d2 / (2 * colour_sigma ** 2)).to(shares.dtype) * seen_f[knn]        # (N, k)
    total = seen_f + w.sum(1)
    for _ in range(rounds):
        mixed = shares * seen_f[:, None] + torch.einsum("nk,nkl->nl", w, shares[knn])
        shares = torch.where(total[:, None] > 0, mixed / total.clamp_min(1e-12)[:, None], shares)
    return shares


def stray_fragments(labels: np.ndarray, means: np.ndarray, knn: np.ndarray,
                    min_fraction: float = MIN_FRAGMENT_FRACTION) -> np.ndarray:
    """(N,) bool: Gaussians in a connected 3D piece of their label (voxel grid of a few point spacings, see
    cleanup.voxel_components) smaller than `min_fraction` of that label's largest piece — mask noise."""
    from .cleanup import voxel_components, voxel_size

    means = np.asarray(means, np.float64)
    voxel = voxel_size(means, knn)
    stray = np.zeros(len(labels), bool)
    for label in np.unique(labels[labels >= 0]):
        rows = np.nonzero(labels == label)[0]
        if rows.size < 2:
            continue
        comp = voxel_components(means[rows], voxel)
        sizes = np.bincount(comp)
        stray[rows] = sizes[comp] < min_fraction * sizes.max()
    return stray


@dataclass
class LiftResult:
    labels: np.ndarray   # (N,) int64: the winning label, -1 where nothing decides it
    share: np.ndarray    # (N,) float32: the winning label's (smoothed) share of the Gaussian's votes (0 unseen)
    support: np.ndarray  # (N,) float32: total votes (how much of the Gaussian the views showed)


def assign_labels(votes: torch.Tensor | np.ndarray, knn: np.ndarray | None = None, rgb: np.ndarray | None = None,
                  min_support: float = MIN_SUPPORT, min_share: float = MIN_SHARE, means: np.ndarray | None = None,
                  smooth_rounds: int = SMOOTH_ROUNDS) -> LiftResult:
    """Each Gaussian takes the label with the largest share of its votes, after `smooth_rounds` of averaging
    shares with its kNN neighbours (smooth_shares). Those with a total weight below `min_support` × the
    median seen Gaussian's (unseen), a share below `min_share` (contested), or in a stray fragment of their
    label (stray_fragments, when `means` are given) take their neighbours' label (colour-aware, see
    propagate_labels) when a kNN graph is given, else -1."""
    votes = votes.detach() if isinstance(votes, torch.Tensor) else torch.from_numpy(np.asarray(votes))
    votes = votes.float()
    support = votes.sum(1)
    seen = support > 0
    threshold = min_support * float(support[seen].median()) if bool(seen.any()) else float("inf")
    seen = support >= threshold
    shares = torch.where(seen[:, None], votes / support.clamp_min(1e-12)[:, None], torch.zeros_like(votes))
    colours = rgb if rgb is not None else np.zeros((votes.shape[0], 3), np.float32)
    if knn is not None and smooth_rounds > 0 and votes.shape[0] > 0:
        confidence = (support / max(threshold * FULL_CONFIDENCE, 1e-12)).clamp(0, 1) * seen
        shares = smooth_shares(shares, confidence, knn, colours, smooth_rounds)
    share, best = shares.max(1)
    confident = seen & (share >= min_share) & (share > 0)
    if knn is not None and means is not None and bool(confident.any()):
        fragments = stray_fragments(torch.where(confident, best, -1).cpu().numpy(), means, knn)
        confident &= ~torch.from_numpy(fragments).to(confident.device)
    if knn is not None and not bool(confident.all()):
        labels = propagate_labels(best, confident, knn, colours, votes.shape[1])
    else:
        labels = torch.where(confident, best, torch.full_like(best, -1)).cpu().numpy()
    return LiftResult(labels.astype(np.int64), share.cpu().numpy().astype(np.float32),
                      support.cpu().numpy().astype(np.float32))


def lift_masks(g: SplatTensors, viewmats, Ks, labels, num_labels: int, knn: np.ndarray | None = None,
               min_support: float = MIN_SUPPORT, min_share: float = MIN_SHARE, use_kernel: bool | None = None,
               progress=None) -> LiftResult:
    """Label maps (V, H, W) of V views → a label per Gaussian (contribution-weighted majority; see
    trusted_label_maps, contributions.label_votes with per-view shares, and assign_labels)."""
    labels = trusted_label_maps(labels, num_labels=num_labels)
    votes = label_votes(g, viewmats, Ks, labels, num_labels, use_kernel=use_kernel, progress=progress,
                        normalise=True)
    return assign_labels(votes, knn, g.rgb.cpu().numpy(), min_support, min_share, means=g.means.cpu().numpy())


def pick_gaussian(g: SplatTensors, viewmat, K, x: float, y: float, use_kernel: bool | None = None) -> int:
    """Index of the Gaussian with the largest weight at pixel (x, y) (image coordinates, pixel centres at
    +0.5), or -1 when the pixel shows nothing. Renders a small window around the pixel (K's principal point
    shifted) in which only that pixel counts."""
    half = PICK_WINDOW // 2
    K1 = np.array(K, np.float64, copy=True)
    K1[0, 2] -= np.floor(x) - half
    K1[1, 2] -= np.floor(y) - half
    window = np.full((1, PICK_WINDOW, PICK_WINDOW), -1, np.int32)
    window[0, half, half] = 0
    votes = label_votes(g, np.asarray(viewmat)[None], K1[None], window, 1, use_kernel=use_kernel)[:, 0]
    if votes.numel() == 0 or float(votes.max()) <= 0:
        return -1
    return int(votes.argmax())


def render_view(g: SplatTensors, view, features: torch.Tensor | None = None):
    """RenderOutput of the Gaussians (view-independent colours) from a View: its picture when the capture
    has none, its depth for visibility tests."""
    from ..render.rasterizer import render_gaussians

    return render_gaussians(g.means, g.quats, g.scales, g.opacities, g.rgb, view.viewmat, view.K, view.width,
                            view.height, features=features)
