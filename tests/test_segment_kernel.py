"""The contribution-accumulation kernel (cuda_ext, on gsplat's projection) against its torch reference (the
torch rasterizer's weights), through engine.render.contributions.label_votes, on the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.render.contributions import kernel_available, label_votes
from engine.render.splats import splat_tensors
from engine.segment.views import orbit_views
from engine.synthetic_scene import make_primitives_scene, make_random_gaussians


def _label_maps(views, rng, num_labels):
    # Blocky label maps (8 px cells) with some uncounted (-1) cells, so both warp paths are exercised.
    maps = []
    for v in views:
        cells = rng.integers(-1, num_labels, (v.height // 8 + 1, v.width // 8 + 1))
        maps.append(np.kron(cells, np.ones((8, 8), int))[:v.height, :v.width])
    return np.stack(maps).astype(np.int32)


@pytest.mark.gpu
@pytest.mark.parametrize("scene", ["primitives", "random"])
def test_kernel_matches_reference(scene):
    assert kernel_available("cuda"), "the CUDA extension or gsplat failed to load"
    if scene == "primitives":
        g = make_primitives_scene(gaussians_per_object=3000, sh_degree=0).gaussians
    else:
        g = make_random_gaussians(20000, sh_degree=0, seed=3, extent=1.0)
    splats = splat_tensors(g, "cuda")
    views = orbit_views(g.means, count=5, width=200, height=150)
    maps = _label_maps(views, np.random.default_rng(0), 4)
    vms, Ks = np.stack([v.viewmat for v in views]), np.stack([v.K for v in views])
    got = label_votes(splats, vms, Ks, maps, 4, use_kernel=True).cpu().numpy()
    want = label_votes(splats, vms, Ks, maps, 4, use_kernel=False).cpu().numpy()
    scale = want.sum(1).max()
    assert want.sum() > 100
    np.testing.assert_allclose(got.sum(), want.sum(), rtol=2e-3)
    assert np.abs(got - want).max() < 0.02 * scale
    seen = want.sum(1) > 0.05 * np.median(want.sum(1)[want.sum(1) > 0])
    assert (got[seen].argmax(1) == want[seen].argmax(1)).mean() > 0.995


@pytest.mark.gpu
def test_kernel_ignores_uncounted_pixels_and_matches_total_alpha():
    g = make_primitives_scene(gaussians_per_object=2000, sh_degree=0).gaussians
    splats = splat_tensors(g, "cuda")
    (view,) = orbit_views(g.means, count=1, width=160, height=120)
    all_zero = np.zeros((1, view.height, view.width), np.int32)
    votes = label_votes(splats, view.viewmat[None], view.K[None], all_zero, 1, use_kernel=True)
    from engine.render.rasterizer import render_gaussians

    alpha = render_gaussians(splats.means, splats.quats, splats.scales, splats.opacities, splats.rgb,
                             view.viewmat, view.K, view.width, view.height).alpha
    # Σ_g w_g(p) over Gaussians is the pixel's alpha, so the votes add up to the image's total alpha.
    assert abs(float(votes.sum()) - float(alpha.sum())) < 1e-3 * float(alpha.sum())
    none = np.full_like(all_zero, -1)
    assert float(label_votes(splats, view.viewmat[None], view.K[None], none, 1, use_kernel=True).sum()) == 0
