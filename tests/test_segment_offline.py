"""Offline selection (no weights): a click grows a region from the Gaussian under it, a box takes the objects
inside it, clean-up drops floaters; and the "segment" request through the real engine process."""

from __future__ import annotations

import numpy as np
import pytest

from engine.cameras import project_points
from engine.neighbours import knn_graph
from engine.render.splats import splat_tensors
from engine.segment import cleanup, region_growing
from engine.segment.lifting import pick_gaussian
from engine.segment.views import orbit_views
from engine.synthetic_scene import make_primitives_scene


def iou(mask, truth):
    return float((mask & truth).sum() / (mask | truth).sum())


@pytest.fixture(scope="module")
def case():
    scene = make_primitives_scene(gaussians_per_object=800, sh_degree=0, seed=0)
    splats = splat_tensors(scene.gaussians)
    knn, dist = knn_graph(scene.gaussians.means)
    tree = region_growing.build_region_tree(scene.gaussians.means, splats.rgb.numpy(), knn, dist)
    (view,) = orbit_views(scene.gaussians.means, count=1, width=160, height=120, elevations=(35.0,))
    return scene, splats, tree, view


def test_click_grows_the_clicked_object(case):
    scene, splats, tree, view = case
    tol = region_growing.granularity_tolerance(0.5)
    for obj in scene.objects[1:]:
        uv, _ = project_points(obj.center[None], view.viewmat, view.K)
        seed = pick_gaussian(splats, view.viewmat, view.K, *uv[0])
        mask = region_growing.grow_from_seeds(tree, seed, tol)
        score = iou(mask, scene.labels == obj.label)
        print(obj.name, "click IoU", round(score, 4))
        assert score >= 0.97
    # Granularity 1 takes the whole connected scene; 0 only a small part of the object.
    whole = region_growing.grow_from_seeds(tree, seed, region_growing.granularity_tolerance(1.0))
    part = region_growing.grow_from_seeds(tree, seed, region_growing.granularity_tolerance(0.0))
    assert whole.sum() > 0.9 * len(whole) and part.sum() < 0.5 * (scene.labels == obj.label).sum()


def test_box_takes_the_object_not_the_ground_around_it(case):
    from engine.segment.handler import _box_visibility

    scene, splats, tree, view = case
    obj = scene.object("green_box")
    uv, z = project_points(scene.gaussians.means[scene.labels == obj.label], view.viewmat, view.K)
    x0, y0 = uv.min(0) - 4
    x1, y1 = uv.max(0) + 4
    visible, inside = _box_visibility(splats, view, [x0, y0, x1, y1])
    truth = scene.labels == obj.label
    assert not (visible & truth & ~inside).any()
    # Visible Gaussians of the object are its front faces only: its back faces are not.
    assert (visible & truth).sum() < 0.8 * truth.sum()
    mask = region_growing.box_components(tree, region_growing.granularity_tolerance(0.5), visible, inside)
    print("box IoU", round(iou(mask, truth), 4))
    assert iou(mask, truth) >= 0.97


def test_cleanup_keeps_the_seeded_component():
    rng = np.random.default_rng(0)
    blob = rng.uniform(-0.2, 0.2, (2000, 3))
    floaters = rng.uniform(3, 4, (30, 3))
    other = rng.uniform(-0.1, 0.1, (500, 3)) + [2.0, 0, 0]
    means = np.concatenate([blob, floaters, other])
    mask = np.ones(len(means), bool)
    kept = cleanup.keep_connected(means, mask, seeds=[0])
    assert kept[:2000].all() and not kept[2000:].any()
    kept = cleanup.keep_connected(means, mask)       # no seed: the large components stay
    assert kept[:2000].all() and kept[2030:].all() and not kept[2000:2030].any()


