"""The `diffusers` generator end to end on CPU with tiny random pipelines of the real classes, and its profiles."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers")

from engine.errors import CancelledError  # noqa: E402
from engine.models import registry  # noqa: E402
from engine.motion.generators.base import GeneratorError, MotionRequest  # noqa: E402
from engine.motion.generators.diffusers_i2v import (PROFILES, DiffusersI2VGenerator, call_arguments,  # noqa: E402
                                                    model_shape)
from engine.motion.generators.tiny_pipelines import tiny_pipeline  # noqa: E402
from engine.motion.video_framing import plan_framing, to_model_frame  # noqa: E402

CAM_W, CAM_H = 48, 32


class Spy:
    """Wraps a pipeline and keeps the keyword arguments of each call."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.pipe(**kwargs)


def _frames():
    rng = np.random.default_rng(0)
    first = rng.integers(0, 255, (CAM_H, CAM_W, 3), dtype=np.uint8)
    last = rng.integers(0, 255, (CAM_H, CAM_W, 3), dtype=np.uint8)
    return first, last


def _request(first, last, frames=5, **options) -> MotionRequest:
    return MotionRequest(prompt="the mug slides to the right", frames=frames, fps=24.0,
                         segment_means=np.zeros((2, 3)), scene_means=np.zeros((2, 3)), up=np.array([0.0, -1.0, 0.0]),
                         viewmat=np.eye(4), K=np.eye(3), width=CAM_W, height=CAM_H, first_frame=first, last_frame=last,
                         options={"device": "cpu", "steps": 2, **options})


def test_wan_first_last_frame_end_to_end():
    first, last = _frames()
    spy = Spy(tiny_pipeline("WanImageToVideoPipeline"))
    stages = []
    result = DiffusersI2VGenerator(spy, PROFILES["wan2.1-flf2v-14b-720p"]).generate(
        _request(first, last, frames=5, model_width=32, model_height=32, model_frames=9),
        lambda f, s: stages.append((f, s)), lambda: None)

    assert result.video.shape == (5, CAM_H, CAM_W, 3) and result.video.dtype == np.uint8
    call = spy.calls[0]
    framing = plan_framing(CAM_H, CAM_W, 32, 32)
    np.testing.assert_array_equal(np.asarray(call["image"]), to_model_frame(first, framing))
    np.testing.assert_array_equal(np.asarray(call["last_image"]), to_model_frame(last, framing))
    assert call["num_frames"] == 9 and (call["width"], call["height"]) == (32, 32)
    assert call["prompt"].startswith("the mug slides to the right") and "Static camera" in call["prompt"]
    assert result.info["last_frame_used"] is True and result.info["model"] == "wan2.1-flf2v-14b-720p"
    steps = [s for _, s in stages if "step" in s]
    assert len(steps) == 2 and stages[-1][0] == 1.0


def test_ltx_conditions_on_first_and_last_frame_and_the_last_frame_matters():
    first, last = _frames()
    spy = Spy(tiny_pipeline("LTXConditionPipeline"))
    generator = DiffusersI2VGenerator(spy, PROFILES["ltx-video-0.9.5"])
    options = {"model_width": 32, "model_height": 32, "model_frames": 9, "seed": 3}
    a = generator.generate(_request(first, last, frames=9, **options), lambda f, s: None, lambda: None)
    b = generator.generate(_request(first, 255 - last, frames=9, **options), lambda f, s: None, lambda: None)
    conditions = spy.calls[0]["conditions"]
    assert [c.frame_index for c in conditions] == [0, 8]
    framing = plan_framing(CAM_H, CAM_W, 32, 32)
    np.testing.assert_array_equal(np.asarray(conditions[0].image), to_model_frame(first, framing))
    np.testing.assert_array_equal(np.asarray(conditions[1].image), to_model_frame(last, framing))
    assert "image" not in spy.calls[0]
    assert a.video.shape == (9, CAM_H, CAM_W, 3)
    assert not np.array_equal(a.video, b.video)   # the end pose reaches the model (weakly: its weights are random)


def test_cogvideox_takes_the_first_frame_only():
    first, last = _frames()
    spy = Spy(tiny_pipeline("CogVideoXImageToVideoPipeline"))
    result = DiffusersI2VGenerator(spy, PROFILES["cogvideox-5b-i2v"]).generate(
        _request(first, last, frames=7, model_width=16, model_height=16, model_frames=9,
                 call_options={"max_sequence_length": 16}), lambda f, s: None,
        lambda: None)
    call = spy.calls[0]
    np.testing.assert_array_equal(np.asarray(call["image"]), to_model_frame(first, plan_framing(CAM_H, CAM_W, 16, 16)))
    assert not any(k in call for k in ("last_image", "conditions")) and call["max_sequence_length"] == 16
    assert result.video.shape == (7, CAM_H, CAM_W, 3) and result.info["last_frame_used"] is False


def test_cancel_between_denoising_steps():
    first, last = _frames()
    generator = DiffusersI2VGenerator(tiny_pipeline("LTXConditionPipeline"), PROFILES["ltx-video-0.9.5"])

    def cancel():
        raise CancelledError("cancelled")

    with pytest.raises(CancelledError):
        generator.generate(_request(first, last, model_width=32, model_height=32, model_frames=9),
                           lambda f, s: None, cancel)


def test_first_last_model_without_an_end_pose_says_what_to_do():
    first, _ = _frames()
    generator = DiffusersI2VGenerator(object(), PROFILES["wan2.1-flf2v-14b-720p"])
    with pytest.raises(GeneratorError) as info:
        generator.generate(_request(first, None), lambda f, s: None, lambda: None)
    assert "end frame" in info.value.hint


@pytest.mark.parametrize("profile_id", sorted(PROFILES))
def test_profiles_name_real_classes_and_arguments(profile_id):
    from PIL import Image

    profile = PROFILES[profile_id]
    cls = getattr(diffusers, profile["pipeline"])
    accepted = set(inspect.signature(cls.__call__).parameters)
    width, height, frames = model_shape(profile, {})
    assert width % profile["size_multiple"] == 0 and height % profile["size_multiple"] == 0
    assert (frames - 1) % profile["frame_step"] == 0 and frames == profile["frames"]
    image = Image.new("RGB", (width, height))
    kwargs = call_arguments(profile, image, image, "the ball bounces", width, height, frames, 2, 1.0, None)
    assert set(kwargs) <= accepted, set(kwargs) - accepted
    assert ("last_image" in kwargs or "conditions" in kwargs) == (profile["conditioning"] == "first_last")
    entry = registry.model_entry(profile_id)
    assert entry.kind == "image_to_video" and entry.source == "hf" and entry.location == profile["hub_id"]
    assert entry.size_bytes > 10**9 and entry.licence


def test_availability_follows_weights_and_the_offline_switch(monkeypatch, tmp_path):
    monkeypatch.setenv("ANIMATE_GAUSSIANS_MODELS", str(tmp_path))
    monkeypatch.delenv("ANIMATE_GAUSSIANS_OFFLINE", raising=False)
    assert DiffusersI2VGenerator().available() == (True, "")          # fetched on first use
    monkeypatch.setenv("ANIMATE_GAUSSIANS_OFFLINE", "1")
    ok, why = DiffusersI2VGenerator().available()
    assert not ok and "ANIMATE_GAUSSIANS_MODEL_" in why
    snapshot = tmp_path / "ltx-video-0.9.5" / "snapshot"
    snapshot.mkdir(parents=True)
    (snapshot / ".complete").touch()
    assert DiffusersI2VGenerator().available() == (True, "")          # a cached snapshot
