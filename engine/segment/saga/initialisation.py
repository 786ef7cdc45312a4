"""SAGA's closed-form start: masks of different views associated into 3D segments by the overlap of their
footprints on the Gaussians, and each Gaussian's segment per scale band lifted from the masks (direct lifting's
robust label assignment); a Gaussian's feature is then its segments' orthonormal codes."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...render.contributions import view_shares
from ...render.splats import SplatTensors
from .features import BANDS
from .masks import ViewMasks
from .rendering import ViewContributions

# Masks of two views whose 3D footprints have at least this cosine are one 3D segment (see associate);
# SKETCH_DIM random dimensions estimate the cosine to about ±1/sqrt(SKETCH_DIM) (124 + colour + depth fill
# gsplat's 128-channel pass exactly).
ASSOCIATION_COSINE = 0.4
SKETCH_DIM = 124


def band_normalise(features: torch.Tensor, band_dim: int) -> torch.Tensor:
    """Each band of each feature scaled to unit length."""
    return F.normalize(features.reshape(len(features), BANDS, band_dim), dim=2).reshape(len(features), -1)


def associate(contributions: Sequence[ViewContributions], prepared: list[ViewMasks],
              identities: list[torch.Tensor], usable: list[int], count: int, generator: torch.Generator
              ) -> tuple[list[torch.Tensor | None], list[int]]:
    """(per view (BANDS, M_v) the 3D segment of each of its masks per band (−1: none), the segment count
    per band): the masks of one 3D segment share it in every view.

    A mask's 3D footprint is the share of each Gaussian's weight in its view that falls in the mask; its
    sketch is that footprint times a random vector per Gaussian (rendered: one pass per view), so sketch
    cosines estimate footprint cosines (Johnson-Lindenstrauss). Masks of different views whose footprints
    overlap (cosine >= ASSOCIATION_COSINE) are linked; the connected components are the 3D segments."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    device = identities[usable[0]].device
    randoms = torch.randn(count, SKETCH_DIM, generator=generator).to(device)
    sketches, owners = [[] for _ in range(BANDS)], [[] for _ in range(BANDS)]
    for v in usable:
        pix = prepared[v].candidates
        _, support = contributions[v].lift(randoms.new_zeros(len(pix), 0), pix)
        if not bool((support > 0).any()):
            continue
        with torch.no_grad():
            rendered = contributions[v].render(view_shares(randoms, support), pix)[0]       # (P, K)
        for b in range(BANDS):
            ident = identities[v][b]
            ok = ident >= 0
            sums = rendered.new_zeros(len(prepared[v].scales), SKETCH_DIM).index_add_(0, ident[ok], rendered[ok])
            present = torch.nonzero(torch.bincount(ident[ok], minlength=len(prepared[v].scales))).squeeze(1)
            sketches[b].append(F.normalize(sums[present], dim=1))
            owners[b] += [(v, int(m)) for m in present.tolist()]
    components = [None if v not in usable else torch.full((BANDS, len(prepared[v].scales)), -1, dtype=torch.long,
                                                          device=device) for v in range(len(prepared))]
    counts = [0] * BANDS
    for b in range(BANDS):
        if not owners[b]:
            continue
        sk = torch.cat(sketches[b])
        view_of = torch.tensor([v for v, _ in owners[b]], device=device)
        linked = (sk @ sk.T >= ASSOCIATION_COSINE) & (view_of[:, None] != view_of[None, :])
        i, j = torch.nonzero(linked, as_tuple=True)
        n = len(owners[b])
        graph = coo_matrix((np.ones(len(i)), (i.cpu().numpy(), j.cpu().numpy())), shape=(n, n))
        counts[b], component = connected_components(graph, directed=False)
        for (v, m), c in zip(owners[b], component.tolist()):
            components[v][b, m] = c
    return components, counts


def segment_codes(count: int, band_dim: int, generator: torch.Generator) -> torch.Tensor:
    """(count, band_dim) unit codes of a band's 3D segments: orthonormal while they fit, else random."""
    basis = torch.randn(max(count, band_dim), band_dim, generator=generator)
    if count <= band_dim:
        basis = torch.linalg.qr(basis[:band_dim])[0]
    return F.normalize(basis[:max(count, 1)], dim=1)


def lift_segments(contributions: Sequence[ViewContributions], prepared: list[ViewMasks],
                  identities: list[torch.Tensor], usable: list[int], components: list[torch.Tensor],
                  counts: list[int], scene, g: SplatTensors, band_dim: int, generator: torch.Generator
                  ) -> torch.Tensor:
    """Band by band, each Gaussian's 3D segment by direct lifting (lifting.assign_labels on the per-view
    shares of its compositing weight in each segment's masks: smoothing over neighbours, stray fragments and
    unseen Gaussians decided by their neighbours), and its feature the segment's code: (N, D)."""
    from ...neighbours import scene_knn
    from ..lifting import assign_labels

    knn, _ = scene_knn(scene)
    device = g.means.device
    features = torch.zeros(g.count, BANDS * band_dim, device=device)
    for b in range(BANDS):
        k = max(counts[b], 1)
        votes = torch.zeros(g.count, k, device=device)
        for v in usable:
            seg = components[v][b][identities[v][b].clamp_min(0)]
            seg = torch.where(identities[v][b] >= 0, seg, -1)
            ok = seg >= 0
            values = torch.zeros(len(seg), k, device=device)
            values[ok, seg[ok]] = 1.0
            pulled, support = contributions[v].lift(values, prepared[v].candidates)
            votes += view_shares(pulled, support)
        result = assign_labels(votes, knn, g.rgb.cpu().numpy(), means=g.means.cpu().numpy())
        labels = torch.from_numpy(result.labels).to(device)
        codes = segment_codes(k, band_dim, generator).to(device)
        features[:, b * band_dim:(b + 1) * band_dim] = torch.where((labels >= 0)[:, None], codes[labels.clamp_min(0)],
                                                                   0.0)
    return features
