"""Motion presets: the data files load, prompts match, and every preset moves the object validly while it
stays on what is below it; the "animate" request with the preset generator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.cameras import look_at
from engine.motion import presets as P
from engine.motion.generators.base import GeneratorError
from engine.motion.handler import handle_animate, make_generator
from engine.synthetic_scene import UP, make_primitives_scene

REQUIRED = ("bounce", "fall", "slide", "spin", "hop", "sway", "roll", "tip_over", "rise", "shake", "orbit",
            "hinge_open")


@pytest.fixture(scope="module")
def scene():
    return make_primitives_scene(gaussians_per_object=300, sh_degree=0, seed=1)


@pytest.fixture(scope="module")
def camera():
    return look_at(np.array([0.0, -1.5, -3.0]), np.zeros(3), up=UP)


def _heights(T, points):
    return np.einsum("fij,nj->fni", T[:, :3, :3], points) @ UP + (T[:, :3, 3] @ UP)[:, None]


def test_library_has_the_required_presets():
    presets = P.load_presets()
    assert set(REQUIRED) <= set(presets) and len(presets) >= 12
    for preset in presets.values():
        assert preset.aliases and preset.tracks and preset.duration_s > 0


@pytest.mark.parametrize("label", [1, 2])
@pytest.mark.parametrize("name", sorted(P.load_presets()))
def test_every_preset_is_valid_and_rests_on_the_ground(scene, camera, name, label):
    seg = scene.gaussians.means[scene.labels == label].astype(np.float64)
    rest = scene.gaussians.means[scene.labels != label]
    T, info = P.motion_from_prompt(name.replace("_", " "), seg, rest, UP, camera, 30)
    assert info["presets"] == [name]
    assert T.shape == (30, 4, 4) and np.isfinite(T).all()
    np.testing.assert_allclose(T[0], np.eye(4), atol=1e-12)
    R = T[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.tile(np.eye(3), (30, 1, 1)), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    # No sinking: the ground here is y = 0 (up is −y); no Gaussian goes below it in any frame.
    ground = 0.0
    assert _heights(T, seg).min() >= min(ground, (seg @ UP).min()) - 1e-6
    # It moves: some point travels at least 3% of the object's size at some frame.
    moved = np.einsum("fij,nj->fni", R, seg) + T[:, None, :3, 3]
    size = np.ptp(seg, axis=0).max()
    assert np.linalg.norm(moved - seg[None], axis=-1).max() > 0.03 * size
    # No teleporting: consecutive frames stay within a fraction of the object's size.
    assert np.linalg.norm(np.diff(moved, axis=0), axis=-1).max() < 0.8 * size


def test_floating_object_falls_onto_its_support(camera):
    scene = make_primitives_scene(gaussians_per_object=300, sh_degree=0, seed=2)
    seg = scene.gaussians.means[scene.labels == 2].astype(np.float64) + 0.4 * UP   # 0.4 above the ground
    rest = scene.gaussians.means[scene.labels != 2]
    T, info = P.motion_from_prompt("the box falls", seg, rest, UP, camera, 40)
    assert info["support_gap"] == pytest.approx(0.4, abs=0.02)
    lowest = _heights(T, seg).min(1)
    assert lowest[-1] == pytest.approx(0.0, abs=0.02)     # ends on the ground
    assert lowest.min() >= -1e-6                           # never below it


def test_prompt_matching_order_directions_and_failures():
    presets = P.load_presets()
    m = P.match_prompt("The red mug slides to the left and then tips over", presets, use_clip=False)
    assert [x.preset.name for x in m] == ["slide", "tip_over"]
    assert m[0].directions["right"] == "left" and m[1].directions == {}
    assert [x.preset.name for x in P.match_prompt("a ball bouncing", presets, use_clip=False)] == ["bounce"]
    # Longest alias wins: "tips over" is tip_over, not "tip".
    assert P.match_prompt("the vase tips over", presets, use_clip=False)[0].alias == "tips over"
    assert P.match_prompt("the mug contemplates", presets, use_clip=False) == []
    with pytest.raises(GeneratorError) as err:
        P.motion_from_prompt("the mug contemplates", np.zeros((10, 3)), np.zeros((0, 3)), UP, None, 10,
                             options={"clip": False})
    assert "slide" in err.value.hint


def test_clip_fallback_is_used_when_no_alias_matches(monkeypatch):
    from engine.motion import text_similarity
    seen = {}

    def fake_best_match(prompt, candidates):
        seen["candidates"] = candidates
        return "spin", 0.91

    monkeypatch.setattr(text_similarity, "best_match", fake_best_match)
    m = P.match_prompt("the top whirls", P.load_presets())
    assert [x.preset.name for x in m] == ["spin"] and m[0].score == pytest.approx(0.91)
    assert "spin" in seen["candidates"]


def test_chained_presets_and_direction(scene, camera):
    seg = scene.gaussians.means[scene.labels == 2].astype(np.float64)
    rest = scene.gaussians.means[scene.labels != 2]
    T, info = P.motion_from_prompt("slides to the left and tips over", seg, rest, UP, camera, 40)
    assert info["presets"] == ["slide", "tip_over"]
    centre = seg.mean(0)
    left = -camera[0, :3] + (camera[0, :3] @ UP) * UP
    mid = T[20, :3, :3] @ centre + T[20, :3, 3]
    assert (mid - centre) @ left > 0.3                       # moved left (camera's left) first
    angle = np.degrees(np.arccos(np.clip((np.trace(T[-1, :3, :3]) - 1) / 2, -1, 1)))
    assert angle == pytest.approx(90.0, abs=1.0)             # then tipped over


def test_end_pose_is_reached(scene, camera):
    seg = scene.gaussians.means[scene.labels == 2].astype(np.float64)
    rest = scene.gaussians.means[scene.labels != 2]
    end = np.eye(4)
    end[:3, 3] = [0.5, 0.0, 0.3]
    T, _ = P.motion_from_prompt("", seg, rest, UP, camera, 20, end_transform=end)
    np.testing.assert_allclose(T[-1], end, atol=1e-9)
    T2, info = P.motion_from_prompt("spins", seg, rest, UP, camera, 20, end_transform=end)
    np.testing.assert_allclose(T2[-1], end, atol=1e-6)
    assert info["presets"] == ["spin"]


def test_broken_preset_file_is_named(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"name": "bad", "aliases": ["x"], "tracks": [
        {"type": "translate", "direction": "sideways", "distance": 1, "curve": "linear"}]}))
    with pytest.raises(ValueError, match="bad.json"):
        P.load_presets(tmp_path)


def test_animate_request_with_preset(tmp_path, scene, camera):
    path = scene.write(tmp_path / "scene.ply")
    seg = np.flatnonzero(scene.labels == 1)
    # A Blender-like set-up: the file frame maps to Blender's z-up world (x, y, z) = (x, z, −y).
    file_to_world = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
    viewmat_world = camera @ np.linalg.inv(file_to_world)
    params = {"ply_path": str(path), "prompt": "the red ball bounces", "generator": "preset", "frames": 24,
              "fps": 24, "width": 64, "height": 48, "device": "cpu", "motion": "auto"}
    arrays = {"indices": seg, "viewmat": viewmat_world, "K": np.array([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]]),
              "file_to_world": file_to_world}
    result, out = handle_animate(None, params, arrays)
    assert result["motion"] == "rigid" and result["frames"] == 24 and result["info"]["presets"] == ["bounce"]
    T = out["transforms"]
    assert T.shape == (24, 4, 4) and T.dtype == np.float64
    # Bounces go up in the file frame (−y), since the world's up (z) is the file's −y.
    heights = _heights(T, scene.gaussians.means[seg].astype(np.float64))
    assert heights.min(1).max() > 0.2


def test_unknown_generator_fails_clearly():
    with pytest.raises(GeneratorError, match="unknown motion generator"):
        make_generator("teleport")
