"""Posing per frame (engine/render/posing.py): the picture equals transforming every Gaussian by its object's
matrix, while only objects that moved relative to the largest one are transformed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.cameras import intrinsics_from_fov, look_at
from engine.render import render_gaussians
from engine.render.job import load_objects, posed_gaussians
from engine.render.posing import ScenePoser, is_rigid, uniform_scale
from engine.synthetic_scene import make_primitives_scene

W, H = 48, 36
AXIS = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def _motion(angle_deg: float, shift=(0.0, 0.0, 0.0), scale: float = 1.0) -> np.ndarray:
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    m = np.eye(4)
    m[:3, :3] = scale * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    m[:3, 3] = shift
    return m


@pytest.fixture(scope="module")
def plys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("posing")
    big = make_primitives_scene(gaussians_per_object=300, sh_degree=3, seed=3)
    big.gaussians.sh_rest *= 20.0          # strong view-dependent colour: a wrong SH rotation shows
    small = make_primitives_scene(gaussians_per_object=60, sh_degree=3, seed=4)
    small.gaussians.sh_rest *= 20.0
    return big.write(folder / "big.ply"), small.write(folder / "small.ply")


def _render(means, quats, scales, sh, g, viewmat, depth_scale: float = 1.0):
    K = intrinsics_from_fov(W, H, 50.0)
    out = render_gaussians(means, quats, scales, g.opacities, sh, viewmat, K, W, H, near=0.05 / depth_scale,
                           far=100.0 / depth_scale, sh_degree=g.sh_degree, backend="cpu")
    return torch.cat([out.rgb, out.alpha[..., None], out.depth[..., None] * depth_scale / 10], dim=-1)


def _check_against_transforming_everything(g, matrices, viewmats) -> ScenePoser:
    poser = ScenePoser(g, matrices, viewmats)
    for i in range(len(viewmats)):
        means, quats, scales, sh, view = poser.pose(i)
        got = _render(means, quats, scales, sh, g, view, poser.depth_scale(i))
        want = _render(*posed_gaussians(g, matrices[i]), g, torch.from_numpy(viewmats[i]).float())
        assert want[..., :3].std() > 0.05
        assert torch.allclose(got, want, atol=2e-3), (i, (got - want).abs().max())
    return poser


def test_a_lone_moving_object_is_never_transformed(plys):
    g = load_objects(object(), [{"name": "big", "ply_path": str(plys[0])}], torch.device("cpu"))
    matrices = np.stack([[_motion(a, (0.1 * a / 30, 0.0, 0.2)) @ AXIS] for a in (0.0, 30.0, 75.0)])
    viewmats = np.stack([look_at((0.3, -4.0, 1.5), (0.0, 0.0, 0.3), up=(0, 0, 1))] * 3).astype(np.float32)
    poser = _check_against_transforming_everything(g, matrices, viewmats)
    assert poser.reference == 0 and poser.transforms == 0
    means, *_ = poser.pose(2)
    assert means is g.means                        # the Gaussians as loaded: what raw gsplat is given


def test_only_objects_that_moved_relative_to_the_largest_are_transformed(plys):
    objects = [{"name": "small", "ply_path": str(plys[1])}, {"name": "big", "ply_path": str(plys[0])}]
    g = load_objects(object(), objects, torch.device("cpu"))
    still = AXIS
    small = [_motion(0.0, (0.6, 0.0, 0.0)), _motion(40.0, (0.6, 0.2, 0.1)), _motion(40.0, (0.6, 0.2, 0.1))]
    # Frames: the small one moves, then nothing moves, then the big one moves alone (the camera follows it).
    matrices = np.stack([[small[0] @ AXIS, still], [small[1] @ AXIS, still], [small[2] @ AXIS, still],
                         [small[2] @ AXIS, _motion(20.0) @ still]])
    viewmats = np.stack([look_at((0.3, -4.0, 1.5), (0.0, 0.0, 0.3), up=(0, 0, 1))] * 4).astype(np.float32)
    poser = _check_against_transforming_everything(g, matrices, viewmats)
    assert poser.reference == 1
    # Frames 0 and 1 moved the small object's rows, frame 2 did nothing, frame 3 moved it relative to the big.
    assert poser.transforms == 3


def test_frames_posed_out_of_order_and_back_to_rest(plys):
    # A render of chosen frames (a re-render, a viewport scrub) poses them in any order: each frame's rows
    # must be its own, including a return to where the file puts the object.
    objects = [{"name": "small", "ply_path": str(plys[1])}, {"name": "big", "ply_path": str(plys[0])}]
    g = load_objects(object(), objects, torch.device("cpu"))
    moved = _motion(40.0, (0.6, 0.2, 0.1)) @ AXIS
    matrices = np.stack([[AXIS, AXIS], [moved, AXIS], [moved, AXIS], [AXIS, AXIS]])
    viewmats = np.stack([look_at((0.3, -4.0, 1.5), (0.0, 0.0, 0.3), up=(0, 0, 1))] * 4).astype(np.float32)
    poser = ScenePoser(g, matrices, viewmats)
    expected_transforms = []
    for i in (0, 2, 1, 3, 0, 1):
        means, quats, scales, sh, view = poser.pose(i)
        got = _render(means, quats, scales, sh, g, view)
        want = _render(*posed_gaussians(g, matrices[i]), g, torch.from_numpy(viewmats[i]).float())
        assert torch.allclose(got, want, atol=2e-3), (i, (got - want).abs().max())
        expected_transforms.append(poser.transforms)
    # 0: as loaded; 2: moved; 1: the same matrix as 2 (one run of frames), nothing to do; 3: back to rest;
    # 0: rest again, but a different run than 3's, so transformed; 1: moved.
    assert expected_transforms == [0, 1, 1, 2, 3, 4]


def test_a_uniformly_scaled_largest_object_goes_into_the_camera_with_its_depth(plys):
    # Scaled 1.3 then 0.8 while turning, with a smaller object moving beside it: the big one is never
    # transformed, the depth pass still reads true camera depth (_render compares it too).
    objects = [{"name": "small", "ply_path": str(plys[1])}, {"name": "big", "ply_path": str(plys[0])}]
    g = load_objects(object(), objects, torch.device("cpu"))
    small = _motion(0.0, (0.6, 0.0, 0.0)) @ AXIS
    matrices = np.stack([[small, _motion(a, scale=k) @ AXIS] for a, k in ((0.0, 1.3), (25.0, 0.8))])
    viewmats = np.stack([look_at((0.3, -5.0, 1.5), (0.0, 0.0, 0.3), up=(0, 0, 1))] * 2).astype(np.float32)
    poser = _check_against_transforming_everything(g, matrices, viewmats)
    assert poser.reference == 1 and [poser.depth_scale(i) for i in range(2)] == pytest.approx([1.3, 0.8])
    assert poser.transforms == 2                  # the small one, relative to the scaled big one, both frames


def test_an_unevenly_scaled_largest_object_is_transformed_like_the_rest(plys):
    g = load_objects(object(), [{"name": "big", "ply_path": str(plys[0])}], torch.device("cpu"))
    stretch = np.diag([1.3, 1.0, 1.0, 1.0])
    matrices = np.stack([[_motion(a) @ stretch @ AXIS] for a in (0.0, 25.0)])
    viewmats = np.stack([look_at((0.3, -5.0, 1.5), (0.0, 0.0, 0.3), up=(0, 0, 1))] * 2).astype(np.float32)
    poser = ScenePoser(g, matrices, viewmats)
    assert poser.reference == -1 and poser.depth_scale(1) == 1.0
    poser.pose(0), poser.pose(1)
    assert poser.transforms == 2


def test_uniform_scale():
    np.testing.assert_allclose(uniform_scale(np.stack([_motion(33.0, (1.0, 2.0, 3.0), scale=1.7), AXIS])),
                               [1.7, 1.0])
    assert np.isnan(uniform_scale(np.diag([1.0, 1.0, -1.0, 1.0])))          # a mirror
    assert np.isnan(uniform_scale(np.diag([2.0, 1.0, 1.0, 1.0])))           # uneven
    assert np.isnan(uniform_scale(np.zeros((4, 4))))


def test_is_rigid():
    assert is_rigid(_motion(33.0, (1.0, 2.0, 3.0)))
    assert is_rigid(AXIS)
    assert not is_rigid(_motion(33.0, scale=1.01))
    mirror = np.diag([1.0, 1.0, -1.0, 1.0])
    assert not is_rigid(mirror)
    assert is_rigid(np.stack([np.eye(4), _motion(5.0)])).tolist() == [True, True]


@pytest.mark.gpu
def test_posing_on_the_gpu_matches_transforming_everything(plys):
    # The CUDA kernel path: packed parameters sliced per frame, rows transformed in place, gsplat drawing.
    objects = [{"name": "small", "ply_path": str(plys[1])}, {"name": "big", "ply_path": str(plys[0])}]
    g = load_objects(object(), objects, torch.device("cuda"))
    matrices = np.stack([[_motion(0.0, (0.6, 0.0, 0.0)) @ AXIS, AXIS],
                         [_motion(40.0, (0.6, 0.2, 0.1)) @ AXIS, _motion(20.0) @ AXIS]])
    viewmats = np.stack([look_at((0.3, -4.0, 1.5), (0.0, 0.0, 0.3), up=(0, 0, 1))] * 2).astype(np.float32)
    poser = ScenePoser(g, matrices, viewmats)
    K = intrinsics_from_fov(W, H, 50.0)
    for i in range(2):
        means, quats, scales, sh, view = poser.pose(i)
        got = render_gaussians(means, quats, scales, g.opacities, sh, view, K, W, H, sh_degree=3).rgb
        posed = posed_gaussians(g, matrices[i])
        want = render_gaussians(*posed[:3], g.opacities, posed[3], viewmats[i], K, W, H, sh_degree=3).rgb
        assert want.std() > 0.05
        assert torch.allclose(got, want, atol=2e-3), (i, (got - want).abs().max())
    assert poser.transforms == 2
