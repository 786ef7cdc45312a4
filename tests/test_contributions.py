"""Contribution-weighted lifting (engine.render.contributions): the torch reference against a brute-force
per-pixel compositing, the transpose of rendering, label votes as lifted one-hots, a view's sparse weights
against the rasterizer, and (on the device) gsplat's backward pass against the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cuda_ext.reference import contributions_reference
from engine.render import contributions, cpu_rasterizer
from engine.render.rasterizer import render_gaussians
from engine.render.splats import SplatTensors, splat_tensors
from engine.segment.views import orbit_views
from engine.synthetic_scene import make_primitives_scene


def _few_gaussians(n: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = torch.tensor(np.c_[rng.uniform(-0.4, 0.4, (n, 2)), rng.uniform(2, 3, n)], dtype=torch.float32)
    quats = torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32)
    scales = torch.tensor(rng.uniform(0.05, 0.2, (n, 3)), dtype=torch.float32)
    opac = torch.tensor(rng.uniform(0.3, 0.99, n), dtype=torch.float32)
    return SplatTensors(means, quats, scales, opac, torch.zeros(n, 3)), rng


def _brute_force(g: SplatTensors, viewmat, K, values: np.ndarray) -> np.ndarray:
    """Σ_p w_g(p)·values[p], per pixel with gsplat's rule over the Gaussians sorted by depth."""
    H, W, D = values.shape
    proj = cpu_rasterizer.project_gaussians(g.means, g.quats, g.scales, g.opacities, viewmat, K, W, H, 0.01, 1e10)
    want = np.zeros((g.count, D))
    order = torch.argsort(proj.depths).numpy()
    for py in range(H):
        for px in range(W):
            T = 1.0
            for j in order:
                d = proj.means2d[j].numpy() - (px + 0.5, py + 0.5)
                a, b, c = proj.conics[j].numpy()
                sigma = 0.5 * (a * d[0] ** 2 + c * d[1] ** 2) + b * d[0] * d[1]
                alpha = min(0.999, float(proj.opacities[j]) * np.exp(-sigma))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                if T * (1 - alpha) <= 1e-4:
                    break
                want[int(proj.ids[j])] += alpha * T * values[py, px]
                T *= 1 - alpha
    return want


def test_reference_is_the_brute_force_compositing_weights():
    g, rng = _few_gaussians()
    W, H = 24, 20
    viewmat, K = torch.eye(4), torch.tensor([[30.0, 0, W / 2], [0, 30.0, H / 2], [0, 0, 1]])
    values = rng.normal(size=(H, W, 3)).astype(np.float32)
    got = contributions_reference(g.means, g.quats, g.scales, g.opacities, viewmat, K, torch.from_numpy(values))
    want = _brute_force(g, viewmat, K, values)
    assert np.abs(want).sum() > 1
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4)
    # Label votes are the lifted one-hots of the labels; labels outside [0, 3) count for nothing.
    labels = rng.integers(-1, 4, (H, W)).astype(np.int32)
    onehot = np.eye(3)[np.clip(labels, 0, 2)] * ((labels >= 0) & (labels < 3))[..., None]
    votes = contributions.label_votes(g, viewmat[None], K[None], labels[None], 3, use_kernel=False)
    np.testing.assert_allclose(votes.numpy(), _brute_force(g, viewmat, K, onehot), atol=1e-4)


@pytest.fixture(scope="module")
def scene_views():
    synth = make_primitives_scene(gaussians_per_object=300, sh_degree=0, seed=1)
    g = splat_tensors(synth.gaussians)
    return g, orbit_views(synth.gaussians.means, 3, width=64, height=48)


