"""Preset matching by meaning has a floor: a prompt whose closest preset is not close enough is refused with the
list of presets (not animated with the nearest one), and a CLIP that cannot be used is said as such (a warning,
and in the error), not reported as "no preset matches" alone."""

from __future__ import annotations

import numpy as np
import pytest

from engine import fallbacks
from engine.errors import FallbackRefusedError
from engine.models.registry import ModelUnavailableError
from engine.motion import presets as P
from engine.motion import text_similarity
from engine.motion.generators.base import GeneratorError

UP = np.array([0.0, 0.0, 1.0])
POINTS = np.random.default_rng(0).normal(size=(50, 3))


def _answer(name, score):
    def best_match(prompt, candidates):
        return name, score
    return best_match


def test_a_distant_preset_is_not_taken(monkeypatch):
    monkeypatch.setattr(text_similarity, "best_match", _answer("spin", 0.62))
    assert P.match_prompt("the mug contemplates its life", P.load_presets()) == []
    with pytest.raises(GeneratorError, match="only 0.62 similar") as err:
        P.motion_from_prompt("the mug contemplates its life", POINTS, np.zeros((0, 3)), UP, None, 10)
    for name in ("spin", "slide", "tip over", "bounce"):
        assert name in err.value.hint
    monkeypatch.setattr(text_similarity, "best_match", _answer("spin", 0.9))
    T, info = P.motion_from_prompt("the top whirls", POINTS, np.zeros((0, 3)), UP, None, 10)
    assert info["presets"] == ["spin"]


def test_a_clip_failure_is_said_and_warned(monkeypatch):
    def unavailable(prompt, candidates):
        raise ModelUnavailableError("the CLIP text model is not on this machine")

    monkeypatch.setattr(text_similarity, "best_match", unavailable)
    with fallbacks.collecting({}) as warnings, pytest.raises(GeneratorError) as err:
        P.motion_from_prompt("the mug contemplates", POINTS, np.zeros((0, 3)), UP, None, 10)
    assert "CLIP could not be used" in str(err.value) and "not on this machine" in str(err.value)
    assert [w["code"] for w in warnings] == ["no_clip"]
    with fallbacks.collecting({"require": ["no_clip"]}), pytest.raises(FallbackRefusedError, match="--require-clip"):
        P.motion_from_prompt("the mug contemplates", POINTS, np.zeros((0, 3)), UP, None, 10)
