"""SAM and open_clip code paths end to end with tiny randomly initialised models built in code: automatic and
point masks, loading a checkpoint, mask-crop relevancy, and text queries onto a scene's Gaussians."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models import registry
from engine.segment import clip_text, sam_masks


@pytest.fixture(scope="module")
def sam():
    return sam_masks.tiny_sam()


def _image():
    image = np.full((48, 64, 3), 200, np.uint8)
    image[10:30, 8:30] = (220, 30, 20)
    image[20:44, 36:60] = (20, 160, 40)
    return image


def test_registry_has_sam_and_clip_entries():
    for variant in sam_masks.SAM_VARIANTS:
        entry = registry.model_entry(f"sam_{variant}")
        assert entry.location.startswith("https://dl.fbaipublicfiles.com/segment_anything/sam_" + variant)
        assert len(entry.sha256) == 64 and entry.licence == "Apache-2.0"
    assert registry.model_entry(clip_text.DEFAULT_CLIP).source == "hf"


def test_automatic_and_point_masks(sam):
    generator = sam_masks.mask_generator(sam, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    masks = sam_masks.automatic_masks(_image(), generator)
    assert masks.dtype == bool and masks.ndim == 3 and masks.shape[1:] == (48, 64) and len(masks) >= 1
    areas = masks.sum((1, 2))
    assert (np.diff(areas) <= 0).all()                      # largest first
    three = sam_masks.point_masks(_image().astype(np.float32) / 255.0, [[20, 20]], sam)
    assert three.shape == (3, 48, 64) and three.dtype == bool


def test_load_sam_from_a_checkpoint(sam, tmp_path):
    path = tmp_path / "tiny_sam.pth"
    torch.save(sam.state_dict(), path)
    loaded = sam_masks.load_sam("tiny", "cpu", checkpoint=path)
    for (name, a), (_, b) in zip(sam.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_load_sam_offline_says_where_to_put_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path))
    monkeypatch.setenv(registry.OFFLINE_ENV, "1")
    with pytest.raises(registry.ModelUnavailableError, match="sam_vit_b"):
        sam_masks.load_sam("vit_b")


def test_clip_relevancy_of_mask_crops():
    clip = clip_text.tiny_clip()
    masks = np.zeros((3, 48, 64), bool)
    masks[0, 10:30, 8:30] = True
    masks[1, 20:44, 36:60] = True
    rel = clip_text.mask_relevancy(clip, _image(), masks, "a red box")
    assert rel.shape == (3,) and rel.dtype == np.float32 and ((rel >= 0) & (rel <= 1)).all()
    crops = clip_text.mask_crops(_image(), masks, 32)
    assert crops.shape == (3, 3, 32, 32)
    assert torch.allclose(crops[2], torch.full((3, 32, 32), 0.5))   # an empty mask is a grey crop
    # Relevancy is a probability against the canonical phrases: a prompt equal to one of them scores 0.5.
    emb = clip_text.encode_text(clip, ["object", "object", "things"])
    assert torch.allclose(clip_text.relevancy(emb[:1], emb[1], emb[1:2]), torch.tensor([0.5]))


def test_text_scores_end_to_end(sam, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    from engine.scene_cache import load_scene
    from engine.segment import saga
    from engine.segment.views import orbit_views
    from engine.synthetic_scene import make_primitives_scene

    synth = make_primitives_scene(gaussians_per_object=150, sh_degree=0)
    scene = load_scene(synth.write(tmp_path / "s.ply"))
    views = orbit_views(synth.gaussians.means, 4, width=64, height=48)
    options = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    clip = clip_text.tiny_clip()
    # Without features: the best masks are lifted onto the Gaussians (vote shares in [0, 1]).
    lifted = saga.text_scores(scene, views, "a red ball", 0.5, device="cpu", sam=sam, clip=clip, max_views=2,
                              generator_options=options)
    assert lifted.shape == (synth.gaussians.count,) and lifted.dtype == np.float32
    assert ((lifted >= 0) & (lifted <= 1)).all() and lifted.max() > 0
    # With features: the best mask becomes a feature query (cosine similarities).
    features = saga.train_features(scene, views, device="cpu", masks=[np.ones((1, 48, 64), bool)] * 4,
                                   iterations=5, save=False)
    queried = saga.text_scores(scene, views, "a red ball", 0.5, device="cpu", sam=sam, clip=clip, max_views=2,
                               features=features, generator_options=options)
    assert queried.shape == (synth.gaussians.count,) and (np.abs(queried) <= 1.0001).all()
