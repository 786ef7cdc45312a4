"""SAGA's closed-form start in few passes: every band's segment votes from one lifting pass per view are the
votes of a pass per band, the masks' association finds each object's masks across views from one lifting
pass per view, and a step's scale sampling draws masks that hold the sampled pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.render.contributions import view_shares
from engine.render.splats import splat_tensors
from engine.segment.saga import BANDS
from engine.segment.saga.initialisation import associate, one_hot_columns, segment_votes
from engine.segment.saga.masks import band_identities, prepare_masks, sample_scales
from engine.segment.saga.rendering import view_contributions
from engine.segment.views import orbit_views
from engine.synthetic_scene import make_primitives_scene
from tests.test_saga import _oracle


@pytest.fixture(scope="module")
def started():
    synth = make_primitives_scene(gaussians_per_object=300, sh_degree=0)
    g = splat_tensors(synth.gaussians)
    views = orbit_views(synth.gaussians.means, 6, width=64, height=48)
    maps, masks = _oracle(synth, g, views)
    contributions = view_contributions(g, views, "contributions")
    prepared = prepare_masks(masks, contributions, views, "cpu")
    usable = list(range(len(views)))
    scales = torch.cat([vm.scales for vm in prepared])
    # Band scales spread over the masks' scales, band 0 every pixel's smallest mask (as training sets them).
    band_scales = torch.quantile(scales, torch.linspace(0, 1, BANDS + 1)[:BANDS])
    band_scales[0] = -float("inf")
    identities = [band_identities(vm, band_scales) for vm in prepared]
    components, counts = associate(contributions, prepared, identities, usable, g.count,
                                   torch.Generator().manual_seed(0))
    return synth, g, maps, contributions, prepared, identities, usable, components, counts


def test_one_pass_votes_are_the_per_band_passes(started):
    _, g, _, contributions, prepared, identities, usable, components, counts = started
    k = [max(c, 1) for c in counts]
    assert sum(k) > BANDS                                    # some band has several segments
    votes = segment_votes(contributions, prepared, identities, usable, components, k, g.count)
    first = 0
    for b in range(BANDS):                                   # the pass per band, as lift_segments did it
        want = torch.zeros(g.count, k[b])
        for v in usable:
            seg = components[v][b][identities[v][b].clamp_min(0)]
            seg = torch.where(identities[v][b] >= 0, seg, -1)
            pulled, support = contributions[v].lift(one_hot_columns(seg[None], k[b]), prepared[v].candidates)
            want += view_shares(pulled, support)
        assert float(want.sum()) > 0
        torch.testing.assert_close(votes[:, first:first + k[b]], want, rtol=1e-5, atol=1e-6)
        first += k[b]


def test_association_links_each_objects_masks_across_views(started):
    synth, _, maps, _, prepared, identities, usable, components, counts = started
    # Band 0 is every pixel's smallest mask: one object's. Its masks in all views are one 3D segment, and
    # different objects' are different segments.
    segment_of = {}
    for v in usable:
        ident, seg = identities[v][0], components[v][0]
        pixels = prepared[v].candidates
        label = torch.from_numpy(maps[v].reshape(-1))[pixels]
        for m in torch.unique(ident[ident >= 0]).tolist():
            obj = int(torch.mode(label[ident == m]).values)
            segment_of.setdefault(obj, set()).add(int(seg[m]))
    assert all(len(s) == 1 for s in segment_of.values()), segment_of
    assert len({next(iter(s)) for s in segment_of.values()}) == len(segment_of) == len(np.unique(synth.labels))
    assert counts[0] == len(segment_of)


def test_sampled_scales_are_those_of_masks_holding_the_pixels(started):
    *_, prepared, _, _, _, _ = started
    vm = prepared[0]
    quantiles = torch.quantile(vm.scales.float(), torch.linspace(0, 1, 257))
    grid = torch.linspace(0, 1, 257)
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        pixels = vm.candidates[torch.randint(len(vm.candidates), (64,), generator=generator)]
        scales, q = sample_scales(vm, pixels, 4, generator, grid, quantiles)
        assert scales.shape == q.shape == (4,) and ((q >= 0) & (q <= 1)).all()
        # The first half are scales of masks (each holds one of the pixels); the rest lie in the table's range.
        assert all(bool(torch.isclose(vm.scales, s).any()) for s in scales[:2])
        assert ((scales[2:] >= quantiles[0] - 1e-6) & (scales[2:] <= quantiles[-1] + 1e-6)).all()


def test_a_coarse_step_render_reads_each_pixel_from_its_grid_pixel(started):
    """At stride 2 the view is rendered at half resolution with pixel (j, i) centred on the view's pixel
    (2j, 2i): features and alpha there are the full render's but for the coarser footprint."""
    from engine.render.contributions import RasterizedView
    from engine.segment.saga.training import on_grid

    synth, g, _, _, prepared, *_ = started
    view = orbit_views(synth.gaussians.means, 6, width=64, height=48)[1]
    raster = RasterizedView(g, view, backend="cpu")
    onehot = torch.nn.functional.one_hot(torch.from_numpy(synth.labels.astype(np.int64)), 4).float()
    pixels = on_grid(torch.arange(view.width * view.height), view.width, 2)
    assert len(pixels) == 32 * 24 and ((pixels % 64) % 2 == 0).all() and ((pixels // 64) % 2 == 0).all()
    full, full_alpha = raster.render(onehot, pixels)
    coarse, coarse_alpha = raster.render(onehot, pixels, stride=2)
    assert float(full_alpha.sum()) > 50
    assert float((coarse_alpha - full_alpha).abs().mean()) < 0.05
    inside = full_alpha > 0.9
    assert (coarse[inside].argmax(1) == full[inside].argmax(1)).float().mean() > 0.95
    # Aligned on the grid pixels' centres: a Gaussian centred on the view's pixel (20, 16) is centred on the
    # coarse pixel (10, 8), its left and right neighbours equal.
    from types import SimpleNamespace

    K = np.array([[40.0, 0, 32], [0, 40, 24], [0, 0, 1]], np.float32)
    z = 5.0
    dot = SimpleNamespace(means=torch.tensor([[(20.5 - 32) / 40 * z, (16.5 - 24) / 40 * z, z]]), count=1,
                          quats=torch.tensor([[1.0, 0, 0, 0]]), scales=torch.full((1, 3), 0.15),
                          opacities=torch.tensor([0.9]))
    raster = RasterizedView(dot, SimpleNamespace(viewmat=np.eye(4, dtype=np.float32), K=K, width=64, height=48),
                            backend="cpu")
    _, alpha = raster.render(torch.ones(1, 1), pixels, stride=2)
    alpha = alpha.reshape(24, 32)
    assert int(alpha.argmax()) == 8 * 32 + 10
    assert torch.isclose(alpha[8, 9], alpha[8, 11]) and torch.isclose(alpha[7, 10], alpha[9, 10])
    assert float(alpha[8, 9]) > 0.1


@pytest.mark.gpu
@pytest.mark.parametrize("stride", [1, 2])
def test_gsplat_training_segments_a_click(tmp_path, monkeypatch, stride):
    """The training's gsplat path (lifting passes of the values' channels alone, steps at full or half
    resolution) trains features that a click segments, as the CPU path's test asks."""
    from benchmarks.saga_speed import measure_clicks, oracle_masks
    from engine.render.rasterizer import gsplat_available
    from engine.scene_cache import load_scene
    from engine.segment import saga
    from engine.segment.saga.rendering import scene_splats

    assert gsplat_available(), "gsplat failed to load"
    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    synth = make_primitives_scene(gaussians_per_object=20_000, sh_degree=0)
    scene = load_scene(synth.write(tmp_path / "scene.ply"))
    views = orbit_views(scene.gaussians.means, 16, width=320, height=240)
    device = torch.device("cuda")
    maps, masks = oracle_masks(synth.labels, scene_splats(scene, device), views, device)
    features = saga.train_features(scene, views, device=device, masks=masks, save=False, step_stride=stride)
    assert set(features.phases) >= {"associate", "lift", "labels", "steps"}
    clicks = measure_clicks(features, scene, synth, maps, views, device)
    print(stride, features.phases, clicks)
    assert clicks["click_iou_min"] >= 0.95