def test_lifting_is_the_transpose_of_rendering(scene_views):
    """⟨render(f), v⟩ = ⟨f, lift(v)⟩ for the rasterizer's own render: lift is rendering's exact transpose."""
    g, views = scene_views
    gen = torch.Generator().manual_seed(0)
    for view in views:
        features = torch.randn(g.count, 4, generator=gen)
        values = torch.randn(view.height, view.width, 4, generator=gen)
        rendered = render_gaussians(g.means, g.quats, g.scales, g.opacities, g.rgb, view.viewmat, view.K,
                                    view.width, view.height, features=features, backend="cpu").features
        lifted = contributions.lift(g, view.viewmat, view.K, values, backend="cpu")
        assert torch.allclose((rendered * values).sum(), (features * lifted).sum(), rtol=1e-4)
        sums, support = contributions.lift_with_support(g, view.viewmat, view.K, view.width, view.height,
                                                        values.reshape(-1, 4), backend="cpu")
        assert torch.allclose(sums, lifted, atol=1e-5)
        alpha = render_gaussians(g.means, g.quats, g.scales, g.opacities, g.rgb, view.viewmat, view.K,
                                 view.width, view.height, backend="cpu").alpha
        assert torch.allclose(support.sum(), alpha.sum(), rtol=1e-4)   # Σ_g w_g(p) is the pixel's alpha


def test_view_weights_render_and_lift_as_the_rasterizer(scene_views):
    g, views = scene_views
    gen = torch.Generator().manual_seed(1)
    for view in views[:2]:
        weights = contributions.ViewWeights(g, view)
        features = torch.randn(g.count, 5, generator=gen)
        ref = render_gaussians(g.means, g.quats, g.scales, g.opacities, torch.zeros(g.count, 3), view.viewmat,
                               view.K, view.width, view.height, features=features, backend="cpu")
        every = torch.arange(view.width * view.height)
        for f in (features, features.clone().requires_grad_(True)):     # sparse product, differentiable one
            mine, alpha = weights.render(f, every)
            assert torch.allclose(mine.reshape(view.height, view.width, 5), ref.features, atol=1e-5)
            assert torch.allclose(alpha.reshape(view.height, view.width), ref.alpha, atol=1e-5)
        few = every[ref.alpha.reshape(-1) > 0.5][:7]
        few_out, _ = weights.render(features.clone().requires_grad_(True), few)   # only those pixels' weights
        assert torch.allclose(few_out, ref.features.reshape(-1, 5)[few], atol=1e-5)
        depth, alpha = weights.depth_alpha()
        solid = ref.alpha > 0.5
        assert torch.allclose(depth[solid], ref.depth[solid], atol=1e-4)
        # Lifting over some pixels: the sparse transpose, the rasterizer's reference and the autograd VJP of
        # the sparse render agree.
        pixels = torch.nonzero(alpha.reshape(-1) > 0.5).squeeze(1)
        values = torch.randn(len(pixels), 3, generator=gen)
        fast, fast_support = weights.lift(values, pixels)
        ref_sums, ref_support = contributions.RasterizedView(g, view, backend="cpu").lift(values, pixels)
        probe = torch.zeros(g.count, 3, requires_grad=True)
        (vjp,) = torch.autograd.grad(weights.render(probe, pixels)[0], probe, values)
        assert torch.allclose(fast, ref_sums, atol=1e-4) and torch.allclose(fast_support, ref_support, atol=1e-4)
        assert torch.allclose(fast, vjp, atol=1e-4)
        assert float(fast_support.max()) > 0.5


def test_weight_triplets_are_the_nonzero_weights(scene_views):
    g, views = scene_views
    view = views[0]
    viewmat = torch.as_tensor(view.viewmat, dtype=torch.float32)
    K = torch.as_tensor(view.K, dtype=torch.float32)
    proj = cpu_rasterizer.project_gaussians(g.means, g.quats, g.scales, g.opacities, viewmat, K, view.width,
                                            view.height, 0.01, 1e10)
    pixels, rows, weights = cpu_rasterizer.weight_triplets(proj, view.width, view.height)
    assert bool((weights > 0).all()) and int(pixels.max()) < view.width * view.height
    dense = torch.zeros(view.width * view.height, len(proj.ids)).index_put_((pixels, rows), weights, accumulate=True)
    onehot = torch.eye(len(proj.ids))[:, :40]                 # the first 40 Gaussians' own channels
    image, _ = cpu_rasterizer.composite(proj, onehot, view.width, view.height)
    assert torch.allclose(dense[:, :40], image.reshape(-1, 40), atol=1e-6)


