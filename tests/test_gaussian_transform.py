"""Affine transforms of Gaussians in numpy: SH rotation in the 3DGS basis, quaternions, covariances, exactness."""

from __future__ import annotations

import numpy as np
import pytest

from engine.gaussian_transform import (covariances, decompose_affine, quat_from_matrix, quat_multiply,
                                       quat_to_matrix, rotate_sh, sh_basis, sh_rotation_matrices,
                                       transform_gaussian_arrays)

C1 = 0.4886025119029199
C2 = [1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396]
C3 = [-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
      1.445305721320277, -0.5900435899266435]


def eval_sh_3dgs(sh_rest: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """3DGS's eval_sh (sh_utils.py) without the DC term, written out independently: (N, K, 3), (N, 3) -> (N, 3)."""
    k = sh_rest.shape[1]
    sh = np.moveaxis(sh_rest, 1, 0)
    x, y, z = (dirs[:, i:i + 1] for i in range(3))
    result = np.zeros((dirs.shape[0], 3))
    if k >= 3:
        result = result - C1 * y * sh[0] + C1 * z * sh[1] - C1 * x * sh[2]
    if k >= 8:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        result = result + C2[0] * xy * sh[3] + C2[1] * yz * sh[4] + C2[2] * (2.0 * zz - xx - yy) * sh[5] + \
            C2[3] * xz * sh[6] + C2[4] * (xx - yy) * sh[7]
    if k >= 15:
        result = result + C3[0] * y * (3 * xx - yy) * sh[8] + C3[1] * xy * z * sh[9] + \
            C3[2] * y * (4 * zz - xx - yy) * sh[10] + C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[11] + \
            C3[4] * x * (4 * zz - xx - yy) * sh[12] + C3[5] * z * (xx - yy) * sh[13] + \
            C3[6] * x * (xx - 3 * yy) * sh[14]
    return result


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    return quat_to_matrix(rng.normal(size=4))


def random_dirs(rng: np.random.Generator, n: int) -> np.ndarray:
    d = rng.normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def random_gaussians(rng: np.random.Generator, n: int, k: int, dtype=np.float32):
    means = rng.normal(size=(n, 3)) * 2.0
    quats = rng.normal(size=(n, 4)) * rng.uniform(0.5, 2.0, size=(n, 1))  # unnormalised, as trained
    log_scales = rng.uniform(-4.0, 0.5, size=(n, 3))
    sh = rng.normal(size=(n, k, 3)) * 0.3
    return tuple(a.astype(dtype) for a in (means, quats, log_scales, sh))


def affine(linear: np.ndarray, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = linear
    m[:3, 3] = translation
    return m


def test_sh_basis_is_the_3dgs_eval_sh():
    rng = np.random.default_rng(1)
    dirs = random_dirs(rng, 50)
    coeffs = rng.normal(size=(50, 15, 3))
    bands = sh_basis(dirs, 3)
    ours = sum(np.einsum("nb,nbc->nc", band, coeffs[:, o:o + band.shape[1]])
               for band, o in zip(bands, (0, 3, 8)))
    np.testing.assert_allclose(ours, eval_sh_3dgs(coeffs, dirs), atol=1e-12)


@pytest.mark.parametrize("k", [3, 8, 15])
@pytest.mark.parametrize("mirror", [False, True])
def test_rotated_sh_seen_from_rotated_direction_is_unchanged(k, mirror):
    rng = np.random.default_rng(k + 10 * mirror)
    for _ in range(5):
        r = random_rotation(rng)
        if mirror:
            r = r @ np.diag([1.0, -1.0, 1.0])
        coeffs = rng.normal(size=(40, k, 3))
        dirs = random_dirs(rng, 40)
        rotated = rotate_sh(coeffs, r)
        np.testing.assert_allclose(eval_sh_3dgs(rotated, dirs @ r.T), eval_sh_3dgs(coeffs, dirs), atol=1e-5)
        # a real rotation changes the coefficients, so the check above is not vacuous
        assert np.abs(rotated - coeffs).max() > 1e-3


def test_sh_rotation_blocks_are_orthogonal_and_compose():
    rng = np.random.default_rng(2)
    a, b = random_rotation(rng), random_rotation(rng)
    for da, db, dab in zip(sh_rotation_matrices(a), sh_rotation_matrices(b), sh_rotation_matrices(a @ b)):
        np.testing.assert_allclose(da @ da.T, np.eye(da.shape[0]), atol=1e-12)
        np.testing.assert_allclose(da @ db, dab, atol=1e-12)
    for d in sh_rotation_matrices(np.eye(3)):
        np.testing.assert_allclose(d, np.eye(d.shape[0]), atol=1e-12)


def test_rotate_sh_rejects_bad_coefficient_count():
    with pytest.raises(ValueError, match="expected 0, 3, 8 or 15"):
        rotate_sh(np.zeros((2, 5, 3)), np.eye(3))


def test_quaternion_round_trip_and_product():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(200, 4))
    # include rotations near 180 degrees, where the trace is negative
    q[:3] = [[1e-4, 1, 0, 0], [1e-4, 0, 1, 0], [0, 0, 0, 1]]
    rot = quat_to_matrix(q)
    np.testing.assert_allclose(quat_to_matrix(quat_from_matrix(rot)), rot, atol=1e-12)
    unit = quat_from_matrix(rot)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-12)
    assert (unit[:, 0] >= 0).all()
    np.testing.assert_allclose(quat_to_matrix(quat_multiply(q[:100], q[100:])), rot[:100] @ rot[100:], atol=1e-12)


