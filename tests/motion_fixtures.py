"""Known motions of synthetic objects, rendered with the engine's rasterizer, for the lifting tests and the
benchmark: a rigid motion of the primitives scene's box, and a box whose lid opens on a hinge."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from engine.cameras import intrinsics_from_fov, look_at
from engine.ply import SH_C0, GaussianArrays, write_gaussians
from engine.synthetic_scene import UP, make_primitives_scene


class QuietContext:
    """The request context a handler gets, with nobody listening: progress dropped, never cancelled."""

    def progress(self, fraction, stage=""):
        pass

    def check_cancelled(self):
        pass


@pytest.fixture
def no_depth_model(monkeypatch, tmp_path):
    """No depth model on the machine and none to fetch (offline, an empty model cache): the lifting's
    colour-only path and its warning. Import it into a test module to use it."""
    monkeypatch.setenv("ANIMATE_GAUSSIANS_OFFLINE", "1")
    monkeypatch.setenv("ANIMATE_GAUSSIANS_MODELS", str(tmp_path / "no_models"))
    monkeypatch.delenv("ANIMATE_GAUSSIANS_MODEL_DEPTH_ANYTHING_V2_SMALL", raising=False)


@dataclass
class MotionCase:
    gaussians: GaussianArrays
    indices: np.ndarray          # the moving object's Gaussians
    viewmat: np.ndarray          # file frame = world (file_to_world = I)
    K: np.ndarray
    width: int
    height: int
    size: float                  # the object's longest edge

    def write(self, path: Path) -> Path:
        write_gaussians(path, self.gaussians)
        return path


def rotation(axis, degrees: float) -> np.ndarray:
    from engine.motion.presets import _rotation_matrices
    a = np.asarray(axis, np.float64)
    return _rotation_matrices(a / np.linalg.norm(a), np.array([np.radians(degrees)]))[0]


def about(R: np.ndarray, pivot: np.ndarray, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = pivot - R @ pivot + np.asarray(translation)
    return T


def box_case(per_object: int = 200, width: int = 80, height: int = 60) -> MotionCase:
    """The primitives scene's green box (0.6 wide) seen from the front, above and to the side."""
    scene = make_primitives_scene(gaussians_per_object=per_object, sh_degree=1, seed=0)
    box = scene.object("green_box")
    viewmat = look_at(box.center + np.array([0.5, -1.5, -1.7]), box.center, up=UP)
    return MotionCase(scene.gaussians, np.flatnonzero(scene.labels == 2), viewmat,
                      intrinsics_from_fov(width, height, 55.0), width, height, box.size)


def box_motion(case: MotionCase, frames: int) -> np.ndarray:
    """(F, 4, 4): slides right and away while turning 40° about up; T_0 = I."""
    center = case.gaussians.means[case.indices].mean(0).astype(np.float64)
    u = np.linspace(0.0, 1.0, frames)
    return np.stack([about(rotation(-UP, 40.0 * s), center, (0.25 * s, 0.0, 0.12 * s)) for s in u])


def _box_points(rng, n: int, dims, center, faces=range(6)) -> tuple[np.ndarray, np.ndarray]:
    """Points on the given faces (0/1: ±x, 2/3: ±y, 4/5: ±z) of a box, and a splat radius for them."""
    dims = np.asarray(dims, np.float64)
    area = np.repeat([dims[1] * dims[2], dims[0] * dims[2], dims[0] * dims[1]], 2)
    area = np.where(np.isin(np.arange(6), list(faces)), area, 0.0)
    face = rng.choice(6, n, p=area / area.sum())
    axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
    p = rng.uniform(-0.5, 0.5, (n, 3)) * dims
    p[np.arange(n), axis] = sign * dims[axis] / 2
    return p + center, np.sqrt(area.sum() / n)


def hinged_box_case(per_part: int = 220, width: int = 80, height: int = 60, seed: int = 0):
    """Ground, an orange box base and a blue lid (one object, the segment) hinged at its back top edge.

    Returns (case, lid mask over the segment's Gaussians, hinge pivot, hinge axis)."""
    rng = np.random.default_rng(seed)
    base_dims, lid_dims = (0.6, 0.3, 0.4), (0.6, 0.06, 0.4)
    base_c = np.array([0.0, -0.15, 0.0])
    lid_c = np.array([0.0, -0.33, 0.0])
    ground = np.stack([rng.uniform(-1.5, 1.5, per_part * 3), np.zeros(per_part * 3),
                       rng.uniform(-1.5, 1.5, per_part * 3)], 1)
    # The faces where lid and base touch are inside the closed box: a capture never sees them, so a trained
    # 3DGS has no Gaussians there (face 2 is +y, down in this frame; 3 is −y, up).
    base, base_r = _box_points(rng, per_part, base_dims, base_c, faces=(0, 1, 2, 4, 5))
    lid, lid_r = _box_points(rng, per_part, lid_dims, lid_c, faces=(0, 1, 3, 4, 5))
    means = np.concatenate([ground, base, lid])
    radius = np.concatenate([np.full(len(ground), np.sqrt(9.0 / len(ground))), np.full(per_part, base_r),
                             np.full(per_part, lid_r)]) * 0.6
    rgb = np.concatenate([np.tile([0.55, 0.55, 0.5], (len(ground), 1)), np.tile([0.9, 0.5, 0.1], (per_part, 1)),
                          np.tile([0.15, 0.3, 0.9], (per_part, 1))])
    rgb = np.clip(rgb + rng.normal(0, 0.04, rgb.shape), 0.02, 0.98)
    n = len(means)
    g = GaussianArrays(means=means.astype(np.float32), sh_dc=((rgb - 0.5) / SH_C0).astype(np.float32),
                       sh_rest=np.zeros((n, 0, 3), np.float32), opacity_logit=np.full(n, 4.0, np.float32),
                       log_scales=np.log(np.repeat(radius[:, None], 3, 1)).astype(np.float32),
                       quats_wxyz=np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)).astype(np.float32))
    indices = np.arange(len(ground), n)
    lid_mask = np.arange(len(indices)) >= per_part
    viewmat = look_at(np.array([0.7, -1.3, -1.5]), np.array([0.0, -0.2, 0.0]), up=UP)
    case = MotionCase(g, indices, viewmat, intrinsics_from_fov(width, height, 50.0), width, height, 0.6)
    pivot = np.array([0.0, -0.3, 0.2])       # the back top edge (z away from this camera)
    return case, lid_mask, pivot, np.array([1.0, 0.0, 0.0])


def hinge_positions(case: MotionCase, lid_mask: np.ndarray, pivot, axis, frames: int, degrees: float):
    """(F, n, 3) true positions of the segment's Gaussians while the lid opens to `degrees`."""
    rest = case.gaussians.means[case.indices].astype(np.float64)
    out = np.repeat(rest[None], frames, 0)
    for f, s in enumerate(np.linspace(0.0, 1.0, frames)):
        T = about(rotation(axis, -degrees * s), pivot)
        out[f, lid_mask] = rest[lid_mask] @ T[:3, :3].T + T[:3, 3]
    return out


def rotation_error_deg(A: np.ndarray, B: np.ndarray) -> float:
    R = A[:3, :3].T @ B[:3, :3]
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))
