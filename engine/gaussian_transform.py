"""Affine transforms of 3D Gaussians, spherical harmonics included, in numpy (the add-on's export uses it).

The engine's batched GPU version lives in `cuda_ext`; it takes its per-object SH rotation blocks from here.
"""

from __future__ import annotations

import numpy as np

# 3DGS's real SH constants (sh_utils.py / gsplat), degree 1..3; the basis below uses the same signs and order.
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)

# A uniform scale is detected when the polar factor P differs from s·I by at most this, relative to s.
UNIFORM_SCALE_TOLERANCE = 1e-6


def sh_basis(dirs: np.ndarray, degree: int = 3) -> list[np.ndarray]:
    """The 3DGS SH basis functions of degree 1..`degree` at unit directions (M, 3): one (M, 2l+1) array per band.

    A colour is C0·dc + Σ_l basis[l-1] @ coeffs_l, exactly 3DGS's eval_sh (before its +0.5 offset).
    """
    d = np.asarray(dirs, dtype=np.float64)
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    bands = []
    if degree >= 1:
        bands.append(np.stack([-SH_C1 * y, SH_C1 * z, -SH_C1 * x], axis=-1))
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        bands.append(np.stack([SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * xz,
                               SH_C2[4] * (xx - yy)], axis=-1))
    if degree >= 3:
        bands.append(np.stack([
            SH_C3[0] * y * (3 * xx - yy),
            SH_C3[1] * xy * z,
            SH_C3[2] * y * (4 * zz - xx - yy),
            SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            SH_C3[4] * x * (4 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3 * yy)], axis=-1))
    return bands


def _fibonacci_sphere(count: int) -> np.ndarray:
    i = np.arange(count) + 0.5
    z = 1.0 - 2.0 * i / count
    r = np.sqrt(1.0 - z * z)
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


# 64 well-spread directions (≥ 2l+1 = 7 needed) and the pseudo-inverse of each band's basis there: the band's
# basis matrices have full column rank, so the least-squares solve below is exact up to rounding.
_SAMPLE_DIRS = _fibonacci_sphere(64)
_SAMPLE_PINV = [np.linalg.pinv(band) for band in sh_basis(_SAMPLE_DIRS, 3)]


def sh_rotation_matrices(rotation: np.ndarray) -> list[np.ndarray]:
    """[D1 (3,3), D2 (5,5), D3 (7,7)] with eval_sh(D·c, R d) == eval_sh(c, d) for coefficients c of each band.

    Batched too: rotations (..., 3, 3) give blocks (..., 2l+1, 2l+1).
    Computed numerically from the basis itself (Y_l(Rᵀd) = Y_l(d)·D_l, solved at fixed sample directions), so
    the 3DGS signs and ordering cannot be got wrong. `rotation` may be any orthogonal matrix: a reflection
    (det −1) is handled too, since each band's space is closed under reflections.
    """
    r = np.asarray(rotation, dtype=np.float64)
    rotated = _SAMPLE_DIRS @ r  # row i is Rᵀ d_i
    return [pinv @ band for pinv, band in zip(_SAMPLE_PINV, sh_basis(rotated, 3))]


def rotate_sh(sh_rest: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Rotate SH coefficients (N, K, 3), K in {0, 3, 8, 15}, by an orthogonal matrix; returns the input's dtype."""
    sh = np.asarray(sh_rest)
    k = sh.shape[1]
    if k not in (0, 3, 8, 15):
        raise ValueError(f"sh_rest has {k} coefficients per channel; expected 0, 3, 8 or 15")
    if k == 0:
        return sh.copy()
    out = np.empty_like(sh)
    start = 0
    for d in sh_rotation_matrices(rotation):
        n = d.shape[0]
        if start + n > k:
            break
        # One (n, n) x (n, 3N) product: a single BLAS call instead of N small ones.
        band = sh[:, start:start + n, :].astype(np.float64).transpose(1, 0, 2).reshape(n, -1)
        out[:, start:start + n, :] = (d @ band).reshape(n, -1, 3).transpose(1, 0, 2)
        start += n
    return out


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a ⊗ b of (..., 4) wxyz quaternions (broadcasting): the rotation b, then a."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def quat_to_matrix(quats_wxyz: np.ndarray) -> np.ndarray:
    """(..., 4) wxyz quaternions (any non-zero norm, as 3DGS stores them) -> (..., 3, 3) rotation matrices."""
    q = np.asarray(quats_wxyz, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1)], axis=-2)


