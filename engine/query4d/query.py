"""Text → relevancy of every Gaussian at every timestep → a spatial mask per frame and a temporal span.

Relevancy is LERF's (what 4-LEGS uses): min over the canonical negatives of softmax(10·[cos(f, text),
cos(f, negative)]). With the affine decoder it is computed on the codes directly: cos needs z·(Aᵀt) + b·t
and |Az + b|² = zᵀ(AᵀA)z + 2(Aᵀb)·z + b·b, so no 768-D feature is ever formed; the norm depends on no text,
so it is made once per field (`inverse_norms`) and a query is one small product per code plus its top-k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from cuda_ext import lerf_relevancy
from engine.render.frame_sink import to_host

from .features import CANONICAL_NEGATIVES, FeatureExtractor
from .field import FeatureField
from .thresholds import MIN_SPATIAL_THRESHOLD, THRESHOLDS


@dataclass
class QuerySettings:
    """How a query cuts its answer. The fields a user may set (the request's thresholds, the panel, the batch's
    --query-* options) take their defaults and ranges from thresholds.THRESHOLDS."""

    spatial_threshold: float | None = None   # mask cut on normalised relevancy; None: Otsu's over the span
    min_spatial_threshold: float = MIN_SPATIAL_THRESHOLD   # the automatic cut is never below this
    # The span's cut, as a fraction of the temporal score's rise; then the score's Gaussian sigma (frames).
    temporal_threshold: float = THRESHOLDS["temporal_threshold"].default
    smoothing: float = THRESHOLDS["smoothing"].default
    min_event_contrast: float = 0.25  # below this rise of the temporal score the match is steady, not an event
    top_fraction: float = 0.001       # temporal score = mean of the top fraction of Gaussians (at least 16)
    # "No match" is a result: the query's best score (raw LERF relevancy, top Gaussians, best frame) must beat
    # both this floor (the text is closer than every negative by cos 0.008) and what the canonical negatives
    # reach against one another on the same compressed codes (the field's null level) by `null_margin`.
    min_relevancy: float = THRESHOLDS["min_relevancy"].default
    null_margin: float = 0.02
    # The cut misses parts of an object that score a little lower (a shaded side) or have no code (never seen):
    # the masks grow from what the cut selected along the field's neighbour graph, to Gaussians whose mean
    # normalised relevancy over the span reaches `grow_threshold` (`grow_rounds` hops), and to Gaussians with
    # no code in the span whose coded neighbours are mostly selected (grow_masks). 0: no growth.
    grow_threshold: float = THRESHOLDS["grow_threshold"].default
    grow_rounds: int = 8


@dataclass(init=False)
class QueryResult:
    span: tuple[int, int] | None      # inclusive frames (timesteps) of the event, None when nothing matched
    temporal_score: np.ndarray        # (T,) smoothed, in [0, 1]
    masks: torch.Tensor               # (T, N) bool: the matching Gaussians per frame (empty outside the span)
    mask_start: np.ndarray            # (N,) int32 first frame in the mask, −1 if never
    mask_end: np.ndarray              # (N,) int32 last frame in the mask, −1 if never
    peak: np.ndarray                  # (N,) float32 highest normalised relevancy inside the span
    best_relevancy: float = 0.0       # the query's best raw score (top Gaussians, best frame)
    threshold: float = 0.0            # what it had to reach to match (calibrated on the field's codes)

    def __init__(self, span, temporal_score, masks, relevancy: torch.Tensor | Callable[[], torch.Tensor],
                 mask_start, mask_end, peak, best_relevancy: float = 0.0, threshold: float = 0.0) -> None:
        self.span, self.temporal_score, self.masks = span, temporal_score, masks
        self.mask_start, self.mask_end, self.peak = mask_start, mask_end, peak
        self.best_relevancy, self.threshold = best_relevancy, threshold
        self._relevancy = relevancy

    @property
    def relevancy(self) -> torch.Tensor:
        """(T, N) float16 normalised relevancy in [0, 1], made on first use (no answer needs every frame's)."""
        if callable(self._relevancy):
            self._relevancy = self._relevancy()
        return self._relevancy

    @property
    def matched(self) -> bool:
        return self.span is not None

    def counts(self) -> np.ndarray:
        return self.masks.sum(1).cpu().numpy()


def _products_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def _block(field: FeatureField, budget: int) -> int:
    """Timesteps per block of about `budget` values of the d-wide products (few launches, bounded memory)."""
    S, N, d = field.codes.shape
    return max(1, min(S, budget // max(1, N * d)))


def inverse_norms(field: FeatureField, budget: int = 1 << 27) -> torch.Tensor:
    """(S, N) float32 1/|Az + b| of every code: the decoded feature's norm, the one part of the cosine that no
    text changes, so it is made once per field and every query reuses it (the quadratic form was most of a
    query's work). Computed in the blocks raw_relevancy uses, with the same operations."""
    key = f"inverse_norms_{budget}"
    if key not in field.derived:
        device = field.codes.device
        A = field.decoder_weight.float()                 # (D, d)
        b = field.decoder_bias.float()                   # (D,)
        dtype = _products_dtype(device)
        gram_c = (A.T @ A).to(dtype)                     # (d, d)
        lin_c = (2.0 * (A.T @ b)).to(dtype)              # (d,)
        const = b @ b
        S, N, _ = field.codes.shape
        chunk = _block(field, budget)
        out = torch.empty((S, N), dtype=torch.float32, device=device)
        for s in range(0, S, chunk):
            z = field.codes[s:s + chunk].to(dtype)
            sq = ((z @ gram_c) * z).sum(-1).float() + (z @ lin_c).float() + const
            out[s:s + chunk] = torch.rsqrt(sq.clamp_min(1e-12))
        field.derived[key] = out
    return field.derived[key]


def raw_relevancy(field: FeatureField, positive: torch.Tensor, negatives: torch.Tensor,
                  budget: int = 1 << 27) -> torch.Tensor:
    """(S, N) float16 LERF relevancy in [0, 1] at the field's sampled timesteps (0.5 where unseen): on a GPU
    cuda_ext's fused kernel (one read of each code), else the torch reference in blocks of timesteps of about
    `budget` values of the d-wide products (bounded memory); the same bits either way."""
    device = field.codes.device
    inverse = inverse_norms(field, budget)
    A = field.decoder_weight.float()                     # (D, d)
    b = field.decoder_bias.float()                       # (D,)
    texts = torch.cat([positive[None], negatives]).to(device).float()          # (1 + K, D)
    proj_c = (texts @ A).T.contiguous().to(_products_dtype(device))            # (d, 1 + K)
    offs = texts @ b                                     # (1 + K,)
    unseen = field.derived.get("unseen")
    if unseen is None:
        unseen = field.derived["unseen"] = ~field.has_code
    return lerf_relevancy(field.codes, proj_c, offs, inverse, unseen, block=_block(field, budget))


def per_frame(values: torch.Tensor, steps: np.ndarray, total: int,
              frames: tuple[int, int] | None = None) -> torch.Tensor:
    """(S, N) at sampled timesteps → (T, N), linear in between; only frames [first, last] when given."""
    first, last = (0, total - 1) if frames is None else frames
    if len(steps) == total:
        return values[first:last + 1]
    t = np.arange(first, last + 1)
    hi = np.clip(np.searchsorted(steps, t), 1, len(steps) - 1)
    lo = hi - 1
    w = torch.as_tensor((t - steps[lo]) / np.maximum(steps[hi] - steps[lo], 1), dtype=torch.float32,
                        device=values.device)[:, None]
    lo_t, hi_t = torch.as_tensor(lo, device=values.device), torch.as_tensor(hi, device=values.device)
    return (values[lo_t].float() * (1 - w) + values[hi_t].float() * w).to(values.dtype)


def smooth(signal: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0 or len(signal) < 2:
        return signal.copy()
    radius = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    padded = np.pad(signal, radius, mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")


def otsu_threshold(values: torch.Tensor, bins: int = 128, ignore_zeros: bool = False) -> float:
    """The cut in [0, 1] that best separates two groups of values (Otsu: largest between-class variance);
    `ignore_zeros` leaves exact zeros out."""
    return float(otsu_cut(values, bins, ignore_zeros))


def otsu_cut(values: torch.Tensor, bins: int = 128, ignore_zeros: bool = False) -> torch.Tensor:
    """otsu_threshold as a float32 scalar tensor on the values' device: nothing waits for the device."""
    values = values.float()
    if ignore_zeros:
        # Moved out of histc's range, the zeros are skipped instead of counted into the first bin and taken off
        # again: each one was an atomic add on that bin (most of the span's values; 7 ms of a query on the H200)
        # and the float32 count of bin 0 lost units past 2^24. The other bins are the same counts.
        values = torch.where(values == 0, -1.0, values)
    hist = torch.histc(values, bins=bins, min=0.0, max=1.0).double()
    total = hist.sum()
    p = hist / total
    centres = (torch.arange(bins, dtype=torch.float64, device=values.device) + 0.5) / bins
    w0 = p.cumsum(0)
    mu0 = (p * centres).cumsum(0)
    between = (mu0[-1] * w0 - mu0) ** 2 / (w0 * (1 - w0)).clamp_min(1e-12)
    cut = (torch.argmax(between[:-1]) + 1) / bins
    return torch.where(total > 0, cut, torch.ones_like(cut))


def longest_run(active: np.ndarray, around: int) -> tuple[int, int] | None:
    """The inclusive run of True holding index `around` (else the longest run), or None."""
    if not active.any():
        return None
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    holding = np.flatnonzero((starts <= around) & (ends >= around))
    i = holding[0] if len(holding) else int(np.argmax(ends - starts))
    return int(starts[i]), int(ends[i])


def query_field(field: FeatureField, extractor: FeatureExtractor, text: str,
                settings: QuerySettings = QuerySettings(),
                negatives: tuple[str, ...] = CANONICAL_NEGATIVES) -> QueryResult:
    """Where (per frame) and when (the span) the text matches."""
    embeddings = extractor.encode_text([text, *negatives])
    return query_embeddings(field, embeddings[0], embeddings[1:], settings)


def _top_score(raw: torch.Tensor, k: int) -> float:
    """The best frame's mean raw relevancy over its top-k Gaussians."""
    return float(raw.float().topk(k, dim=1).values.mean(1).max())


def null_relevancy(field: FeatureField, negatives: torch.Tensor, k: int) -> float:
    """The best score a canonical negative reaches against the other negatives on this field: how high a
    text that names nothing in the scene scores through these compressed codes. Cached on the field."""
    key = f"null_relevancy_{k}_{len(negatives)}"
    if key not in field.stats:
        scores = [0.5]
        for j in range(len(negatives)):
            others = torch.cat([negatives[:j], negatives[j + 1:]])
            if len(others):
                scores.append(_top_score(raw_relevancy(field, negatives[j], others), k))
        field.stats[key] = max(scores)
    return float(field.stats[key])


def _no_match(T: int, N: int, device, best: float, threshold: float) -> QueryResult:
    never = np.full(N, -1, np.int32)
    return QueryResult(span=None, temporal_score=np.zeros(T, np.float32),
                       masks=torch.zeros(T, N, dtype=torch.bool, device=device),
                       relevancy=torch.zeros(T, N, dtype=torch.float16, device=device), mask_start=never,
                       mask_end=never.copy(), peak=np.zeros(N, np.float32), best_relevancy=best, threshold=threshold)


def _normalised(raw: torch.Tensor, peak_value: float) -> torch.Tensor:
    """Raw relevancy → normalised: 0 at 0.5 (as close to the text as to a negative), 1 at the peak."""
    rel = (raw.float() - 0.5).clamp_min_(0)
    return rel.div_(peak_value) if peak_value > 0 else rel


def event_span(top: torch.Tensor, peak_value: float, settings: QuerySettings
               ) -> tuple[np.ndarray, tuple[int, int] | None]:
    """(the temporal score (T,): each frame's mean normalised top relevancy `top` (T, k), smoothed, peak 1; the
    event's span, None when nothing reaches the text (peak_value 0))."""
    score = smooth(top.mean(1).cpu().numpy(), settings.smoothing)
    if score.max() > 0:
        score = score / score.max()
    # A match that varies over time is an event: cut between its low and high levels. A steady match (a static
    # object asked by name) holds for the whole sequence.
    low = float(score.min())
    if 1.0 - low > settings.min_event_contrast:
        active = score >= low + settings.temporal_threshold * (1.0 - low)
    else:
        active = score > 0
    return score, longest_run(active, int(np.argmax(score))) if peak_value > 0 else None


def grow_masks(span_masks: torch.Tensor, inside: torch.Tensor, code: torch.Tensor, neighbours: torch.Tensor,
               low: float, rounds: int, fill_rounds: int = 3) -> None:
    """Grow (F, N) bool `span_masks` in place along `neighbours` ((N, k) indices): hysteresis from the Gaussians
    selected in at least half the frames, through Gaussians whose mean `inside` (normalised relevancy) over the
    frames where they have a code (`code`, (F, N) bool) reaches `low`; then Gaussians with no code in any
    frame take the majority of their coded neighbours' answer (over `fill_rounds` hops, for interiors). A grown
    Gaussian joins the frames where its relevancy reaches `low` or where it has no code. Per Gaussian, not per
    frame: a few (N, k) gathers, whatever the span's length; nothing waits for the device."""
    frames = span_masks.shape[0]
    grown = span_masks.sum(0, dtype=torch.int32) * 2 >= frames
    counted = code.sum(0, dtype=torch.int32)
    level = (inside * code).sum(0) / counted.clamp_min(1)
    reach = level >= low
    for _ in range(rounds):
        grown |= reach & grown[neighbours].any(1)
    known = counted > 0
    for _ in range(fill_rounds):
        voters = known[neighbours]
        votes = (grown[neighbours] & voters).sum(1, dtype=torch.int32)
        voting = voters.sum(1, dtype=torch.int32)
        take = ~known & (voting > 0)
        grown |= take & (votes * 2 > voting)
        known = known | take
    span_masks |= grown[None] & ((inside >= low) | ~code)


def query_embeddings(field: FeatureField, positive: torch.Tensor, negatives: torch.Tensor,
                     settings: QuerySettings = QuerySettings()) -> QueryResult:
    raw = raw_relevancy(field, positive, negatives)
    N = raw.shape[1]
    k = min(N, max(16, int(settings.top_fraction * N)))
    top = raw.topk(k, dim=1).values.float()              # (S, k): the match test's, see _top_score
    best, top_peak = torch.stack([top.mean(1).max(), top[:, 0].max()]).tolist()   # one wait for both
    threshold = max(settings.min_relevancy, null_relevancy(field, negatives, k) + settings.null_margin)
    if best < threshold:
        return _no_match(field.total_timesteps, N, raw.device, best, threshold)
    raw_t = per_frame(raw, field.timesteps, field.total_timesteps)             # (T, N) float16
    if raw_t.shape[0] != top.shape[0]:   # frames between samples: their own top-k (else the same one serves,
        top = raw_t.topk(k, dim=1).values.float()        # normalising below is monotonic)
        top_peak = float(top[:, 0].max())
    peak_value = max(top_peak - 0.5, 0.0)                # 0.5 = as close to the text as to a negative
    T = raw_t.shape[0]
    score, span = event_span(_normalised(top, peak_value), peak_value, settings)
    if span is None:
        return _no_match(T, N, raw.device, best, threshold)
    # Only the span's frames are normalised and cut (the masks are empty elsewhere); every frame's relevancy
    # is made if the result is asked for it.
    raw_span = raw_t[span[0]:span[1] + 1].float()
    inside = _normalised(raw_span, peak_value)
    cut = settings.spatial_threshold
    if cut is None:   # a tensor: the device goes on without a wait
        cut = otsu_cut(inside, ignore_zeros=True).clamp_min_(settings.min_spatial_threshold)
    masks = torch.zeros((T, N), dtype=torch.bool, device=raw.device)
    span_masks = masks[span[0]:span[1] + 1]
    torch.ge(inside, cut, out=span_masks)
    span_masks &= raw_span >= threshold
    if field.neighbours is not None and settings.grow_threshold > 0:
        code = per_frame(field.has_code, field.timesteps, field.total_timesteps, span)
        grow_masks(span_masks, inside, code, field.neighbours, settings.grow_threshold, settings.grow_rounds)
    any_frame = span_masks.any(0)
    first = span_masks.byte().argmax(0) + span[0]        # argmax gives the first of equal maxima
    last = span[1] - span_masks.flip(0).byte().argmax(0)
    never = torch.full_like(first, -1)
    ends = torch.stack([torch.where(any_frame, first, never), torch.where(any_frame, last, never)]).int()
    # Both copied into pinned memory without waiting in between; one wait for the two.
    (ends, _), (peak, ready) = to_host(ends), to_host(inside.amax(0))
    if ready is not None:
        ready.synchronize()
    return QueryResult(span=span, temporal_score=score.astype(np.float32), masks=masks,
                       relevancy=lambda: _normalised(raw_t, peak_value).half(),
                       mask_start=ends[0].numpy(), mask_end=ends[1].numpy(), peak=peak.numpy(),
                       best_relevancy=best, threshold=threshold)
