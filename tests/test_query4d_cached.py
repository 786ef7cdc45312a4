"""The 4D query with the field's text-independent part cached (inverse_norms) and only the span normalised
returns exactly what the direct computation returned before (the reference below is that code, as of commit
01547d5): the same bits in every field of the answer, on sampled and every-frame fields, with unseen
Gaussians, for a match and for no match, and again on the second query that reuses the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.query4d.field import FeatureField
from engine.query4d.query import (QuerySettings, event_span, inverse_norms, null_relevancy, otsu_threshold,
                                  per_frame, query_embeddings, raw_relevancy)


def reference_raw_relevancy(field, positive, negatives, budget=1 << 27):
    device = field.codes.device
    A, b = field.decoder_weight.float(), field.decoder_bias.float()
    texts = torch.cat([positive[None], negatives]).to(device).float()
    proj, offs = (texts @ A).T.contiguous(), texts @ b
    gram, lin, const = A.T @ A, 2.0 * (A.T @ b), b @ b
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    proj_c, gram_c, lin_c = proj.to(dtype), gram.to(dtype), lin.to(dtype)
    S, N, d = field.codes.shape
    chunk = max(1, min(S, budget // max(1, N * d)))
    out = torch.empty((S, N), dtype=torch.float16, device=device)
    for s in range(0, S, chunk):
        z = field.codes[s:s + chunk].to(dtype)
        dots = (z @ proj_c).float() + offs
        sq = ((z @ gram_c) * z).sum(-1).float() + (z @ lin_c).float() + const
        cos = dots * torch.rsqrt(sq.clamp_min(1e-12))[..., None]
        rel = torch.sigmoid(10.0 * (cos[..., :1] - cos[..., 1:])).amin(-1)
        out[s:s + chunk] = rel.masked_fill_(~field.seen[s:s + chunk], 0.5)
    return out


def reference_query(field, positive, negatives, settings=QuerySettings()):
    """(span, temporal_score, masks, relevancy, mask_start, mask_end, peak, best, threshold) or None (no match)."""
    raw = reference_raw_relevancy(field, positive, negatives)
    N = raw.shape[1]
    k = min(N, max(16, int(settings.top_fraction * N)))
    top = raw.float().topk(k, dim=1).values
    best = float(top.mean(1).max())
    threshold = max(settings.min_relevancy, null_relevancy(field, negatives, k) + settings.null_margin)
    if best < threshold:
        return None, best, threshold
    raw_t = per_frame(raw, field.timesteps, field.total_timesteps).float()
    if raw_t.shape[0] != top.shape[0]:
        top = raw_t.topk(k, dim=1).values
    peak_value = max(float(top[:, 0].max()) - 0.5, 0.0)
    rel = (raw_t - 0.5).clamp_min_(0)
    top = (top - 0.5).clamp_min_(0)
    if peak_value > 0:
        rel.div_(peak_value)
        top.div_(peak_value)
    T = rel.shape[0]
    score, span = event_span(top, peak_value, settings)     # unchanged by the caching: shared, not copied
    if span is None:
        return None, best, threshold
    inside = rel[span[0]:span[1] + 1]
    cut = max(otsu_threshold(inside, ignore_zeros=True), settings.min_spatial_threshold)
    masks = torch.zeros((T, N), dtype=torch.bool, device=raw.device)
    span_masks = masks[span[0]:span[1] + 1]
    torch.ge(inside, cut, out=span_masks)
    span_masks &= raw_t[span[0]:span[1] + 1] >= threshold
    any_frame = span_masks.any(0)
    first = span_masks.byte().argmax(0) + span[0]
    last = span[1] - span_masks.flip(0).byte().argmax(0)
    never = torch.full_like(first, -1)
    return (span, score.astype(np.float32), masks, rel.half(), torch.where(any_frame, first, never).cpu().numpy(),
            torch.where(any_frame, last, never).cpu().numpy(), inside.amax(0).cpu().numpy(), best, threshold)


def small_field(count: int, timesteps: int, stride: int, seed: int, d: int = 8, dim: int = 64, device="cpu"):
    """Codes around a background direction, a sixth of the Gaussians near the target's in the middle third
    of the frames, a few never seen; the canonical negatives near the background (random: exact bits only)."""
    g = torch.Generator().manual_seed(seed)
    A, b = torch.randn(dim, d, generator=g) / d ** 0.5, torch.randn(dim, generator=g) * 0.01
    unit = torch.nn.functional.normalize
    background, target = unit(torch.randn(d, generator=g), dim=0), unit(torch.randn(d, generator=g), dim=0)
    steps = np.unique(np.append(np.arange(0, timesteps, stride), timesteps - 1))
    codes = torch.empty(len(steps), count, d)
    for i, t in enumerate(steps):
        frame = background + 0.25 * torch.randn(count, d, generator=g)
        if timesteps // 3 <= t <= 2 * timesteps // 3:
            frame[:count // 6] = target + 0.3 * torch.randn(count // 6, d, generator=g)
        codes[i] = unit(frame, dim=-1)
    seen = torch.rand(len(steps), count, generator=g) > 0.05
    field = FeatureField(codes=(codes * seen[..., None]).half().to(device), seen=seen.to(device), timesteps=steps,
                         total_timesteps=timesteps, decoder_weight=A.to(device), decoder_bias=b.to(device),
                         extractor="synthetic")
    negatives = (A @ (background + 0.005 * torch.randn(4, d, generator=g)).T).T + b
    return field, (A @ target + b).to(device), negatives.to(device)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]   # float32 products on the CPU, float16 on CUDA


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stride", [1, 3])
def test_cached_query_returns_exactly_the_direct_answer(stride, device):
    field, positive, negatives = small_field(3000, 30, stride, seed=stride, device=device)
    assert torch.equal(raw_relevancy(field, positive, negatives),
                       reference_raw_relevancy(field, positive, negatives))
    norms = inverse_norms(field)
    for attempt in range(2):       # the second query reuses the field's cached norms
        want = reference_query(field, positive, negatives)
        got = query_embeddings(field, positive, negatives)
        assert got.matched and want[0] is not None
        span, score, masks, relevancy, start, end, peak, best, threshold = want
        assert got.span == span and np.array_equal(got.temporal_score, score)
        assert torch.equal(got.masks, masks) and got.masks.any()
        assert torch.equal(got.relevancy, relevancy)
        assert np.array_equal(got.mask_start, start) and np.array_equal(got.mask_end, end)
        assert np.array_equal(got.peak, peak) and got.peak.dtype == np.float32
        assert got.best_relevancy == best and got.threshold == threshold
    assert inverse_norms(field) is norms


@pytest.mark.parametrize("device", DEVICES)
def test_no_match_is_the_same_no_match(device):
    field, _, negatives = small_field(2000, 12, 1, seed=7, device=device)
    absent = negatives.mean(0) + 0.001       # a text that is one more negative: nothing is closer to it
    (none, best, threshold) = reference_query(field, absent, negatives)
    got = query_embeddings(field, absent, negatives)
    assert none is None and not got.matched and not got.masks.any() and not got.relevancy.any()
    assert got.best_relevancy == best and got.threshold == threshold
