"""Bézier key reduction (pure numpy) and the bulk F-curve writer: few keys, every frame within the tolerance
as Blender itself evaluates the F-curves, exact endpoints, layered actions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blender_addon.animate.keyframes import BezierKeys, evaluate_keys, reduce_keys

FRAMES = np.arange(1, 121, dtype=np.float64)


def _check_within(keys: BezierKeys, t: np.ndarray, y: np.ndarray, tol: float) -> None:
    fit = evaluate_keys(keys, t)
    assert np.abs(fit - y.reshape(len(t), -1)).max() <= tol * (1 + 1e-9)
    np.testing.assert_array_equal(keys.times[[0, -1]], t[[0, -1]])
    np.testing.assert_array_equal(keys.values[[0, -1]], y.reshape(len(t), -1)[[0, -1]])


def test_a_dense_smooth_curve_becomes_few_keys_within_tolerance():
    y = 2.0 * np.sin(2 * np.pi * FRAMES / 120) + 0.3 * np.cos(2 * np.pi * FRAMES / 40)
    keys = reduce_keys(FRAMES, y, 1e-3)
    _check_within(keys, FRAMES, y, 1e-3)
    assert keys.count <= 24           # 120 samples -> a fifth or fewer
    looser = reduce_keys(FRAMES, y, 1e-2)
    assert looser.count < keys.count


@pytest.mark.parametrize("values", [np.full(120, 3.5), 0.25 * FRAMES - 7.0], ids=["constant", "linear"])
def test_constant_and_linear_curves_take_two_keys(values):
    keys = reduce_keys(FRAMES, values, 1e-6)
    assert keys.count == 2
    _check_within(keys, FRAMES, values, 1e-6)


def test_kinks_get_broken_handles_and_stay_within_tolerance():
    y = np.abs(np.sin(2 * np.pi * FRAMES / 60))        # a bounce: slope jumps at each contact
    keys = reduce_keys(FRAMES, y, 1e-3)
    _check_within(keys, FRAMES, y, 1e-3)
    assert keys.count <= 30
    contact = np.isin(keys.times, [30.0, 60.0, 90.0])
    assert contact.sum() == 3 and np.all(keys.slope_left[contact] < 0) and np.all(keys.slope_right[contact] > 0)


def test_channels_share_key_times_and_each_keeps_its_tolerance():
    y = np.stack([np.sin(FRAMES / 10), 100 * np.cos(FRAMES / 17), FRAMES], axis=1)
    tol = np.array([1e-4, 1e-2, 1e-4])
    keys = reduce_keys(FRAMES, y, tol)
    err = np.abs(evaluate_keys(keys, FRAMES) - y).max(axis=0)
    assert np.all(err <= tol)
    assert keys.values.shape == (keys.count, 3)


def test_uneven_times_and_bad_input():
    t = np.cumsum(np.r_[0.0, np.full(40, 0.5), np.full(40, 1.5)])
    y = np.sin(t / 8)
    _check_within(reduce_keys(t, y, 1e-4), t, y, 1e-4)
    with pytest.raises(ValueError, match="increasing"):
        reduce_keys([0.0, 1.0, 1.0], [0.0, 1.0, 2.0], 1e-3)
    single = reduce_keys([5.0], [2.0], 1e-3)
    assert single.count == 1 and evaluate_keys(single, [5.0])[0, 0] == 2.0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([1e-4, 1e-3, 1e-2]))
def test_any_random_walk_is_within_tolerance(seed, tol):
    rng = np.random.default_rng(seed)
    y = np.cumsum(rng.normal(size=80)) * rng.uniform(0.001, 1.0)
    t = np.arange(80, dtype=np.float64)
    _check_within(reduce_keys(t, y, tol), t, y, tol)


# ---------------------------------------------------------------------------------------------- in Blender

def _keyed_empty(bpy):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    obj = bpy.data.objects.new("keyed", None)
    bpy.context.scene.collection.objects.link(obj)
    return obj


@pytest.mark.blender
def test_blender_evaluates_the_written_keys_within_tolerance():
    bpy = pytest.importorskip("bpy")
    from blender_addon.animate.keyframes import channel_container, keyframe_count, write_keys

    obj = _keyed_empty(bpy)
    t = np.arange(1, 201, dtype=np.float64) * 0.75 + 0.5          # non-integer key times too
    y = np.stack([np.sin(t / 9) * 3, np.abs(np.sin(t / 20)), 0.02 * t], axis=1)
    tol = 1e-3
    keys = reduce_keys(t, y, tol)
    container = channel_container(obj)
    curves = write_keys(container, "location", keys, group="Object Transforms")
    assert len(curves) == 3 and keyframe_count(obj) == 3 * keys.count < 3 * len(t) / 4
    if hasattr(obj.animation_data.action, "layers"):     # Blender 4.4+: a layered action with a slot
        assert obj.animation_data.action_slot is not None
    for c, fcurve in enumerate(curves):
        evaluated = np.array([fcurve.evaluate(frame) for frame in t])
        assert np.abs(evaluated - y[:, c]).max() <= tol + 1e-5      # + float32 storage
        first, last = fcurve.keyframe_points[0], fcurve.keyframe_points[-1]
        assert (first.co[0], last.co[0]) == pytest.approx((t[0], t[-1]))
        assert (first.co[1], last.co[1]) == pytest.approx((y[0, c], y[-1, c]), abs=1e-6)
        assert {k.interpolation for k in fcurve.keyframe_points} == {"BEZIER"}
    # the object itself moves as sampled
    scene = bpy.context.scene
    for i in (0, 37, 111, 199):
        scene.frame_set(int(t[i]), subframe=float(t[i] % 1))
        np.testing.assert_allclose(np.array(obj.location), y[i], atol=tol + 1e-5)


@pytest.mark.blender
def test_rewriting_replaces_the_curves():
    bpy = pytest.importorskip("bpy")
    from blender_addon.animate.keyframes import channel_container, keyframe_count, remove_fcurves, write_keys

    obj = _keyed_empty(bpy)
    t = np.arange(10, dtype=np.float64)
    container = channel_container(obj)
    write_keys(container, "location", reduce_keys(t, np.stack([t, t, t], 1) ** 2, 1e-3))
    write_keys(container, "location", reduce_keys(t, np.zeros((10, 3)), 1e-3))
    assert keyframe_count(obj) == 6
    assert remove_fcurves(channel_container(obj), ["location"]) == 3 and keyframe_count(obj) == 0
