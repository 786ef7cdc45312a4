"""A SAGA click renders only the Gaussians that can reach the clicked pixel (at the view's full size and
camera): its scores are the whole view's render's (to rounding on the torch rasterizer, to the bit on gsplat),
the Gaussians left out have no weight at that pixel, and the cached gated features give gated_similarity's
bits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.render import cpu_rasterizer
from engine.render.rasterizer import gsplat_available, render_gaussians
from engine.render.splats import splat_tensors
from engine.scene_cache import load_scene
from engine.segment import saga
from engine.segment.saga.features import AffinityFeatures, gated_similarity
from engine.segment.saga.queries import reaching_pixel, render_feature_map
from engine.segment.views import orbit_views
from engine.synthetic_scene import make_primitives_scene

PIXELS = [(20, 14), (40, 30), (33, 22), (5, 40), (63, 47), (15, 16)]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    synth = make_primitives_scene(gaussians_per_object=300, sh_degree=0, seed=4)
    scene = load_scene(synth.write(tmp_path_factory.mktemp("saga_click") / "scene.ply"))
    views = orbit_views(scene.gaussians.means, 3, width=64, height=48)
    return synth, scene, views, AffinityFeatures.from_labels(synth.labels, seed=1)


@torch.no_grad()
def whole_view_scores(features, scene, view, col, row, granularity, device):
    """The click as it was: the whole view's feature map, then gated_similarity at the pixel."""
    fmap, alpha = render_feature_map(features, scene, view, device)
    feats, gate = features.device_tensors(torch.device(device))
    return float(alpha[row, col]), gated_similarity(feats, gate, fmap[row, col], granularity).float().cpu().numpy()


def test_click_scores_are_the_whole_views(labelled):
    synth, scene, views, features = labelled
    clicked = 0
    for view in views:
        for col, row in PIXELS:
            for granularity in (0.0, 0.6):
                alpha, want = whole_view_scores(features, scene, view, col, row, granularity, "cpu")
                if alpha < 0.05:
                    with pytest.raises(saga.SagaError):
                        saga.click_scores(features, scene, view, col + 0.5, row + 0.5, granularity, "cpu")
                    continue
                got = saga.click_scores(features, scene, view, col + 0.5, row + 0.5, granularity, "cpu")
                assert np.allclose(got, want, atol=1e-5, rtol=0)
                assert np.array_equal(got > saga.CLICK_THRESHOLD, want > saga.CLICK_THRESHOLD)
                clicked += 1
    assert clicked >= 10          # most of the pixels show the scene


def test_gaussians_left_out_have_no_weight_at_the_pixel(labelled):
    synth, scene, _, _ = labelled
    t = splat_tensors(synth.gaussians)
    sizes, shown = [], []
    views = orbit_views(scene.gaussians.means, 3, width=192, height=144)
    off_centre = views[0].K.copy()
    off_centre[0, 2] = -0.25 * views[0].width       # a principal point left of the image (a shifted lens):
    views.append(dataclasses.replace(views[0], K=off_centre))   # the clamp's limit is below 0 there
    for view in views:
        viewmat, K = torch.as_tensor(view.viewmat).float(), torch.as_tensor(view.K).float()
        proj = cpu_rasterizer.project_gaussians(t.means, t.quats, t.scales, t.opacities, viewmat, K, view.width,
                                                view.height, 0.01, 1e10)
        pixel, rows, weight = cpu_rasterizer.weight_triplets(proj, view.width, view.height)
        drawn = torch.unique(pixel[weight > 0]).tolist()       # and a few pixels that show Gaussians
        pixels = [(4 * x, 3 * y) for x, y in PIXELS] + [(p % view.width, p // view.width)
                                                         for p in drawn[::max(1, len(drawn) // 4)]]
        for col, row in pixels:
            ids = set(reaching_pixel(t, t.scales.amax(1), viewmat, view.K, view.width, view.height, col, row).tolist())
            weighed = proj.ids[rows[(pixel == row * view.width + col) & (weight > 0)]].tolist()
            assert set(weighed) <= ids
            sizes.append(len(ids) / t.count)
            shown.append(view.K[0, 2] < 0 and len(weighed) > 0)
    print("share of the Gaussians rendered per click", np.round(sizes, 3))
    assert np.median(sizes) < 0.5        # and the bound leaves most of the scene out (else it saves nothing)
    assert sum(shown) >= 2               # the shifted lens's pixels do show Gaussians


def test_cached_gated_features_give_gated_similaritys_bits(labelled):
    _, _, _, features = labelled
    feats, gate = features.device_tensors(torch.device("cpu"))
    query = torch.randn(saga.FEATURE_DIM, generator=torch.Generator().manual_seed(0))
    for granularity in (0.0, 0.6, 0.0, 1.0, 0.3, 0.6):     # revisits and evictions
        got = features.similarity(query, granularity, torch.device("cpu"))
        with torch.no_grad():
            assert torch.equal(got, gated_similarity(feats, gate, query, granularity))
    assert sum(1 for k in features._device_cache if k[0] == "gated") == 2


@pytest.mark.gpu
def test_click_on_gsplat_is_the_whole_views_to_the_bit(labelled):
    assert gsplat_available()
    _, scene, views, features = labelled
    for view in views:
        for col, row in PIXELS:
            alpha, want = whole_view_scores(features, scene, view, col, row, 0.0, "cuda")
            if alpha >= 0.05:
                got = saga.click_scores(features, scene, view, col + 0.5, row + 0.5, 0.0, "cuda")
                assert np.array_equal(got, want)
