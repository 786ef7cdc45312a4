"""One diffusers pipeline resident at a time: the previous one is freed before the next loads (two 14B models
on one GPU do not fit), as when an end pose switches the default from first-frame to first+last-frame."""

from __future__ import annotations

import gc
import weakref

import pytest

pytest.importorskip("diffusers")

import diffusers  # noqa: E402

from engine.motion.generators import diffusers_i2v  # noqa: E402
from engine.motion.generators.tiny_pipelines import tiny_pipeline  # noqa: E402


def test_the_previous_pipeline_is_freed_before_the_next_loads(monkeypatch, tmp_path):
    first_id, second_id = "ltx-video-0.9.5", "cogvideox-5b-i2v"
    for pid in (first_id, second_id):
        folder = tmp_path / pid
        folder.mkdir()
        monkeypatch.setenv("ANIMATE_GAUSSIANS_MODEL_" + "".join(c if c.isalnum() else "_" for c in pid).upper(),
                           str(folder))
    seen_at_load = []
    alive = {}

    def loader(pipeline_class):
        def from_pretrained(path, torch_dtype=None):
            previous = alive.get("ref")
            gc.collect()
            seen_at_load.append((len(diffusers_i2v._LOADED), previous is not None and previous() is not None))
            return tiny_pipeline(pipeline_class)
        return from_pretrained

    for name in ("LTXConditionPipeline", "CogVideoXImageToVideoPipeline"):
        monkeypatch.setattr(getattr(diffusers, name), "from_pretrained", loader(name))
    diffusers_i2v._LOADED.clear()
    try:
        pipe = diffusers_i2v.load_pipeline(diffusers_i2v.PROFILES[first_id], "cpu")
        alive["ref"] = weakref.ref(pipe)
        del pipe
        second = diffusers_i2v.load_pipeline(diffusers_i2v.PROFILES[second_id], "cpu")
        assert seen_at_load == [(0, False), (0, False)], seen_at_load   # nothing resident while loading
        assert list(diffusers_i2v._LOADED) == [(second_id, "cpu")]
        assert diffusers_i2v.load_pipeline(diffusers_i2v.PROFILES[second_id], "cpu") is second   # reused
    finally:
        diffusers_i2v._LOADED.clear()