def test_view_shares_count_each_view_once():
    votes = torch.tensor([[8.0, 2.0], [0.0, 0.0], [0.1, 0.0], [40.0, 0.0]])
    shares = contributions.view_shares(votes, floor=0.5)                  # median total weight 10, floor 5
    np.testing.assert_allclose(shares.numpy(), [[0.8, 0.2], [0, 0], [0.02, 0], [1.0, 0]], atol=1e-6)
    # A given support (the weight over all the view's pixels, not only the labelled ones) divides instead.
    support = torch.tensor([20.0, 0.0, 1.0, 40.0])                        # median 20, floor 10
    np.testing.assert_allclose(contributions.view_shares(votes, support, floor=0.5).numpy(),
                               [[0.4, 0.1], [0, 0], [0.01, 0], [1.0, 0]], atol=1e-6)


@pytest.mark.gpu
def test_gsplat_backward_lifts_as_the_reference():
    from engine.render.rasterizer import gsplat_available

    assert gsplat_available(), "gsplat failed to load"
    synth = make_primitives_scene(gaussians_per_object=3000, sh_degree=0, seed=2)
    g = splat_tensors(synth.gaussians, "cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    for view in orbit_views(synth.gaussians.means, 3, width=200, height=150):
        values = torch.rand(view.height, view.width, 6, generator=gen, device="cuda")
        got = contributions.lift(g, view.viewmat, view.K, values, backend="gsplat")
        want = contributions.lift(g, view.viewmat, view.K, values, backend="cpu")
        # The tolerances of the label kernel's parity test (test_segment_kernel.py): the two rasterizers
        # agree per pixel to float rounding, so per Gaussian the sums agree but for Gaussians at a cut-off.
        scale = float(want.abs().max())
        assert scale > 1
        np.testing.assert_allclose(float(got.sum()), float(want.sum()), rtol=2e-3)
        assert float((got - want).abs().max()) < 0.02 * scale


def _views_batch(views, device="cpu"):
    viewmats = torch.stack([torch.as_tensor(np.asarray(v.viewmat), dtype=torch.float32) for v in views]).to(device)
    Ks = torch.stack([torch.as_tensor(np.asarray(v.K), dtype=torch.float32) for v in views]).to(device)
    return viewmats, Ks


def test_lifting_several_views_sums_each_views_lifting(scene_views):
    g, views = scene_views
    width, height = views[0].width, views[0].height
    values = torch.randn(len(views), height * width, 3, generator=torch.Generator().manual_seed(3))
    viewmats, Ks = _views_batch(views)
    num, den = contributions.lift_views(g, viewmats, Ks, width, height, values, backend="cpu")
    want_num, want_den = torch.zeros_like(num), torch.zeros_like(den)
    for v, view in enumerate(views):
        n_v, d_v = contributions.lift_with_support(g, view.viewmat, view.K, width, height, values[v], backend="cpu")
        want_num += n_v
        want_den += d_v
    assert float(den.sum()) > 1
    assert torch.allclose(num, want_num, atol=1e-5) and torch.allclose(den, want_den, atol=1e-5)


@pytest.mark.gpu
def test_gsplat_lifting_of_batched_views_is_the_sum_of_single_views():
    synth = make_primitives_scene(gaussians_per_object=3000, sh_degree=0, seed=2)
    g = splat_tensors(synth.gaussians, "cuda")
    views = orbit_views(synth.gaussians.means, 20, width=160, height=120)   # more than one batch of views
    values = torch.rand(len(views), 120 * 160, 5, generator=torch.Generator(device="cuda").manual_seed(0),
                        device="cuda")
    viewmats, Ks = _views_batch(views, "cuda")
    num, den = contributions.lift_views(g, viewmats, Ks, 160, 120, values, backend="gsplat")
    want_num, want_den = torch.zeros_like(num), torch.zeros_like(den)
    for v, view in enumerate(views):
        n_v, d_v = contributions.lift_with_support(g, view.viewmat, view.K, 160, 120, values[v], backend="gsplat")
        want_num += n_v
        want_den += d_v
    scale = float(want_num.abs().max())
    assert scale > 1
    assert float((num - want_num).abs().max()) < 1e-3 * scale
    assert float((den - want_den).abs().max()) < 1e-3 * float(want_den.max())
