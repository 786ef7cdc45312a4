"""Gaussians that no view sees at a timestep (a ball's underside on the floor, Gaussians behind others) take the
codes of their seen colour-alike neighbours at that timestep: they are in a query's mask where their object is,
the floor is not, and the field file keeps which codes were filled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.dynamic import make_moving_sequence
from engine.query4d.features import OracleFeatureExtractor
from engine.query4d.field import FeatureField, FieldOptions, build_feature_field, colour_weights, fill_unseen
from engine.query4d.query import QuerySettings, query_field
from tests.test_query4d import NAMES, one_thread  # noqa: F401 (a fixture)


def test_codes_spread_one_hop_per_round_to_the_same_colour_only():
    # A chain 0–1–2–3–4 of red Gaussians touching grey ones (5, 6); only Gaussian 0 (red) and 5 (grey) seen.
    index = torch.tensor([[1, 5], [0, 2], [1, 3], [2, 4], [3, 6], [6, 4], [5, 4]])
    rgb = torch.tensor([[1.0, 0.0, 0.0]] * 5 + [[0.5, 0.5, 0.5]] * 2)
    codes = torch.zeros(7, 2)
    codes[0], codes[5] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    known = torch.zeros(7, dtype=torch.bool)
    known[[0, 5]] = True
    w = colour_weights(index, rgb, 0.2)
    out, filled = fill_unseen(index, codes, known, w, rounds=2)
    assert filled.tolist() == [False, True, True, False, False, False, True]   # two hops; 6 from grey 5
    assert torch.allclose(out[[1, 2]], torch.tensor([[1.0, 0.0]] * 2), atol=1e-2)   # red, not grey
    assert torch.allclose(out[6], torch.tensor([0.0, 1.0]), atol=1e-2)
    out, filled = fill_unseen(index, codes, known, w, rounds=10)
    assert filled[[1, 2, 3, 4]].all() and torch.allclose(out[4], torch.tensor([1.0, 0.0]), atol=1e-2)
    # A Gaussian whose only coded neighbours are of another colour keeps no code (no evidence beats a wrong one).
    lonely = torch.tensor([[1], [0]])
    _, filled = fill_unseen(lonely, torch.tensor([[0.0, 0.0], [0.0, 1.0]]), torch.tensor([False, True]),
                            colour_weights(lonely, rgb[[0, 5]], 0.2), rounds=3)
    assert not filled.any()


def _build(seq, **changes) -> FeatureField:
    options = dict(views=3, width=40, height=40, scales=(0.25, 0.125, 0.0625), backend="cpu", ae_iterations=150,
                   knn=8)   # a pooling reach small against the ball, as 32 neighbours at 50,000 Gaussians each
    torch.manual_seed(0)
    return build_feature_field(seq, OracleFeatureExtractor(NAMES), FieldOptions(**dict(options, **changes)), "cpu")


@pytest.fixture(scope="module")
def sparse_views(one_thread):
    """Few, coarse views (3 at 40 px, from above) and a pooling reach small against the ball: part of its
    underside is seen by none of them. The same field built with and without fills."""
    seq = make_moving_sequence(400, timesteps=9, move_start=3, move_end=6)
    return seq, _build(seq, fill_rounds=8), _build(seq, fill_rounds=0)


def _mid_span(seq, field, grow: float = 0.0):
    # The fill's own effect: the query's growth along neighbours off unless asked for (test_query4d_grow.py).
    result = query_field(field, OracleFeatureExtractor(NAMES), "the red sphere rolling",
                         settings=QuerySettings(grow_threshold=grow))
    assert result.span is not None and abs(result.span[0] - 3) <= 1 and abs(result.span[1] - 6) <= 1
    mid = (result.span[0] + result.span[1]) // 2
    mask, ball = result.masks[mid].numpy(), seq.labels == 1
    return mid, mask, (mask & ball).sum() / (mask | ball).sum()


def test_unseen_underside_of_the_rolling_ball_is_in_its_mask_and_the_floor_is_not(sparse_views, tmp_path):
    seq, field, unfilled = sparse_views
    ball, floor = seq.labels == 1, seq.labels == 0
    mid, mask, iou = _mid_span(seq, field)
    _, mask_before, iou_before = _mid_span(seq, unfilled)
    hidden = ball & ~field.seen[mid].numpy()
    print(f"ball {ball.sum()}, unseen {hidden.sum()}, in the mask {(mask & hidden).sum()} "
          f"(before {(mask_before & hidden).sum()}); "
          f"IoU {iou:.3f} (before {iou_before:.3f}); floor in the mask {(mask & floor).sum()} "
          f"(before {(mask_before & floor).sum()}) of {floor.sum()}")
    assert torch.equal(field.seen, unfilled.seen)       # seen stays "observed"
    assert hidden.sum() >= 0.05 * ball.sum()            # the case this is about: a real share no view saw
    assert field.filled[mid].numpy()[hidden].all() and not (mask_before & hidden).any()   # before: relevancy 0.5
    assert (mask & hidden).sum() >= 0.3 * hidden.sum()
    assert iou > iou_before
    assert (mask & floor).sum() <= (mask_before & floor).sum() + 2    # the floor under the ball kept its own codes
    assert 0 < field.stats["filled_fraction"] < 0.5
    # The query's own growth reaches the same underside without the fill (its Gaussians with no code take
    # their neighbours' answer) and keeps the floor out.
    _, mask_grown, iou_grown = _mid_span(seq, unfilled, grow=QuerySettings().grow_threshold)
    print(f"without the fill, grown: unseen in the mask {(mask_grown & hidden).sum()}, IoU {iou_grown:.3f}, "
          f"floor {(mask_grown & floor).sum()}")
    assert (mask_grown & hidden).sum() >= 0.3 * hidden.sum() and iou_grown > iou_before
    assert (mask_grown & floor).sum() <= (mask_before & floor).sum() + 2
    # The file keeps the fills; a file written before them loads as having none.
    back = FeatureField.load(field.save(tmp_path / "f.npz"), "cpu")
    assert torch.equal(back.filled, field.filled) and torch.equal(back.has_code, field.seen | field.filled)
    with np.load(tmp_path / "f.npz") as z:
        np.savez(tmp_path / "old.npz", **{k: z[k] for k in z.files if k != "filled"})
    old = FeatureField.load(tmp_path / "old.npz", "cpu")
    assert old.filled is None and torch.equal(old.has_code, field.seen)
