"""Monocular depth per video frame: a tiny random Depth Anything V2 of the real class runs the real code path."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from engine.errors import CancelledError  # noqa: E402
from engine.models import registry  # noqa: E402
from engine.motion.depth_models import (DEPTH_MODELS, _network_size, estimate_depth,  # noqa: E402
                                        tiny_depth_anything)


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_depth_anything()


def test_estimate_depth_shape_kind_and_finiteness(tiny_model):
    frames = np.random.default_rng(0).integers(0, 255, (5, 30, 44, 3), dtype=np.uint8)
    seen = []
    depth, kind = estimate_depth(frames, "depth-anything-v2-small", "cpu", model=tiny_model, batch_size=2,
                                 input_size=56, progress=lambda f, s: seen.append(f))
    assert depth.shape == (5, 30, 44) and depth.dtype == np.float32
    assert np.isfinite(depth).all()
    assert kind == "disparity"
    assert seen == pytest.approx([0.4, 0.8, 1.0])


def test_estimate_depth_checks_input_and_cancels(tiny_model):
    with pytest.raises(ValueError, match="uint8"):
        estimate_depth(np.zeros((2, 8, 8, 3), np.float32), model=tiny_model)
    with pytest.raises(registry.ModelUnavailableError):
        estimate_depth(np.zeros((1, 8, 8, 3), np.uint8), "midas-v9", model=tiny_model)

    def cancel():
        raise CancelledError("cancelled")

    with pytest.raises(CancelledError):
        estimate_depth(np.zeros((3, 28, 28, 3), np.uint8), model=tiny_model, input_size=28, check_cancelled=cancel)


def test_network_size_keeps_aspect_on_the_patch_grid():
    assert _network_size(480, 640, 518) == (518, 686)
    h, w = _network_size(720, 1280, 518)
    assert h % 14 == 0 and w % 14 == 0 and abs(w / h - 1280 / 720) < 0.03


def test_every_depth_model_is_registered():
    for model_id, spec in DEPTH_MODELS.items():
        entry = registry.model_entry(model_id)
        assert entry.kind == "depth" and entry.source == "hf" and entry.size_bytes > 10**7 and entry.licence
        assert spec.output in ("depth", "disparity")


def test_missing_weights_with_downloads_off_say_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setenv("ANIMATE_GAUSSIANS_MODELS", str(tmp_path))
    monkeypatch.setenv("ANIMATE_GAUSSIANS_OFFLINE", "1")
    with pytest.raises(registry.ModelUnavailableError) as info:
        estimate_depth(np.zeros((1, 8, 8, 3), np.uint8), "depth-anything-v2-small")
    assert "ANIMATE_GAUSSIANS_MODEL_DEPTH_ANYTHING_V2_SMALL" in info.value.hint