def quat_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) proper rotation matrices -> (..., 4) unit wxyz quaternions with w >= 0 (Shepperd's method)."""
    m = np.asarray(rotation, dtype=np.float64)
    shape = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    # Pick the largest of 4w², 4x², 4y², 4z² as the divisor, so nothing is divided by a small number.
    cand = np.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=-1)
    pick = np.argmax(cand, axis=-1)
    q = np.empty((m.shape[0], 4))
    for case in range(4):
        sel = pick == case
        if not sel.any():
            continue
        s = m[sel]
        if case == 0:
            r = np.sqrt(1.0 + tr[sel]) * 2.0
            q[sel] = np.stack([0.25 * r, (s[:, 2, 1] - s[:, 1, 2]) / r, (s[:, 0, 2] - s[:, 2, 0]) / r,
                               (s[:, 1, 0] - s[:, 0, 1]) / r], axis=-1)
        elif case == 1:
            r = np.sqrt(1.0 + s[:, 0, 0] - s[:, 1, 1] - s[:, 2, 2]) * 2.0
            q[sel] = np.stack([(s[:, 2, 1] - s[:, 1, 2]) / r, 0.25 * r, (s[:, 0, 1] + s[:, 1, 0]) / r,
                               (s[:, 0, 2] + s[:, 2, 0]) / r], axis=-1)
        elif case == 2:
            r = np.sqrt(1.0 + s[:, 1, 1] - s[:, 0, 0] - s[:, 2, 2]) * 2.0
            q[sel] = np.stack([(s[:, 0, 2] - s[:, 2, 0]) / r, (s[:, 0, 1] + s[:, 1, 0]) / r, 0.25 * r,
                               (s[:, 1, 2] + s[:, 2, 1]) / r], axis=-1)
        else:
            r = np.sqrt(1.0 + s[:, 2, 2] - s[:, 0, 0] - s[:, 1, 1]) * 2.0
            q[sel] = np.stack([(s[:, 1, 0] - s[:, 0, 1]) / r, (s[:, 0, 2] + s[:, 2, 0]) / r,
                               (s[:, 1, 2] + s[:, 2, 1]) / r, 0.25 * r], axis=-1)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q.reshape(shape + (4,))


def _check_affine(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"expected a (4, 4) matrix, got shape {m.shape}")
    if not np.allclose(m[3], (0.0, 0.0, 0.0, 1.0)):
        raise ValueError(f"not an affine matrix: its last row is {m[3].tolist()}, expected [0, 0, 0, 1]")
    if not np.isfinite(m).all():
        raise ValueError("the matrix has NaN or infinite entries")
    return m


