"""The panel's Advanced boxes reach the engine's requests: the video model, steps, seed, offload, depth model,
Require Depth, Lift Effort and Smoothness of Animate; the SAM model and Require SAM of Segment; the Train Features
operator is registered."""

from __future__ import annotations

import pytest
from blender_fixtures import addon, bpy, clean_scene  # noqa: F401 (fixtures)

from blender_addon.ui import advanced_settings
from blender_addon.animate.animate_ops import animate_settings, options_from_settings
from engine.motion.model_profiles import DEFAULT_24GB_MODEL

pytestmark = pytest.mark.blender


def test_defaults_fit_a_24gb_gpu(clean_scene):
    adv = advanced_settings.advanced(clean_scene)
    assert adv.model == DEFAULT_24GB_MODEL and not adv.offload and adv.steps == 0


def test_animate_advanced_settings_reach_the_options(clean_scene):
    settings = animate_settings(clean_scene)
    settings.generator = "DIFFUSERS"
    settings.motion = "NONRIGID"
    settings.handles = 6
    adv = advanced_settings.advanced(clean_scene)
    adv.model, adv.steps, adv.seed, adv.offload = "cogvideox-5b-i2v", 12, 5, True
    adv.depth_model, adv.require_depth = "depth-anything-v2-base", True
    options = options_from_settings(settings, "cpu", clean_scene)
    assert options.motion == "nonrigid" and options.handles == 6
    assert options.options == {"model": "cogvideox-5b-i2v", "steps": 12, "seed": 5, "offload": True,
                               "depth_model": "depth-anything-v2-base"}
    assert options.require == ["no_depth"]
    settings.generator = "PRESET"        # model options only for the model generator
    assert "model" not in options_from_settings(settings, "cpu", clean_scene).options
    # The lifting's effort and smoothness go in only when changed, under the names the engine reads.
    adv.lift_effort, adv.lift_smoothness = "THOROUGH", 0.0
    assert options_from_settings(settings, "cpu", clean_scene).options["lifting"] == {"effort": "thorough",
                                                                                       "smoothness": 0.0}
    adv.lift_effort = "DEFAULT"
    assert options_from_settings(settings, "cpu", clean_scene).options["lifting"] == {"smoothness": 0.0}


def test_segment_advanced_settings_and_train_operator(clean_scene):
    adv = advanced_settings.advanced(clean_scene)
    assert advanced_settings.segment_options(adv) == {}
    adv.sam_model, adv.require_sam = "vit_b", True
    assert advanced_settings.segment_options(adv) == {"sam_variant": "vit_b", "require": ["region_growing"]}
    assert hasattr(bpy.types, "GAUSSIANS_OT_segment_train")
