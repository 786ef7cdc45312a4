"""query.grow_masks: a 4D query's masks grown along the field's neighbour graph (hysteresis through Gaussians of
slightly lower relevancy, and Gaussians without a code taking their coded neighbours' majority)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from tests.test_query4d import NAMES, _ious, field, one_thread, sequence  # noqa: F401 - fixtures

from engine.query4d.features import OracleFeatureExtractor
from engine.query4d.query import QuerySettings, grow_masks, query_field


def _chain(n: int) -> torch.Tensor:
    """Each node's neighbours on a line: itself, the one before and the one after."""
    i = torch.arange(n)
    return torch.stack([i, (i - 1).clamp_min(0), (i + 1).clamp_max(n - 1)], dim=1)


def test_growth_follows_neighbours_above_the_low_cut_and_fills_the_uncoded():
    # 10 Gaussians on a line, 4 frames. 0 is selected by the cut; 1-2 score 0.45 (above low 0.4, below the
    # cut); 3 scores 0.1 (stops the growth); 4 and 6 are selected again; 5 has no code in any frame, between
    # 4 and 6: it takes their answer; 8 has no code, between 7 and 9, which are not selected: it stays out.
    level = torch.tensor([0.9, 0.45, 0.45, 0.1, 0.9, 0.0, 0.9, 0.2, 0.0, 0.2])
    inside = level.repeat(4, 1)
    code = torch.ones(4, 10, dtype=torch.bool)
    code[:, 5] = code[:, 8] = False
    masks = inside >= 0.6
    grow_masks(masks, inside, code, _chain(10), low=0.4, rounds=8)
    assert masks.all(0).tolist() == [True, True, True, False, True, True, True, False, False, False]
    assert not masks.any(0)[[3, 7, 8, 9]].any()
    # A node with a code joins only the frames where its own relevancy reaches the low cut.
    inside2 = inside.clone()
    inside2[:, 1] = 0.55
    inside2[2, 1] = 0.1   # its mean over the frames (0.44) stays above the low cut
    masks2 = inside2 >= 0.6
    grow_masks(masks2, inside2, code, _chain(10), low=0.4, rounds=8)
    assert masks2[:, 1].tolist() == [True, True, False, True]


def test_growth_needs_enough_rounds_to_reach():
    inside = torch.tensor([[0.9] + [0.5] * 9])
    masks = inside >= 0.6
    grow_masks(masks, inside, torch.ones_like(masks), _chain(10), low=0.4, rounds=3)
    assert masks[0].tolist() == [True] * 4 + [False] * 6


def test_growth_does_not_lower_the_small_fields_iou(sequence, field):  # noqa: F811
    assert field.neighbours is not None and field.neighbours.shape[0] == field.count
    ext = OracleFeatureExtractor(NAMES)
    grown = query_field(field, ext, "the red sphere rolling")
    plain = query_field(field, ext, "the red sphere rolling",
                        settings=dataclasses.replace(QuerySettings(), grow_threshold=0.0))
    assert grown.span == plain.span
    frames = range(grown.span[0], grown.span[1] + 1)
    truth = sequence.labels == 1
    g, p = _ious(grown.masks, truth, frames), _ious(plain.masks, truth, frames)
    print(f"mean IoU over the event: grown {g.mean():.4f}, plain {p.mean():.4f}")
    assert g.mean() >= p.mean() - 1e-9 and g.min() >= 0.85
    assert (grown.masks | ~plain.masks).all()   # growth only adds
    outside = np.ones(grown.masks.shape[0], bool)
    outside[list(frames)] = False
    assert not grown.masks[torch.from_numpy(outside)].any()


def test_per_frame_of_a_span_is_that_span_of_every_frame():
    from engine.query4d.query import per_frame

    steps = np.array([0, 3, 7, 9])
    values = torch.rand(4, 5)
    every = per_frame(values, steps, 10)
    assert torch.equal(per_frame(values, steps, 10, (2, 8)), every[2:9])
    assert torch.equal(every[steps], values)
    flags = values > 0.5
    assert torch.equal(per_frame(flags, steps, 10, (4, 6)), per_frame(flags, steps, 10)[4:7])
