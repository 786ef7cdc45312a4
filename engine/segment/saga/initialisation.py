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


def device_randn(rows: int, cols: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(rows, cols) standard normals made on `device` by a generator seeded from `generator`: reproducible,
    without drawing millions of numbers on the CPU and copying them over."""
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    local = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(rows, cols, generator=local, device=device)


def one_hot_columns(columns: torch.Tensor, total: int) -> torch.Tensor:
    """(P, total) rows with a 1 in each of a pixel's columns: `columns` (B, P) holds B column indices per
    pixel (−1: none), so B one-hot blocks side by side go through one lifting pass."""
    values = torch.zeros(columns.shape[1], total + 1, device=columns.device)     # + 1: where −1 goes
    rows = torch.arange(columns.shape[1], device=columns.device).expand_as(columns)
    values[rows, torch.where(columns >= 0, columns, total)] = 1.0
    return values[:, :total]


def associate(contributions: Sequence[ViewContributions], prepared: list[ViewMasks],
              identities: list[torch.Tensor], usable: list[int], count: int, generator: torch.Generator
              ) -> tuple[list[torch.Tensor | None], list[int]]:
    """(per view (BANDS, M_v) the 3D segment of each of its masks per band (−1: none), the segment count
    per band): the masks of one 3D segment share it in every view.

    A mask's 3D footprint is the share of each Gaussian's weight in its view that falls in the mask (one
    lifting pass per view for all bands' masks); its sketch is the footprint's product with a random vector
    per Gaussian, so sketch cosines estimate footprint cosines (Johnson-Lindenstrauss). Masks of different
    views whose footprints overlap (cosine >= ASSOCIATION_COSINE) are linked; the connected components are
    the 3D segments."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    device = identities[usable[0]].device
    randoms = device_randn(count, SKETCH_DIM, generator, device)
    sketches, owners = [[] for _ in range(BANDS)], [[] for _ in range(BANDS)]
    for v in usable:
        masks = len(prepared[v].scales)
        ident = identities[v]
        # A column per (band, mask) that holds a pixel: SAM's many masks would leave most of BANDS·M empty.
        flat = torch.where(ident >= 0, ident + masks * torch.arange(BANDS, device=device)[:, None], BANDS * masks)
        present = torch.zeros(BANDS * masks + 1, dtype=torch.bool, device=device)
        present[flat.reshape(-1)] = True
        present = present[:-1].cpu()                   # one transfer per view
        column = torch.full((BANDS * masks + 1,), -1, dtype=torch.long)
        column[:-1][present] = torch.arange(int(present.sum()))
        pulled, support = contributions[v].lift(one_hot_columns(column.to(device)[flat], int(present.sum())),
                                                prepared[v].candidates)
        if not bool((support > 0).any()):
            continue
        sketch = F.normalize(view_shares(pulled, support).T @ randoms, dim=1)        # (present, SKETCH_DIM)
        kept = torch.nonzero(present.reshape(BANDS, masks))
        for b in range(BANDS):
            in_band = kept[:, 0] == b
            sketches[b].append(sketch[torch.nonzero(in_band).squeeze(1).to(device)])
            owners[b] += [(v, int(m)) for m in kept[in_band, 1].tolist()]
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


def segment_features(votes: torch.Tensor, counts: Sequence[int], knn: np.ndarray, g: SplatTensors, band_dim: int,
                     generator: torch.Generator) -> torch.Tensor:
    """Each Gaussian's 3D segment per band by direct lifting of its segment_votes (lifting.assign_labels:
    smoothing over neighbours, stray fragments and unseen Gaussians decided by their neighbours), and its
    feature the segments' codes: (N, D). `counts` the segments per band (votes' column blocks), knn the
    scene's kNN graph."""
    from ..lifting import assign_labels

    device = g.means.device
    rgb, means = g.rgb.cpu().numpy(), g.means.cpu().numpy()
    features = torch.zeros(g.count, BANDS * band_dim, device=device)
    first = 0
    for b in range(BANDS):
        result = assign_labels(votes[:, first:first + counts[b]], knn, rgb, means=means)
        first += counts[b]
        labels = torch.from_numpy(result.labels).to(device)
        codes = segment_codes(counts[b], band_dim, generator).to(device)
        features[:, b * band_dim:(b + 1) * band_dim] = torch.where((labels >= 0)[:, None], codes[labels.clamp_min(0)],
                                                                   0.0)
    return features


def segment_votes(contributions: Sequence[ViewContributions], prepared: list[ViewMasks],
                  identities: list[torch.Tensor], usable: list[int], components: list[torch.Tensor],
                  counts: Sequence[int], count: int) -> torch.Tensor:
    """(N, Σ counts) per Gaussian and band, its votes for each 3D segment (band b's columns after those of
    the bands before; `counts` ≥ 1 each): the sum over views of view_shares of the weight it has in the
    segment's pixels. The bands' one-hot columns side by side go through one lifting pass per view: the same
    sums as a pass per band (each column is lifted on its own; the shares divide all by the view's one
    support)."""
    votes = torch.zeros(count, int(sum(counts)), device=identities[usable[0]].device)
    first = torch.tensor([0, *np.cumsum(counts)[:-1].tolist()], device=votes.device)[:, None]
    for v in usable:
        ident = identities[v]
        seg = torch.gather(components[v], 1, ident.clamp_min(0))
        seg = torch.where(ident >= 0, seg, -1)
        pulled, support = contributions[v].lift(one_hot_columns(torch.where(seg >= 0, seg + first, -1),
                                                                int(sum(counts))), prepared[v].candidates)
        votes += view_shares(pulled, support)
    return votes
