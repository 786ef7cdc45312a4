"""Prompt -> closest candidate by open_clip text embeddings (a tiny random CLIP with the real tokenizer)."""

from __future__ import annotations

import pytest

pytest.importorskip("open_clip")

from engine.models.registry import ModelUnavailableError  # noqa: E402
from engine.motion import text_similarity  # noqa: E402
from engine.segment.clip_text import tiny_clip  # noqa: E402


@pytest.fixture(scope="module")
def clip():
    return tiny_clip()


def test_exact_phrase_wins_with_cosine_one(clip):
    phrases = ["an object bounces", "an object spins", "an object slides", "an object tips over"]
    for phrase in phrases:
        name, score = text_similarity.best_match(phrase, phrases, clip=clip)
        assert name == phrase and score == pytest.approx(1.0, abs=1e-5)


def test_mapping_returns_the_name_of_the_best_phrase(clip):
    candidates = {"bounce": ["an object bounces", "bouncing"], "spin": ["an object spins"], "roll": []}
    assert text_similarity.best_match("bouncing", candidates, clip=clip)[0] == "bounce"
    assert text_similarity.best_match("roll", candidates, clip=clip)[0] == "roll"   # no phrases: its name
    scores = text_similarity.similarities("an object spins", ["an object spins", "bouncing"], clip=clip)
    assert scores.shape == (2,) and scores[0] == pytest.approx(1.0, abs=1e-5) and scores[1] < 1.0


def test_without_weights_it_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("ANIMATE_GAUSSIANS_MODELS", str(tmp_path))
    monkeypatch.delitem(text_similarity._CACHE, "clip", raising=False)
    assert text_similarity.text_model_available() is False
    with pytest.raises(ModelUnavailableError):
        text_similarity.best_match("the mug slides", ["an object slides"])
    with pytest.raises(ValueError):
        text_similarity.best_match("x", [], clip=object())
