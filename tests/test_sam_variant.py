"""The SAM checkpoint used is one that is here: with only vit_b on the machine, a click (auto method) loads
vit_b, not vit_h (an error offline, a 2.5 GB download online); an asked variant wins; an unknown one is refused."""

from __future__ import annotations

import numpy as np
import pytest

from engine.cameras import project_points
from engine.models.registry import ModelUnavailableError
from engine.segment import handler, sam_masks
from engine.segment.views import orbit_views
from engine.synthetic_scene import make_primitives_scene
from tests.motion_fixtures import QuietContext


@pytest.fixture
def only_vit_b(monkeypatch, tmp_path):
    monkeypatch.setenv("ANIMATE_GAUSSIANS_MODELS", str(tmp_path / "cache"))
    monkeypatch.setenv("ANIMATE_GAUSSIANS_OFFLINE", "1")
    for v in sam_masks.SAM_VARIANTS:
        monkeypatch.delenv(f"ANIMATE_GAUSSIANS_MODEL_SAM_{v.upper()}", raising=False)
    checkpoint = tmp_path / "sam_vit_b.pth"
    checkpoint.write_bytes(b"weights")
    monkeypatch.setenv("ANIMATE_GAUSSIANS_MODEL_SAM_VIT_B", str(checkpoint))
    return tmp_path


def test_choose_variant_takes_the_one_that_is_here(only_vit_b, monkeypatch):
    assert sam_masks.choose_variant() == "vit_b"
    assert sam_masks.choose_variant("vit_l") == "vit_l"
    other = only_vit_b / "sam_vit_h.pth"
    other.write_bytes(b"weights")
    monkeypatch.setenv("ANIMATE_GAUSSIANS_MODEL_SAM_VIT_H", str(other))
    assert sam_masks.choose_variant() == "vit_h"
    with pytest.raises(ModelUnavailableError, match="vit_x"):
        sam_masks.choose_variant("vit_x")


def test_an_auto_click_loads_the_checkpoint_that_is_here(only_vit_b, monkeypatch, tmp_path):
    loaded = []

    def load_sam(variant=None, device="cpu", checkpoint=None, progress=None):
        loaded.append(variant)
        return sam_masks.tiny_sam()

    monkeypatch.setattr(sam_masks, "load_sam", load_sam)
    handler._SAM_PREDICTORS.clear()
    scene = make_primitives_scene(gaussians_per_object=120, sh_degree=0, seed=0)
    path = scene.write(tmp_path / "scene.ply")
    (view,) = orbit_views(scene.gaussians.means, count=1, width=64, height=64, elevations=(35.0,))
    uv, _ = project_points(scene.object("red_sphere").center[None], view.viewmat, view.K)
    params = {"ply_path": str(path), "mode": "click", "method": "auto", "x": float(uv[0, 0]), "y": float(uv[0, 1]),
              "width": 64, "height": 64, "granularity": 1.0, "device": "cpu",
              "views": {"source": "orbit", "count": 2, "width": 48, "height": 48}}
    try:
        result, _ = handler.handle_segment(QuietContext(), params, {"viewmat": view.viewmat, "K": view.K})
    finally:
        handler._SAM_PREDICTORS.clear()
    assert result["method"] == "lift"
    assert loaded == ["vit_b"]
    assert result["models"]["used"] == ["sam_vit_b"]
