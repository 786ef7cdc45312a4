"""No depth model: the motion is still lifted (from colour alone), but the user is told (warning code
"no_depth" with the result); a request that requires depth fails instead. An unknown depth model is refused."""

from __future__ import annotations

import numpy as np
import pytest

from engine import fallbacks
from engine.errors import AnimateGaussiansError, FallbackRefusedError
from engine.motion.frames import render_motion_video
from engine.motion.handler import handle_animate
from tests.motion_fixtures import QuietContext, box_case, box_motion, no_depth_model  # noqa: F401 (a fixture)

FRAMES = 3


@pytest.fixture(scope="module")
def video_request(tmp_path_factory):
    case = box_case()
    video, _ = render_motion_video(case.gaussians, case.indices, box_motion(case, FRAMES), case.viewmat, case.K,
                                   case.width, case.height, backend="cpu")
    path = case.write(tmp_path_factory.mktemp("depth_fallback") / "box.ply")

    def make(options, require=None):
        params = {"ply_path": str(path), "prompt": "", "generator": "video", "frames": FRAMES, "fps": 12,
                  "width": case.width, "height": case.height, "device": "cpu", "motion": "rigid",
                  "options": {"lifting": {"tracking_steps": 1, "refine_steps": 0}, **options}}
        if require:
            params["require"] = require
        arrays = {"indices": case.indices.astype(np.int64), "viewmat": case.viewmat, "K": case.K,
                  "file_to_world": np.eye(4), "video": video}
        return params, arrays
    return make


def test_no_depth_model_is_a_warning_with_the_result(video_request, no_depth_model):
    params, arrays = video_request({})
    with fallbacks.collecting(params) as warnings:
        result, out = handle_animate(QuietContext(), params, arrays)
    assert out["transforms"].shape == (FRAMES, 4, 4)
    assert [w["code"] for w in warnings] == ["no_depth"]
    assert "colour alone" in warnings[0]["message"]


def test_require_depth_refuses_the_colour_only_lift(video_request, no_depth_model):
    params, arrays = video_request({}, require=["no_depth"])
    with fallbacks.collecting(params), pytest.raises(FallbackRefusedError, match="--require-depth"):
        handle_animate(QuietContext(), params, arrays)


def test_an_unknown_depth_model_is_refused_by_name(video_request):
    params, arrays = video_request({"depth_model": "depth-nothing"})
    with fallbacks.collecting(params), pytest.raises(AnimateGaussiansError, match="depth-nothing") as info:
        handle_animate(QuietContext(), params, arrays)
    assert "depth-anything-v2-small" in info.value.user_message()