def test_decompose_affine():
    rng = np.random.default_rng(4)
    r = random_rotation(rng)
    m = affine(r @ np.diag([2.0, 0.5, 3.0]), (1.0, -2.0, 4.0))
    rot, scale, t = decompose_affine(m)
    np.testing.assert_allclose(rot, r, atol=1e-12)
    np.testing.assert_allclose(scale, [2.0, 0.5, 3.0], atol=1e-12)
    np.testing.assert_allclose(t, [1.0, -2.0, 4.0])
    mirrored = affine(r @ np.diag([1.5, 1.5, -1.5]))
    rot, scale, _ = decompose_affine(mirrored)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_allclose(rot @ np.diag(scale), mirrored[:3, :3], atol=1e-12)
    with pytest.raises(ValueError, match="singular"):
        decompose_affine(affine(np.diag([1.0, 0.0, 1.0])))
    bad = np.eye(4)
    bad[3, 0] = 0.5
    with pytest.raises(ValueError, match="not an affine matrix"):
        decompose_affine(bad)


def test_identity_returns_bit_identical_copies():
    rng = np.random.default_rng(5)
    arrays = random_gaussians(rng, 100, 15)
    arrays[0][0, 0] = -0.0  # -0.0 + 0.0 would turn into +0.0: identity must not do arithmetic
    out = transform_gaussian_arrays(*arrays, np.eye(4))
    for a, b in zip(arrays, out):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
        assert not np.shares_memory(a, b)


def test_translation_only_leaves_orientation_scale_and_sh_bit_identical():
    rng = np.random.default_rng(6)
    arrays = random_gaussians(rng, 100, 8)
    out = transform_gaussian_arrays(*arrays, affine(np.eye(3), (0.5, -1.0, 2.0)))
    np.testing.assert_allclose(out[0], arrays[0] + np.array([0.5, -1.0, 2.0], np.float32), atol=1e-6)
    for a, b in zip(arrays[1:], out[1:]):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("k", [0, 3, 8, 15])
def test_uniform_transform_moves_means_and_covariances(k):
    rng = np.random.default_rng(7 + k)
    means, quats, log_scales, sh = random_gaussians(rng, 300, k, np.float64)
    r = random_rotation(rng) @ np.diag([1.0, 1.0, -1.0])  # a mirror too
    m = affine(1.7 * r, (0.3, 0.2, -0.1))
    new_means, new_quats, new_log_scales, new_sh = transform_gaussian_arrays(means, quats, log_scales, sh, m)
    np.testing.assert_allclose(new_means, means @ m[:3, :3].T + m[:3, 3], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(new_quats, axis=1), np.linalg.norm(quats, axis=1), atol=1e-12)
    np.testing.assert_allclose(new_log_scales, log_scales + np.log(1.7), atol=1e-12)
    a = m[:3, :3]
    np.testing.assert_allclose(covariances(new_quats, new_log_scales), a @ covariances(quats, log_scales) @ a.T,
                               atol=1e-10)
    assert new_sh.shape == sh.shape


def test_non_uniform_scale_uses_the_exact_covariance():
    rng = np.random.default_rng(8)
    means, quats, log_scales, sh = random_gaussians(rng, 300, 15, np.float64)
    shear = np.array([[1.0, 0.4, 0.0], [0.0, 1.0, 0.0], [0.2, 0.0, 1.0]])
    m = affine(random_rotation(rng) @ np.diag([0.5, 2.0, 1.2]) @ shear, (1.0, 0.0, 0.0))
    a = m[:3, :3]
    new_means, new_quats, new_log_scales, _ = transform_gaussian_arrays(means, quats, log_scales, sh, m)
    np.testing.assert_allclose(new_means, means @ a.T + m[:3, 3], atol=1e-12)
    cov = covariances(quats, log_scales)
    np.testing.assert_allclose(covariances(new_quats, new_log_scales), a @ cov @ a.T, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(new_quats, axis=1), np.linalg.norm(quats, axis=1), atol=1e-12)
    # the engine's approximation: rotation and geometric-mean scale only
    _, _, approx_log_scales, _ = transform_gaussian_arrays(means, quats, log_scales, sh, m, exact_covariance=False)
    np.testing.assert_allclose(approx_log_scales, log_scales + np.log(abs(np.linalg.det(a))) / 3, atol=1e-12)


@pytest.mark.parametrize("linear", ["uniform", "non_uniform"])
def test_transform_then_inverse_returns_the_input(linear):
    rng = np.random.default_rng(9)
    arrays = random_gaussians(rng, 500, 15)
    r = random_rotation(rng)
    a = 0.8 * r if linear == "uniform" else r @ np.diag([0.5, 1.0, 2.0])
    m = affine(a, (3.0, -1.0, 0.5))
    back = transform_gaussian_arrays(*transform_gaussian_arrays(*arrays, m), np.linalg.inv(m))
    np.testing.assert_allclose(back[0], arrays[0], atol=1e-5)
    np.testing.assert_allclose(back[3], arrays[3], atol=1e-5)
    np.testing.assert_allclose(covariances(back[1], back[2]), covariances(arrays[1], arrays[2]), atol=1e-5)
    if linear == "uniform":  # same quaternion (up to float32 rounding) and scales, not only same covariance
        np.testing.assert_allclose(back[1], arrays[1], atol=1e-5)
        np.testing.assert_allclose(back[2], arrays[2], atol=1e-5)
    assert all(a.dtype == b.dtype for a, b in zip(arrays, back))
