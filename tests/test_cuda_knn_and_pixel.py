"""cuda_ext's grid kNN search and one-pixel compositing: their torch references against independent answers
here (the k-d tree, the torch rasterizer's pixel), and on a GPU the kernels against the references, gsplat's
own render (to the bit) and the CPU graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cuda_ext
from cuda_ext import reference
from engine import neighbours
from engine.render import cpu_rasterizer
from engine.render.rasterizer import render_gaussians
from engine.synthetic_scene import make_primitives_scene
from engine.segment.views import orbit_views


def scene_tensors(per_object: int, device: str = "cpu", seed: int = 0):
    synth = make_primitives_scene(gaussians_per_object=per_object, sh_degree=0, seed=seed)
    g = synth.gaussians
    means = torch.from_numpy(g.means).to(device)
    quats = torch.nn.functional.normalize(torch.from_numpy(g.quats_wxyz), dim=1).to(device)
    scales = torch.from_numpy(np.exp(g.log_scales)).float().to(device)
    opacities = torch.sigmoid(torch.from_numpy(g.opacity_logit)).to(device)
    channels = torch.from_numpy(np.random.default_rng(seed).standard_normal((g.count, 5)).astype(np.float32))
    return means, quats, scales, opacities, channels.to(device), orbit_views(g.means, 3, width=64, height=48)


def test_pixel_reference_is_the_torch_rasterizers_pixel():
    means, quats, scales, opacities, channels, views = scene_tensors(300)
    checked = 0
    for view in views:
        viewmat = torch.as_tensor(np.asarray(view.viewmat), dtype=torch.float32)
        K = torch.as_tensor(np.asarray(view.K), dtype=torch.float32)
        whole = render_gaussians(means, quats, scales, opacities, torch.zeros(len(means), 3), viewmat, K, 64, 48,
                                 features=channels, backend="cpu")
        proj = cpu_rasterizer.project_gaussians(means, quats, scales, opacities, viewmat, K, 64, 48, 0.01, 1e10)
        flat, starts, _ = cpu_rasterizer.bin_tiles(proj, 4, 3)
        for col, row in [(20, 14), (40, 30), (33, 22), (5, 40), (63, 47), (0, 0)]:
            tile = (row // 16) * 4 + col // 16
            got = reference.composite_pixel_reference(proj.means2d, proj.conics, opacities, channels, proj.ids,
                                                      starts, flat, tile, col + 0.5, row + 0.5)
            np.testing.assert_allclose(got[:-1].numpy(), whole.features[row, col].numpy(), atol=2e-5)
            np.testing.assert_allclose(float(got[-1]), float(whole.alpha[row, col]), atol=2e-6)
            checked += float(whole.alpha[row, col]) > 0.5
    assert checked >= 6          # most pixels show the scene, not the sky


def test_grid_knn_reference_marks_queries_short_of_k():
    """Fewer than k other points in the 27 cells: the row ends in −1 at distance inf (grid_knn searches it
    again with a larger cell), and a query never finds itself."""
    points = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.2, 0.0], [5.0, 5.0, 5.0]], dtype=torch.float64)
    key = torch.tensor([1, 1, 1, 9])    # three in one cell, one far off
    order = torch.argsort(key)
    cells, counts = torch.unique_consecutive(key[order], return_counts=True)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), 1000 + torch.arange(26)])   # the own cell alone
    idx, d2 = reference.grid_knn_reference(points[order], order, cells, torch.cumsum(counts, 0) - counts, counts,
                                           offsets, points, key, torch.arange(4), 3)
    assert idx[0].tolist() == [1, 2, -1] and d2[0, :2].tolist() == pytest.approx([0.01, 0.04])
    assert torch.isinf(d2[0, 2]) and idx[3].tolist() == [-1, -1, -1]


@pytest.mark.gpu
def test_grid_knn_kernel_is_the_reference_and_the_tree():
    rng = np.random.default_rng(7)
    points = np.concatenate([rng.random((60_000, 3)), rng.normal(0.5, 0.01, (20_000, 3)), rng.random((30, 3)) * 20])
    p = torch.from_numpy(points).cuda()
    cell = neighbours.grid_cell(p, 16)
    # The search step alone: the kernel and the reference on the same grid give the same distances, bit for bit.
    ijk = torch.floor((p - p.min(0).values) / cell).long() + 1
    dims = ijk.max(0).values + 2
    key = (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2]
    order = torch.argsort(key)
    cells, counts = torch.unique_consecutive(key[order], return_counts=True)
    steps = torch.tensor([-1, 0, 1], device="cuda")
    offsets = ((steps[:, None, None] * dims[1] + steps[None, :, None]) * dims[2] + steps[None, None, :]).reshape(-1)
    queries = torch.argsort(key)[::7].contiguous()
    args = (p[order].contiguous(), order, cells, torch.cumsum(counts, 0) - counts, counts, offsets, p[queries],
            key[queries], queries, 16)
    idx, d2 = cuda_ext.grid_knn(*args)
    want_idx, want_d2 = reference.grid_knn_reference(*args)
    assert torch.equal(d2, want_d2)
    assert (idx == want_idx).float().mean().item() > 0.999              # ties aside
    assert int((idx < 0).sum()) == int(torch.isinf(d2).sum())
    # The whole search on the GPU against the k-d tree.
    got_idx, got_dist = neighbours.grid_knn(p, 16)
    tree_idx, tree_dist = neighbours.knn_graph(points, 16, device="cpu")
    np.testing.assert_allclose(got_dist.cpu().numpy(), tree_dist, rtol=1e-6)
    assert (got_idx.cpu().numpy() == tree_idx).mean() > 0.999


@pytest.mark.gpu
def test_composite_pixel_kernel_is_gsplats_pixel_to_the_bit(monkeypatch):
    from engine.render.gsplat_backend import render_gsplat_tile
    from gsplat import rasterization

    assert cuda_ext.ready()
    means, quats, scales, opacities, channels, views = scene_tensors(20_000, "cuda", seed=3)
    channels = torch.nn.functional.normalize(torch.randn(len(means), 32, device="cuda"), dim=1)
    for view in views:
        viewmat = torch.as_tensor(np.asarray(view.viewmat), dtype=torch.float32, device="cuda")
        K = torch.as_tensor(np.asarray(view.K), dtype=torch.float32, device="cuda")
        whole, alpha, _ = rasterization(means, quats, scales, opacities, channels, viewmat[None], K[None], 64, 48,
                                        packed=True, eps2d=0.3, near_plane=0.01, far_plane=1e10, radius_clip=0.0)
        for col, row in [(20, 14), (40, 30), (33, 22), (5, 40), (63, 47), (0, 0), (31, 31)]:
            got, got_alpha = render_gsplat_tile(means, quats, scales, opacities, channels, viewmat, K, 64, 48, col, row)
            assert torch.equal(got, whole[0, row, col]) and torch.equal(got_alpha, alpha[0, row, col, 0])
            with monkeypatch.context() as m:     # gsplat's masked rasterizer, the path without our kernels
                m.setattr(cuda_ext, "ready", lambda: False)
                masked, masked_alpha = render_gsplat_tile(means, quats, scales, opacities, channels, viewmat, K,
                                                          64, 48, col, row)
            assert torch.equal(masked, got) and torch.equal(masked_alpha, got_alpha)


@pytest.mark.gpu
def test_composite_pixel_kernel_is_the_reference():
    from gsplat.cuda._wrapper import fully_fused_projection, isect_offset_encode, isect_tiles

    means, quats, scales, opacities, channels, views = scene_tensors(5_000, "cuda", seed=5)
    view = views[1]
    viewmat = torch.as_tensor(np.asarray(view.viewmat), dtype=torch.float32, device="cuda")
    K = torch.as_tensor(np.asarray(view.K), dtype=torch.float32, device="cuda")
    b, c, gid, radii, means2d, depths, conics, _ = fully_fused_projection(
        means, None, quats, scales, viewmat[None], K[None], 64, 48, eps2d=0.3, packed=True, opacities=opacities)
    _, isect_ids, flat = isect_tiles(means2d, radii, depths, 16, 4, 3, packed=True, n_images=1, image_ids=b + c,
                                     gaussian_ids=gid)
    offsets = isect_offset_encode(isect_ids, 1, 4, 3)
    for tile, (px, py) in enumerate([(8.5, 8.5), (20.5, 3.5), (40.5, 12.5), (60.5, 2.5), (3.5, 30.5),
                                     (25.5, 25.5), (45.5, 20.5), (63.5, 31.5), (1.5, 40.5), (30.5, 47.5),
                                     (33.5, 33.5), (50.5, 45.5)]):
        args = (means2d, conics, opacities, channels, gid, offsets, flat, tile, px, py)
        torch.testing.assert_close(cuda_ext.composite_pixel(*args), reference.composite_pixel_reference(*args),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
def test_moving_graph_on_the_gpu_is_the_full_search():
    rng = np.random.default_rng(4)
    means = rng.random((20_000, 3))
    ball = np.flatnonzero(np.linalg.norm(means - 0.5, axis=1) < 0.2)
    nb = neighbours.MovingNeighbours(8)
    nb.at(torch.from_numpy(means).cuda())
    for step in range(1, 4):
        moved = means.copy()
        moved[ball] += np.array([0.12, 0.0, 0.03]) * step
        got = nb.at(torch.from_numpy(moved).float().cuda())
        assert got.is_cuda and got.dtype == torch.long
        want, want_dist = neighbours.knn_graph(moved.astype(np.float32).astype(np.float64), 8, device="cpu")
        m32 = moved.astype(np.float32).astype(np.float64)
        dist = np.linalg.norm(m32[got.cpu().numpy()] - m32[:, None], axis=-1)
        np.testing.assert_allclose(dist, want_dist, rtol=1e-5)
        assert (got.cpu().numpy() == want).mean() > 0.999
    assert nb.builds == 4 and nb._still is None          # whole searches on the GPU, no tree