def polar_decomposition(linear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A = Q·P with Q orthogonal (det ±1, as A's sign) and P symmetric positive semi-definite; batched (..., 3, 3)."""
    u, sigma, vt = np.linalg.svd(np.asarray(linear, dtype=np.float64))
    return u @ vt, (np.swapaxes(vt, -1, -2) * sigma[..., None, :]) @ vt


def decompose_affine(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R, scale, t) of a (4, 4) affine matrix: R a proper rotation, scale (3,) signed, t the translation.

    R comes from the polar decomposition A = Q·P of the linear part (R = Q, or −Q when A mirrors, so that
    det R = +1 always) and scale = diag(Rᵀ A). Without shear (A = R·diag(s), e.g. a Blender object transform
    without a sheared parent) this is exact: A == R @ diag(scale). A mirror shows as all-negative scales (a
    180° turn folded into R). With shear, (R, scale) only approximates A; Gaussians are then transformed by
    the exact covariance path of `transform_gaussian_arrays`, not by (R, scale).
    """
    m = _check_affine(matrix)
    a = m[:3, :3]
    if abs(np.linalg.det(a)) < 1e-300:
        raise ValueError("the matrix is singular (a zero scale): Gaussians cannot be transformed by it")
    q, _ = polar_decomposition(a)
    r = q if np.linalg.det(q) > 0 else -q
    return r, np.diag(r.T @ a).copy(), m[:3, 3].copy()


def uniform_part(matrix: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """(Q, s, is_uniform): the orthogonal polar factor Q of M's linear part, the geometric-mean scale
    s = |det A|^(1/3) > 0, and whether A == s·Q within UNIFORM_SCALE_TOLERANCE (no shear, no non-uniform scale).
    """
    q, s, uniform = uniform_parts(_check_affine(matrix)[None, :3, :3])
    return q[0], float(s[0]), bool(uniform[0])


def uniform_parts(linear: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`uniform_part` for a batch of linear parts (O, 3, 3): Q (O, 3, 3), s (O,), is_uniform (O,)."""
    a = np.asarray(linear, dtype=np.float64)
    det = np.linalg.det(a)
    if (np.abs(det) < 1e-300).any():
        raise ValueError("the matrix is singular (a zero scale): Gaussians cannot be transformed by it")
    q, p = polar_decomposition(a)
    s = np.cbrt(np.abs(det))
    uniform = np.abs(p - s[:, None, None] * np.eye(3)).max(axis=(1, 2)) <= UNIFORM_SCALE_TOLERANCE * s
    return q, s, uniform


def transform_gaussian_arrays(means: np.ndarray, quats_wxyz: np.ndarray, log_scales: np.ndarray,
                              sh_rest: np.ndarray, matrix: np.ndarray, exact_covariance: bool = True
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apply the affine `matrix` (4, 4) to Gaussians; returns new (means, quats_wxyz, log_scales, sh_rest).

    Positions get M exactly. With a uniform scale s (any rotation, mirrors included), each Gaussian turns with
    M's rotation (q' = q_R ⊗ q, keeping the stored quaternion's norm, since 3DGS stores them unnormalised),
    log_scales += log s, and SH coefficients are rotated by M's orthogonal polar factor Q. With non-uniform
    scale or shear and `exact_covariance`, each covariance becomes A Σ Aᵀ exactly and is re-diagonalised
    into a new quaternion (same norm as before) and scales; SH still turn by Q (view directions are not
    mapped by a rotation then, and Q is the closest one). `exact_covariance=False` applies the uniform part
    s·Q instead, as the engine's GPU path does. An identity matrix returns bit-identical copies.
    Arrays keep their dtypes; the arithmetic is float64.
    """
    m = _check_affine(matrix)
    means = np.asarray(means)
    quats = np.asarray(quats_wxyz)
    log_scales = np.asarray(log_scales)
    sh_rest = np.asarray(sh_rest)
    if np.array_equal(m, np.eye(4)):
        return means.copy(), quats.copy(), log_scales.copy(), sh_rest.copy()
    a, t = m[:3, :3], m[:3, 3]
    new_means = (means.astype(np.float64) @ a.T + t).astype(means.dtype)
    if np.array_equal(a, np.eye(3)):
        return new_means, quats.copy(), log_scales.copy(), sh_rest.copy()

    q, s, uniform = uniform_part(m)
    proper = q if np.linalg.det(q) > 0 else -q  # a mirror turns a covariance as its negation, a rotation
    new_sh = rotate_sh(sh_rest, q)
    if uniform or not exact_covariance:
        q_r = quat_from_matrix(proper)
        new_quats = quat_multiply(q_r, quats).astype(quats.dtype)
        new_log_scales = (log_scales.astype(np.float64) + np.log(s)).astype(log_scales.dtype)
        return new_means, new_quats, new_log_scales, new_sh

    cov = a @ covariances(quats, log_scales) @ a.T
    eigval, eigvec = np.linalg.eigh(cov)
    # eigh may return a left-handed frame; flipping one axis keeps the same ellipsoid.
    eigvec[np.linalg.det(eigvec) < 0, :, 2] *= -1.0
    norms = np.linalg.norm(quats.astype(np.float64), axis=-1, keepdims=True)
    new_quats = (quat_from_matrix(eigvec) * norms).astype(quats.dtype)
    tiny = np.finfo(np.float64).tiny
    new_log_scales = (0.5 * np.log(np.maximum(eigval, tiny))).astype(log_scales.dtype)
    return new_means, new_quats, new_log_scales, new_sh


def covariances(quats_wxyz: np.ndarray, log_scales: np.ndarray) -> np.ndarray:
    """(N, 3, 3) covariance R diag(exp(2·log_scales)) Rᵀ of each Gaussian, float64."""
    rot = quat_to_matrix(quats_wxyz)
    var = np.exp(2.0 * np.asarray(log_scales, dtype=np.float64))
    return (rot * var[:, None, :]) @ np.swapaxes(rot, -1, -2)
