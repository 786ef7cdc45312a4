"""The render request's linear blend skinning (engine.render.skinning): means blend every handle, orientation
and SH follow the heaviest handle, unskinned objects keep their object matrix."""

from __future__ import annotations

import numpy as np
import torch

from blender_addon.animate.motion_result import linear_blend
from cuda_ext import transform_gaussians
from engine.render.job import DeviceGaussians, posed_gaussians
from engine.render.skinning import skinning_from_request


def _rot_z(a: float) -> np.ndarray:
    m = np.eye(4)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return m


def test_skinned_object_blends_means_and_turns_with_its_heaviest_handle():
    rng = np.random.default_rng(0)
    n0, n1, k, frames = 7, 9, 3, 2
    n = n0 + n1
    g = DeviceGaussians(
        means=torch.from_numpy(rng.normal(size=(n, 3)).astype(np.float32)),
        quats=torch.from_numpy(rng.normal(size=(n, 4)).astype(np.float32)),
        log_scales=torch.from_numpy(rng.normal(size=(n, 3)).astype(np.float32) * 0.1),
        sh_dc=torch.zeros(n, 1, 3), sh_rest=torch.from_numpy(rng.normal(size=(n, 3, 3)).astype(np.float32)),
        opacities=torch.ones(n), object_index=torch.tensor([0] * n0 + [1] * n1, dtype=torch.int32), sh_degree=1)
    T = np.stack([np.stack([_rot_z(0.3 * h * f) + np.pad([[f * 0.5 * h]] * 3, ((0, 1), (3, 0)))
                            for h in range(k)]) for f in range(frames)])
    handles = np.stack([rng.permutation(k)[:2] for _ in range(n1)]).astype(np.int32)
    w = rng.uniform(0.1, 1.0, (n1, 2)).astype(np.float32)
    w /= w.sum(1, keepdims=True)
    objects = [{"name": "still"}, {"name": "bent"}]
    arrays = {"skin_handles_1": handles, "skin_weights_1": w, "skin_transforms_1": T}
    skin = skinning_from_request(objects, arrays, g.object_index, frames)
    object_matrices = np.stack([_rot_z(0.5), np.eye(4)])
    object_matrices[0, :3, 3] = [1, 2, 3]
    means, quats, scales, sh = posed_gaussians(g, object_matrices, skin, frame=1)

    expected = linear_blend(g.means[n0:].numpy(), handles, w, T[1])
    np.testing.assert_allclose(means[n0:].numpy(), expected, atol=1e-5)
    ref = transform_gaussians(g.means[:n0], g.quats[:n0], g.log_scales[:n0], g.sh_rest[:n0], None,
                              object_matrices[0])
    np.testing.assert_allclose(means[:n0].numpy(), ref[0].numpy(), atol=1e-5)
    heaviest = handles[np.arange(n1), np.argmax(w, axis=1)]
    for h in range(k):
        rows = np.flatnonzero(heaviest == h)
        if len(rows):
            moved = transform_gaussians(g.means[n0:][rows], g.quats[n0:][rows], g.log_scales[n0:][rows],
                                        g.sh_rest[n0:][rows], None, T[1, h])
            np.testing.assert_allclose(quats[n0:][rows].numpy(), moved[1].numpy(), atol=1e-5)
            np.testing.assert_allclose(sh[n0:, 1:][rows].numpy(), moved[3].numpy(), atol=1e-5)
    assert skinning_from_request(objects, {}, g.object_index, frames) is None
