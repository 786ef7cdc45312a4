"""The engine's file-frame motion turned into Blender transforms (pure numpy): object location/quaternion per
frame for rigid motion, bone rests and poses plus sparse skinning weights for non-rigid motion, and back.

Frames: the mesh holds local = file_to_local @ file; world = matrix_world @ local. The engine's motion is
x_f = T_f @ x_rest in the file frame, so world(t) = file_to_world_0 @ T_t @ x_file and the object's basis
(its loc/rot/scale, under a static parent) is basis_0 @ L @ T_t @ L⁻¹. An armature built for a mesh sits at
the mesh's matrix_world, so armature space is the mesh's local space.
"""

from __future__ import annotations

import numpy as np

from engine.gaussian_transform import polar_decomposition, quat_from_matrix, quat_to_matrix

MAX_INFLUENCES = 4             # handles per Gaussian kept for the rig (the vertex groups and the render)
WEIGHT_STEPS = 1024            # weights are stored in steps of 1/1024, the same for the viewport and render


def continuous_quaternions(quats: np.ndarray) -> np.ndarray:
    """Flip signs along axis 0 so consecutive quaternions lie in the same hemisphere (no 360° key spins)."""
    q = np.array(quats, np.float64)
    if len(q) < 2:
        return q
    dots = np.einsum("f...i,f...i->f...", q[1:], q[:-1])
    flips = np.cumprod(np.where(dots < 0, -1.0, 1.0), axis=0)
    q[1:] *= flips[..., None]
    return q


def loc_quat(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(location (..., 3), quaternion wxyz (..., 4), scale (..., 3)) of affine matrices (..., 4, 4); the
    rotation is the nearest one (polar factor) when the linear part is not a rotation times a scale."""
    m = np.asarray(matrices, np.float64)
    q, _ = polar_decomposition(m[..., :3, :3])
    det = np.linalg.det(q)
    q = q * np.where(det < 0, -1.0, 1.0)[..., None, None]
    scale = np.einsum("...ji,...ji->...i", q, m[..., :3, :3])     # diag(Qᵀ A)
    return m[..., :3, 3].copy(), quat_from_matrix(q), scale


def object_basis_motion(transforms: np.ndarray, basis_0: np.ndarray, file_to_local: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame (location (F, 3), quaternion (F, 4), matrix_basis (F, 4, 4)) of an object whose file-frame
    Gaussians move by `transforms` (F, 4, 4), given its matrix_basis at the start and its file_to_local."""
    L = np.asarray(file_to_local, np.float64)
    basis = np.asarray(basis_0, np.float64) @ L @ np.asarray(transforms, np.float64) @ np.linalg.inv(L)
    location, quat, _ = loc_quat(basis)
    return location, continuous_quaternions(quat), basis


def compose_basis(location: np.ndarray, quat: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """matrix_basis (..., 4, 4) from location, quaternion wxyz (normalised, as Blender does) and scale."""
    q = np.asarray(quat, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    m = np.zeros(q.shape[:-1] + (4, 4))
    m[..., :3, :3] = quat_to_matrix(q) * np.asarray(scale, np.float64)[..., None, :]
    m[..., :3, 3] = location
    m[..., 3, 3] = 1.0
    return m


def bone_rest_matrices(heads: np.ndarray) -> np.ndarray:
    """Rest matrices (K, 4, 4) in armature space of bones at `heads` pointing along +Y with no roll."""
    rest = np.tile(np.eye(4), (len(heads), 1, 1))
    rest[:, :3, 3] = heads
    return rest


def bone_pose_motion(handle_transforms: np.ndarray, bone_rest: np.ndarray, file_to_local: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Pose-bone (location (F, K, 3), quaternion (F, K, 4)) that move bone k like the handle's file-frame
    transforms (F, K, 4, 4): deform D = L H L⁻¹ in armature space = B · basis · B⁻¹ for rest B."""
    L = np.asarray(file_to_local, np.float64)
    B = np.asarray(bone_rest, np.float64)
    deform = L @ np.asarray(handle_transforms, np.float64) @ np.linalg.inv(L)
    basis = np.linalg.inv(B) @ deform @ B
    location, quat, _ = loc_quat(basis)
    return location, continuous_quaternions(quat)


def handle_transforms_from_pose(deform: np.ndarray, armature_world: np.ndarray, file_to_world: np.ndarray
                                ) -> np.ndarray:
    """File-frame handle transforms (K, 4, 4) equivalent to an Armature modifier with bone deform matrices
    `deform` (K, 4, 4) (pose.matrix @ rest⁻¹, armature space) on a mesh whose file_to_world is given:
    world = A D A⁻¹ (file_to_world) x, so H = file_to_world⁻¹ A D A⁻¹ file_to_world."""
    A = np.asarray(armature_world, np.float64)
    F2W = np.asarray(file_to_world, np.float64)
    return np.linalg.inv(F2W) @ A @ np.asarray(deform, np.float64) @ np.linalg.inv(A) @ F2W


def sparse_weights(weights: np.ndarray, max_influences: int = MAX_INFLUENCES, steps: int = WEIGHT_STEPS
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The `max_influences` largest weights of each row, renormalised and rounded to 1/steps: (handles
    (N, M) int32, weights (N, M) float32), heaviest first; unused slots have weight 0 (handle = the first)."""
    w = np.asarray(weights, np.float64)
    m = min(max_influences, w.shape[1])
    order = np.argsort(-w, axis=1, kind="stable")[:, :m]
    top = np.maximum(np.take_along_axis(w, order, axis=1), 0.0)
    total = top.sum(axis=1, keepdims=True)
    top = np.where(total > 0, top / np.where(total > 0, total, 1.0), np.eye(1, m))
    top = np.round(top * steps) / steps
    # rounding may zero every weight of a row spread thin: keep its heaviest handle
    empty = top.sum(axis=1) == 0
    top[empty, 0] = 1.0
    order = np.where(top > 0, order, order[:, :1])
    return order.astype(np.int32), top.astype(np.float32)


def linear_blend(points: np.ndarray, handles: np.ndarray, weights: np.ndarray, transforms: np.ndarray
                 ) -> np.ndarray:
    """Linear blend skinning of points (N, 3) by handle transforms (K, 4, 4), normalised by each row's total
    weight as Blender's Armature modifier does."""
    p = np.asarray(points, np.float64)
    T = np.asarray(transforms, np.float64)[handles]                     # (N, M, 4, 4)
    moved = np.einsum("nmij,nj->nmi", T[..., :3, :3], p) + T[..., :3, 3]
    w = np.asarray(weights, np.float64)
    return (moved * w[..., None]).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)[:, None]