def test_segment_request_through_the_engine_process(tmp_path, monkeypatch):
    from tests.test_engine_process import Engine
    from engine import protocol

    scene = make_primitives_scene(gaussians_per_object=400, sh_degree=1, seed=0)
    ply = scene.write(tmp_path / "prims.ply")
    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ANIMATE_GAUSSIANS_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("ANIMATE_GAUSSIANS_OFFLINE", "1")
    (view,) = orbit_views(scene.gaussians.means, count=1, width=120, height=90, elevations=(35.0,))
    # The object sits in Blender with the import's axis conversion; the camera is given in Blender's world.
    file_to_world = np.array([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    viewmat_world = view.viewmat @ np.linalg.inv(file_to_world)
    obj = scene.object("red_sphere")
    uv, _ = project_points(obj.center[None], view.viewmat, view.K)
    eng = Engine()
    try:
        arrays = {"viewmat": viewmat_world, "K": view.K, "file_to_world": file_to_world}
        params = {"ply_path": str(ply), "mode": "click", "x": float(uv[0, 0]), "y": float(uv[0, 1]),
                  "granularity": 0.5, "method": "auto", "width": 120, "height": 90, "device": "cpu"}
        eng.send(protocol.request(1, "segment", params, arrays))
        _, final = eng.until_final(1)
        assert final.kind == "result", final
        mask = final.arrays["mask"]
        assert final["params"]["method"] == "region" and "text" in str(final["params"]["models"]["missing"])
        assert iou(mask, scene.labels == obj.label) >= 0.95
        # A subset (what a segment object holds) answers in its own order.
        subset = np.nonzero(scene.labels != 0)[0][::-1].copy()
        eng.send(protocol.request(2, "segment", params, {**arrays, "indices": subset}))
        _, final = eng.until_final(2)
        assert final.kind == "result" and len(final.arrays["mask"]) == len(subset)
        assert iou(final.arrays["mask"], scene.labels[subset] == obj.label) >= 0.95
        # Text without CLIP weights: an error whose hint names the model.
        eng.send(protocol.request(3, "segment", {**params, "mode": "text", "text": "the red ball"}, arrays))
        _, final = eng.until_final(3)
        assert final.kind == "error" and "clip" in (final["message"] + final["hint"]).lower()
    finally:
        eng.close()


class _QuietContext:
    def progress(self, fraction: float, stage: str) -> None:
        pass

    def check_cancelled(self) -> None:
        pass


def test_real_capture_segments_with_the_offline_default(real_ply, tmp_path, monkeypatch):
    """A real .ply nobody here made: a click and a box with no model weights give a bounded, compact
    selection of what is under the click / inside the box (no ground truth exists for it)."""
    from engine.ply import read_gaussians
    from engine.segment.handler import handle_segment

    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ANIMATE_GAUSSIANS_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("ANIMATE_GAUSSIANS_OFFLINE", "1")
    g = read_gaussians(real_ply)
    (view,) = orbit_views(g.means, count=1, width=160, height=120, elevations=(30.0,))
    arrays = {"viewmat": view.viewmat, "K": view.K, "file_to_world": np.eye(4)}
    params = {"ply_path": str(real_ply), "mode": "click", "x": 80.0, "y": 60.0, "granularity": 0.3,
              "method": "auto", "width": 160, "height": 120, "device": "cpu"}
    result, out = handle_segment(_QuietContext(), params, arrays)
    mask = out["mask"]
    assert result["method"] == "region" and mask.shape == (g.count,)
    assert 0.001 * g.count <= mask.sum() <= 0.9 * g.count
    # Compact: the selection spans less of the scene than the whole capture does.
    spread = lambda p: np.percentile(p, 95, axis=0) - np.percentile(p, 5, axis=0)  # noqa: E731
    assert np.linalg.norm(spread(g.means[mask])) < np.linalg.norm(spread(g.means))

    box = [40.0, 30.0, 120.0, 90.0]
    result, out = handle_segment(_QuietContext(), {**params, "mode": "box", "box": box}, arrays)
    selected = out["mask"]
    assert selected.any()
    uv, z = project_points(g.means[selected], view.viewmat, view.K)
    inside = (uv[:, 0] >= box[0]) & (uv[:, 0] <= box[2]) & (uv[:, 1] >= box[1]) & (uv[:, 1] <= box[3]) & (z > 0)
    assert inside.mean() >= 0.9
