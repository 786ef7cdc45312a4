"""Motion from a video our renderer did not make (tests/video_sources.py: plain round splats, another colour
response, JPEG or mp4): the rigid motion must come back right (image plane), still where the video cannot
see (along the view ray), smooth (no frame-to-frame jitter), and rigid under "auto"."""

from __future__ import annotations

import numpy as np
import pytest

from blender_addon.animate.keyframes import reduce_keys
from blender_addon.animate.motion_result import object_basis_motion
from engine import fallbacks
from engine.motion.handler import handle_animate
from tests.motion_fixtures import QuietContext, no_depth_model  # noqa: F401 (a fixture)
from tests.video_sources import draw_motion, jpeg, object_scene, steady_motion, track_errors, write_mp4

FRAMES = 8


def _lift(scene, path, video, depth=None, video_path=None, frames=FRAMES):
    params = {"ply_path": str(path), "prompt": "", "generator": "video", "frames": frames, "fps": 24,
              "width": scene.width, "height": scene.height, "device": "cpu", "motion": "auto",
              "video_path": video_path, "options": {"depth_kind": "disparity"} if depth is not None else {}}
    arrays = {"indices": scene.indices, "viewmat": scene.viewmat, "K": scene.K, "file_to_world": np.eye(4)}
    if video is not None:
        arrays["video"] = video
    if depth is not None:
        # What a monocular model gives: disparity up to an unknown scale and shift; the handler aligns it.
        arrays["depth"] = np.where(depth > 0, 2.0 / np.maximum(depth, 1e-3) + 0.5, 0.0).astype(np.float32)
    with fallbacks.collecting(params) as warnings:
        result, out = handle_animate(QuietContext(), params, arrays)
    return result, out, [w["code"] for w in warnings]


@pytest.mark.parametrize("textured", [True, False], ids=["textured", "textureless"])
@pytest.mark.parametrize("motion", ["slide", "turn"])
@pytest.mark.parametrize("with_depth", [True, False], ids=["depth", "no_depth"])
def test_rigid_motion_from_a_foreign_jpeg_video(textured, motion, with_depth, no_depth_model, tmp_path):
    scene = object_scene("box", textured, 80, 60, object_count=500, ground_count=1000)
    truth = steady_motion(scene, FRAMES, sideways=0.3 if motion == "slide" else 0.0,
                          degrees=35.0 if motion == "turn" else 0.0)
    video, depth = draw_motion(scene, truth)
    result, out, warnings = _lift(scene, scene.write(tmp_path / "scene.ply"), jpeg(video, 70),
                                  depth if with_depth else None)
    assert result["motion"] == "rigid", result["info"]
    assert warnings == ([] if with_depth else ["no_depth"])
    errors = track_errors(scene, truth, out["transforms"])
    assert errors["image_plane"] <= 0.03, errors
    assert errors["view_ray"] <= 0.05, errors
    assert errors["jitter"] < 0.01, errors


def test_the_issue_17_sphere_from_an_mp4(no_depth_model, tmp_path):
    """A uniformly coloured sphere translating steadily in the image plane, 24 frames at 160×120, an mp4
    through the video generator, CPU, no depth model: rigid, accurate, smooth, and a handful of keys."""
    frames = 24
    scene = object_scene("sphere", False, 160, 120, object_count=4000, ground_count=2000)
    truth = steady_motion(scene, frames, sideways=0.6)
    video, _ = draw_motion(scene, truth)
    clip = write_mp4(video, tmp_path / "sphere.mp4")
    result, out, warnings = _lift(scene, scene.write(tmp_path / "scene.ply"), None, video_path=str(clip),
                                  frames=frames)
    assert result["motion"] == "rigid" and result["frames"] == frames, result["info"]
    assert warnings == ["no_depth"]
    errors = track_errors(scene, truth, out["transforms"])
    assert errors["image_plane"] <= 0.03, errors
    assert errors["view_ray"] <= 0.05, errors
    assert errors["jitter"] < 0.01, errors
    # The keys the add-on writes (its default tolerances: 1 mm, 0.1°) for one straight, steady line.
    location, quat, _ = object_basis_motion(out["transforms"], np.eye(4), np.eye(4))
    times = np.arange(frames, dtype=np.float64)
    location_keys = reduce_keys(times, location, 1e-3)
    rotation_keys = reduce_keys(times, quat, np.radians(0.1) / 4.0)
    assert len(location_keys.times) <= 6 and len(rotation_keys.times) <= 6, \
        (len(location_keys.times), len(rotation_keys.times))
