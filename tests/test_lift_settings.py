"""The lifting settings an artist picks (engine/motion/lift_settings.py): effort and smoothness become the fit's
options, a mistyped option is refused before any work, and the effort changes how much the rigid fit does."""

from __future__ import annotations

import numpy as np
import pytest

from engine.motion import rigid_lifting
from engine.motion.handler import handle_animate
from engine.motion.lift_settings import LiftingError, lifting_options
from engine.motion.lifting import LiftOptions
from tests.motion_fixtures import QuietContext, box_case, box_motion
from engine.motion.frames import render_motion_video


def test_effort_and_smoothness_become_the_fits_options():
    default = LiftOptions.from_request(None, "cpu")
    assert default == LiftOptions(backend="cpu")
    fast = LiftOptions.from_request({"effort": "fast", "smoothness": 2.0})
    assert (fast.tracking_steps, fast.refine_steps, fast.iterations) == (3, 4, 10)
    assert fast.smooth_prior == 2.0 * default.smooth_prior and fast.smooth_weight == 2.0 * default.smooth_weight
    thorough = LiftOptions.from_request({"effort": "thorough", "refine_steps": 5, "smoothness": 0})
    assert (thorough.tracking_steps, thorough.refine_steps) == (8, 5)      # a field named wins over effort
    assert thorough.smooth_prior == 0.0
    assert lifting_options("default", 1.0) == {}
    assert lifting_options("fast", 0.5) == {"effort": "fast", "smoothness": 0.5}


@pytest.mark.parametrize("lifting, message", [
    ({"effort": "quick"}, "effort must be one of fast, default, thorough"),
    ({"smoothness": -0.5}, "smoothness must be within 0-100"),
    ({"smoothness": "high"}, "smoothness must be a number"),
    ({"iteratons": 3}, r"unknown lifting options \['iteratons'\]"),
    ({"backend": "gsplat"}, r"unknown lifting options \['backend'\]"),
])
def test_bad_settings_are_refused_with_what_to_do(lifting, message):
    with pytest.raises(LiftingError, match=message) as info:
        LiftOptions.from_request(lifting)
    assert "--lift-effort" in info.value.user_message()


def test_the_request_is_refused_before_any_work(tmp_path):
    # No video is given to the video generator: were the options checked late, that would fail first.
    params = {"ply_path": str(tmp_path / "missing.ply"), "generator": "video", "frames": 4, "width": 8,
              "height": 6, "device": "cpu", "options": {"lifting": {"effort": "quick"}}}
    arrays = {"indices": np.arange(3), "viewmat": np.eye(4), "K": np.eye(3), "file_to_world": np.eye(4)}
    with pytest.raises(LiftingError):
        handle_animate(QuietContext(), params, arrays)


def test_effort_sets_the_rigid_fits_step_budgets(tmp_path, monkeypatch):
    # The solver stops early once converged (a clean video needs few steps at any effort), so what effort
    # sets is each solve's budget: per frame when tracking (frames 0 and 1 double), then all frames jointly.
    case = box_case(per_object=80, width=48, height=36)
    frames = 4
    video, depth = render_motion_video(case.gaussians, case.indices, box_motion(case, frames), case.viewmat, case.K,
                                       case.width, case.height, backend="cpu")
    path = case.write(tmp_path / "box.ply")
    budgets: list[int] = []
    real = rigid_lifting.Solver.fit

    def recorded(self, start, *args, **kwargs):
        budgets.append((len(start), self.evaluations))
        return real(self, start, *args, **kwargs)

    monkeypatch.setattr(rigid_lifting.Solver, "fit", recorded)
    expected = {"fast": [(1, 6), (1, 6), (1, 3), (1, 3), (frames, 4)],
                "thorough": [(1, 16), (1, 16), (1, 8), (1, 8), (frames, 20)]}
    for effort, want in expected.items():
        budgets.clear()
        params = {"ply_path": str(path), "prompt": "", "generator": "video", "frames": frames, "fps": 12,
                  "width": case.width, "height": case.height, "device": "cpu", "motion": "rigid",
                  "options": {"lifting": {"effort": effort}}}
        arrays = {"indices": case.indices.astype(np.int64), "viewmat": case.viewmat, "K": case.K,
                  "file_to_world": np.eye(4), "video": video, "depth": depth}
        result, _ = handle_animate(QuietContext(), params, arrays)
        assert result["motion"] == "rigid" and budgets == want, (effort, budgets)
