"""Lifting accuracy: known motions rendered with the engine's rasterizer, fed back as a `video` through the
"animate" request, must be recovered (rigid with true and with noisy relative depth; a hinged lid)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.motion.frames import render_motion_video, render_with_segment_pose
from engine.motion.handler import handle_animate
from engine.motion.lifting import deformed_points, farthest_point_sampling, kabsch, skinning_weights
from tests.motion_fixtures import (box_case, box_motion, hinge_positions, hinged_box_case,  # noqa: F401
                                   no_depth_model, rotation_error_deg)

FRAMES = 5


class Ctx:
    def __init__(self):
        self.events = []

    def progress(self, fraction, stage=""):
        self.events.append((fraction, stage))

    def check_cancelled(self):
        pass


@pytest.fixture(scope="module")
def rigid_case(tmp_path_factory):
    case = box_case()
    truth = box_motion(case, FRAMES)
    video, depth = render_motion_video(case.gaussians, case.indices, truth, case.viewmat, case.K, case.width,
                                       case.height, backend="cpu")
    path = case.write(tmp_path_factory.mktemp("motion") / "box.ply")
    return case, truth, video, depth, path


def _request(case, path, video, depth, options, motion="rigid", handles=8):
    params = {"ply_path": str(path), "prompt": "the box slides", "generator": "video", "frames": len(video),
              "fps": 12, "width": case.width, "height": case.height, "device": "cpu", "motion": motion,
              "handles": handles, "options": options}
    arrays = {"indices": case.indices.astype(np.int64), "viewmat": case.viewmat, "K": case.K,
              "file_to_world": np.eye(4), "video": video, "depth": depth.astype(np.float32)}
    return params, arrays


def _errors(case, truth, transforms):
    pts = case.gaussians.means[case.indices].astype(np.float64)
    trans, rot = [], []
    for T_true, T_fit in zip(truth[1:], transforms[1:]):
        a = pts @ T_fit[:3, :3].T + T_fit[:3, 3]
        b = pts @ T_true[:3, :3].T + T_true[:3, 3]
        trans.append(np.linalg.norm(a.mean(0) - b.mean(0)) / case.size)
        rot.append(rotation_error_deg(T_true, T_fit))
    return float(np.median(trans)), float(np.median(rot))


def test_rigid_lifting_with_true_depth(rigid_case):
    case, truth, video, depth, path = rigid_case
    ctx = Ctx()
    result, arrays = handle_animate(ctx, *_request(case, path, video, depth, {}))
    assert result["motion"] == "rigid" and result["frames"] == FRAMES
    T = arrays["transforms"]
    assert T.shape == (FRAMES, 4, 4) and T.dtype == np.float64
    np.testing.assert_allclose(T[0], np.eye(4))
    trans, rot = _errors(case, truth, T)
    assert trans <= 0.01, f"median translation error {trans:.4f} of the object's size"
    assert rot <= 1.0, f"median rotation error {rot:.3f} degrees"
    assert len(result["fit"]["colour"]) == FRAMES
    assert ctx.events and ctx.events[-1][0] == pytest.approx(1.0)


def test_rigid_lifting_with_relative_noisy_depth(rigid_case):
    case, truth, video, depth, path = rigid_case
    rng = np.random.default_rng(3)
    noisy = depth * (1.0 + 0.05 * rng.normal(size=depth.shape))
    # What a monocular model gives: disparity up to an unknown scale and shift (and nothing where no scene).
    relative = np.where(depth > 0, 2.5 / np.maximum(noisy, 1e-3) + 0.8, 0.3).astype(np.float32)
    options = {"depth_kind": "disparity"}
    result, arrays = handle_animate(Ctx(), *_request(case, path, video, relative, options))
    for a in result["info"]["depth_alignment"]:
        assert a["scale"] == pytest.approx(1 / 2.5, rel=0.03)
    trans, rot = _errors(case, truth, arrays["transforms"])
    assert trans <= 0.03, f"median translation error {trans:.4f} of the object's size"
    assert rot <= 3.0, f"median rotation error {rot:.3f} degrees"


def test_rigid_lifting_with_silhouettes_and_no_depth(rigid_case, no_depth_model):
    # The `masks` option (the segment's silhouette per frame, e.g. from a video segmenter) adds the mask term
    # to the solver's residuals: with colour and silhouettes alone the motion comes back.
    import dataclasses

    case, truth, video, depth, path = rigid_case
    g = case.gaussians
    alone = type(g)(**{f.name: getattr(g, f.name)[case.indices] for f in dataclasses.fields(g)})
    everything = np.arange(alone.count)
    masks = np.stack([render_with_segment_pose(alone, everything, case.viewmat, case.K, case.width, case.height,
                                               transform=T, backend="cpu")[2] for T in truth])
    assert masks.max() > 0.9 and masks.mean() > 0.05
    params, arrays = _request(case, path, video, depth, {"masks": masks.tolist()})
    del arrays["depth"]
    result, out = handle_animate(Ctx(), params, arrays)
    assert max(result["fit"]["mask"]) > 0.0            # the silhouettes were compared
    trans, rot = _errors(case, truth, out["transforms"])
    assert trans <= 0.03 and rot <= 3.0, (trans, rot)


def test_articulated_lid_lifting(tmp_path):
    case, lid, pivot, axis = hinged_box_case()
    truth = hinge_positions(case, lid, pivot, axis, FRAMES, degrees=35.0)
    video, depth = render_motion_video(case.gaussians, case.indices, None, case.viewmat, case.K, case.width,
                                       case.height, backend="cpu", point_positions=truth)
    path = case.write(tmp_path / "hinged.ply")
    params, arrays = _request(case, path, video, depth, {"lifting": {"iterations": 25}}, motion="nonrigid",
                              handles=8)
    result, out = handle_animate(Ctx(), params, arrays)
    assert result["motion"] == "nonrigid"
    n = len(case.indices)
    assert out["weights"].shape == (n, 8) and out["weights"].dtype == np.float32
    np.testing.assert_allclose(out["weights"].sum(1), 1.0, atol=1e-5)
    assert out["handle_transforms"].shape == (FRAMES, 8, 4, 4) and out["handle_rest"].shape == (8, 3)
    rest = case.gaussians.means[case.indices].astype(np.float64)
    moved = deformed_points(rest, out["handle_rest"], out["handle_transforms"], out["weights"])
    error = np.linalg.norm(moved - truth, axis=-1) / case.size
    assert error[-1, lid].mean() <= 0.03, f"lid error {error[-1, lid].mean():.4f}"
    assert error.mean() <= 0.03, f"mean per-point error {error.mean():.4f} of the object's size"
    # The lid really opened in the fit (not just a small error because nothing moved much).
    lid_motion = np.linalg.norm(moved[-1, lid] - rest[lid], axis=-1).mean() / case.size
    assert lid_motion > 0.15


def test_skinning_pieces():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 1, (500, 3))
    idx = farthest_point_sampling(pts, 6)
    assert len(set(idx.tolist())) == 6
    h = pts[idx]
    # Farthest-point samples are spread: no two handles closer than a random pair typically is.
    d = np.linalg.norm(h[:, None] - h[None], axis=-1) + np.eye(6) * 9
    assert d.min() > 0.5
    w = skinning_weights(pts, h)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)
    assert (np.argmax(w, 1) == np.argmin(np.linalg.norm(pts[:, None] - h[None], axis=-1), 1)).all()
    # All handles moved by one rigid T: skinning reproduces T exactly, and Kabsch finds it back.
    T = np.eye(4)
    T[:3, :3] = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    T[:3, 3] = [0.3, -0.2, 0.5]
    moved = deformed_points(pts, h, np.tile(T, (1, 6, 1, 1)), w)[0]
    np.testing.assert_allclose(moved, pts @ T[:3, :3].T + T[:3, 3], atol=1e-9)
    np.testing.assert_allclose(kabsch(pts, moved), T, atol=1e-9)


@pytest.mark.gpu
def test_rigid_lifting_on_gsplat(rigid_case):
    case, truth, video, depth, path = rigid_case
    params, arrays = _request(case, path, video, depth, {})
    params["device"] = "cuda"
    result, out = handle_animate(Ctx(), params, arrays)
    trans, rot = _errors(case, truth, out["transforms"])
    assert trans <= 0.01 and rot <= 1.0, (trans, rot)


def test_auto_picks_rigid_for_a_rigid_motion_and_skinning_for_a_hinge(rigid_case, tmp_path):
    case, truth, video, depth, path = rigid_case
    result, _ = handle_animate(Ctx(), *_request(case, path, video, depth, {"lifting": {"iterations": 15}},
                                                motion="auto"))
    assert result["motion"] == "rigid", result["info"]
    hinged, lid, pivot, axis = hinged_box_case()
    positions = hinge_positions(hinged, lid, pivot, axis, FRAMES, degrees=35.0)
    video, depth = render_motion_video(hinged.gaussians, hinged.indices, None, hinged.viewmat, hinged.K,
                                       hinged.width, hinged.height, backend="cpu", point_positions=positions)
    params, arrays = _request(hinged, hinged.write(tmp_path / "hinged.ply"), video, depth,
                              {"lifting": {"iterations": 15}}, motion="auto")
    result, out = handle_animate(Ctx(), params, arrays)
    assert result["motion"] == "nonrigid", result["info"]
    assert "weights" in out
