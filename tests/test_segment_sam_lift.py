"""The SAM-prompted click path of the segment request (handler method "lift") end to end on the synthetic
scene: with a tiny random SAM (the plumbing), and with an oracle "SAM" that returns the object under the prompt
(accuracy of views, prompts carried into other views by depth, and lifting)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.cameras import project_points
from engine.segment import handler, sam_masks
from engine.segment.views import orbit_views
from engine.synthetic_scene import make_primitives_scene


class Ctx:
    def __init__(self):
        self.stages = []

    def progress(self, fraction, stage):
        self.stages.append((fraction, stage))

    def check_cancelled(self):
        pass


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    scene = make_primitives_scene(gaussians_per_object=300, sh_degree=0, seed=0)
    return scene, scene.write(tmp_path_factory.mktemp("sam_lift") / "scene.ply")


@pytest.fixture
def sam_present(monkeypatch):
    """SAM weights 'present': the model status says so, and load_sam builds the tiny random SAM."""
    calls = []

    def load_sam(variant=None, device="cpu", checkpoint=None, progress=None):
        calls.append(variant)
        return sam_masks.tiny_sam()

    monkeypatch.setattr(handler, "_model_status", lambda: {"sam": ["sam_vit_b"], "clip": []})
    monkeypatch.setattr(sam_masks, "load_sam", load_sam)
    handler._SAM_PREDICTORS.clear()
    yield calls
    handler._SAM_PREDICTORS.clear()


def click_request(scene, path, obj, view, count=6, size=96):
    uv, _ = project_points(obj.center[None], view.viewmat, view.K)
    params = {"ply_path": str(path), "mode": "click", "method": "auto", "x": float(uv[0, 0]),
              "y": float(uv[0, 1]), "width": view.width, "height": view.height, "granularity": 1.0,
              "device": "cpu", "views": {"source": "orbit", "count": count, "width": size, "height": size}}
    return params, {"viewmat": view.viewmat, "K": view.K}


def request_view(scene, size=160):
    (view,) = orbit_views(scene.gaussians.means, count=1, width=size, height=size, elevations=(35.0,))
    return view


def test_auto_click_runs_the_sam_lift_path_with_a_tiny_sam(scene_file, sam_present):
    scene, path = scene_file
    view = request_view(scene, 96)
    params, arrays = click_request(scene, path, scene.object("red_sphere"), view, count=4, size=64)
    ctx = Ctx()
    result, out = handler.handle_segment(ctx, params, arrays)
    n = scene.gaussians.count
    assert result["method"] == "lift" and result["models"]["used"] == ["sam_vit_b"]
    assert out["mask"].shape == (n,) and out["mask"].dtype == bool
    assert out["scores"].shape == (n,) and np.isfinite(out["scores"]).all()
    assert ((out["scores"] > 0.5) == out["mask"]).mean() > 0.5
    assert result["count"] == int(out["mask"].sum())
    assert any("SAM masks" in stage for _, stage in ctx.stages)
    # Later clicks reuse the loaded SAM (a real checkpoint is up to 2.5 GB).
    assert handler._sam_predictor("vit_b", "cpu") is handler._sam_predictor("vit_b", "cpu")
    assert sam_present == ["vit_b"]   # the checkpoint that is here (only vit_b), not vit_h


def oracle_point_masks(palette):
    """A "SAM" that knows the scene: pixels take the nearest of the objects' colours (or the black background),
    and the mask is the connected region of the prompt's class, given for all three granularities."""
    palette = np.asarray(palette, np.float32)

    def point_masks(image, points_xy, predictor, labels=None):
        rgb = np.asarray(image, np.float32) / 255.0
        cls = ((rgb[:, :, None, :] - palette) ** 2).sum(-1).argmin(-1).astype(np.uint8)
        x, y = (int(v) for v in np.asarray(points_xy, np.float32).reshape(-1, 2)[0])
        _, comp = cv2.connectedComponents((cls == cls[y, x]).astype(np.uint8), connectivity=4)
        mask = comp == comp[y, x]
        return np.stack([mask] * 3)

    return point_masks


def test_click_on_each_object_with_an_oracle_sam_lifts_to_the_object(scene_file, sam_present, monkeypatch):
    scene, path = scene_file
    monkeypatch.setattr(sam_masks, "point_masks",
                        oracle_point_masks([o.color for o in scene.objects] + [(0.0, 0.0, 0.0)]))
    view = request_view(scene)
    for obj in scene.objects[1:]:
        params, arrays = click_request(scene, path, obj, view, count=8, size=160)
        result, out = handler.handle_segment(Ctx(), params, arrays)
        truth = scene.labels == obj.label
        score = float((out["mask"] & truth).sum() / (out["mask"] | truth).sum())
        print(obj.name, "SAM-lift click IoU", round(score, 4))
        assert result["method"] == "lift"
        assert score >= 0.92
