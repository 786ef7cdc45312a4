"""Animate in Blender against a fake "animate" engine handler with a known motion: rigid keys reproduce the
engine's transforms, the non-rigid rig deforms the mesh like the handles, one undo step, failures change
nothing, and Render Splats renders the animated motion."""

from __future__ import annotations

import math

import numpy as np
import pytest
from engine_python import ENGINE_PYTHON
from blender_fixtures import addon, bpy, datablock_snapshot  # noqa: F401 (fixtures)
from motion_fakes import fake_engine_python, known_nonrigid_motion, known_rigid_motion

from blender_addon.animate import animate_ops, keyframes, motion_result, rig
from blender_addon.engine_link import engine_client
from blender_addon.io import gaussian_object
from blender_addon.render import render_request, render_splats
from engine.ply import read_gaussians
from engine.synthetic_scene import make_primitives_scene

pytestmark = pytest.mark.blender
FRAMES = 16
SIZE = (40, 30)


@pytest.fixture(scope="module")
def small_ply(tmp_path_factory):
    path = tmp_path_factory.mktemp("animate") / "small.ply"
    return make_primitives_scene(gaussians_per_object=120, sh_degree=1, seed=5).write(path)


@pytest.fixture(scope="module")
def fake_client(tmp_path_factory):
    client = engine_client.EngineClient(python=fake_engine_python(tmp_path_factory.mktemp("fake_engine")))
    yield client
    client.stop()


@pytest.fixture
def scene_with_object(addon, small_ply, fake_client, monkeypatch):
    monkeypatch.setattr(engine_client, "get_client", lambda: fake_client)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    obj = gaussian_object.import_ply(small_ply, bpy.context)
    camera = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(camera)
    camera.location = (0.0, -8.0, 3.0)
    camera.rotation_euler = (math.radians(70.0), 0.0, 0.0)
    scene.camera = camera
    scene.frame_start, scene.frame_end = 1, 10
    scene.render.resolution_x, scene.render.resolution_y = SIZE
    scene.render.fps, scene.render.fps_base = 24, 1.0
    obj.location = (0.5, 0.25, 0.0)              # moved from its import pose: keys move it about its own origin
    bpy.context.view_layer.update()
    return scene, obj


def options(**kw) -> animate_ops.AnimateOptions:
    base = dict(prompt="the ball rolls", frames=FRAMES, fps=24.0, location_tolerance=1e-4, rotation_tolerance=0.01,
                device="cpu")
    base.update(kw)
    return animate_ops.AnimateOptions(**base)


def _rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    r = np.asarray(a, np.float64)[:3, :3] @ np.asarray(b, np.float64)[:3, :3].T
    # from the skew part (sin θ): acos of the trace loses small angles to float32 rounding
    skew = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / 2
    return math.degrees(math.atan2(np.linalg.norm(skew), (np.trace(r) - 1) / 2))


def test_rigid_keys_reproduce_the_engine_transforms(scene_with_object, fake_client):
    scene, obj = scene_with_object
    world_0 = np.array(obj.matrix_world)
    file_to_world_0 = gaussian_object.file_to_world(obj)
    summary = animate_ops.animate_blocking(scene, obj, options(), client=fake_client)
    assert summary.motion == "rigid" and summary.frames == FRAMES and summary.armature_name is None
    received = summary.info["received"]
    assert received["indices"] == [gaussian_object.gaussian_count(obj)]
    assert received["viewmat"] == [4, 4] and received["K"] == [3, 3] and received["file_to_world"] == [4, 4]
    assert "end_transform" not in received
    assert summary.info["params"]["generator"] == "preset" and summary.info["params"]["width"] == SIZE[0]

    assert obj.rotation_mode == "QUATERNION"
    assert keyframes.keyframe_count(obj) == summary.keyframes < 7 * FRAMES
    assert scene.frame_end == FRAMES            # extended to hold the whole motion
    T = known_rigid_motion(FRAMES)
    for f in range(FRAMES):
        scene.frame_set(1 + f)
        expected = file_to_world_0 @ T[f] @ np.linalg.inv(gaussian_object.file_to_local(obj))
        got = np.array(obj.matrix_world)
        np.testing.assert_allclose(got[:3, 3], expected[:3, 3], atol=2e-4)
        assert _rotation_angle_deg(got, expected) <= 0.02
    scene.frame_set(1)
    np.testing.assert_allclose(np.array(obj.matrix_world), world_0, atol=1e-5)


def test_the_end_pose_goes_to_the_engine(scene_with_object, fake_client):
    scene, obj = scene_with_object
    start = gaussian_object.file_to_world(obj)
    obj.keyframe_insert("location", frame=1)
    obj.location = (2.0, 0.25, 1.0)
    obj.keyframe_insert("location", frame=FRAMES)
    job = animate_ops.prepare_animate(scene, obj, options())
    scene.frame_set(FRAMES)
    expected = np.linalg.inv(start) @ gaussian_object.file_to_world(obj)
    np.testing.assert_allclose(job.arrays["end_transform"], expected, atol=1e-5)
    np.testing.assert_allclose(job.arrays["file_to_world"], start, atol=1e-5)


def test_operator_is_one_undo_step(scene_with_object):
    scene, obj = scene_with_object
    scene.gaussians_animate.prompt = "the ball rolls"
    scene.gaussians_animate.frames = FRAMES
    bpy.ops.ed.undo_push(message="before animate")
    # as from the UI: the operator's UNDO flag makes its undo step (scripts' calls push none by default)
    assert bpy.ops.gaussians.animate("EXEC_DEFAULT", True) == {"FINISHED"}
    name = obj.name
    assert keyframes.keyframe_count(bpy.data.objects[name]) > 0
    bpy.ops.ed.undo()
    obj = bpy.data.objects[name]
    assert keyframes.keyframe_count(obj) == 0 and obj.rotation_mode != "QUATERNION"
    assert bpy.context.scene.frame_end == 10


def test_a_failed_motion_leaves_the_scene_unchanged(scene_with_object):
    scene, obj = scene_with_object
    scene.gaussians_animate.prompt = "fail"
    before = datablock_snapshot()
    with pytest.raises(RuntimeError, match="asked to fail"):     # the operator's ERROR report, in bpy
        bpy.ops.gaussians.animate()
    assert datablock_snapshot() == before and obj.animation_data is None and obj.rotation_mode == "XYZ"
    scene.camera = None
    scene.gaussians_animate.prompt = "the ball rolls"
    with pytest.raises(RuntimeError, match="no active camera"):
        bpy.ops.gaussians.animate()
    assert datablock_snapshot() == before and obj.animation_data is None


def test_a_bad_engine_answer_changes_nothing(scene_with_object):
    scene, obj = scene_with_object
    job = animate_ops.prepare_animate(scene, obj, options())
    before = datablock_snapshot()
    bad = known_rigid_motion(FRAMES)
    bad[3, 0, 0] = np.nan
    with pytest.raises(animate_ops.EngineError, match="NaN"):
        animate_ops.apply_animate_result(job, {"motion": "rigid", "fps": 24.0}, {"transforms": bad}, scene)
    with pytest.raises(animate_ops.EngineError, match="weights"):
        animate_ops.apply_animate_result(job, {"motion": "nonrigid", "fps": 24.0},
                                         {"handle_rest": np.zeros((2, 3)), "weights": np.ones((3, 2)),
                                          "handle_transforms": np.tile(np.eye(4), (4, 2, 1, 1))}, scene)
    assert datablock_snapshot() == before and obj.animation_data is None


def _evaluated_local_positions(obj) -> np.ndarray:
    depsgraph = bpy.context.evaluated_depsgraph_get()
    mesh = obj.evaluated_get(depsgraph).data
    out = np.empty(3 * len(mesh.vertices), np.float32)
    mesh.vertices.foreach_get("co", out)
    return out.reshape(-1, 3).astype(np.float64)


def test_nonrigid_rig_deforms_the_mesh_like_the_handles(scene_with_object, fake_client):
    scene, obj = scene_with_object
    summary = animate_ops.animate_blocking(scene, obj, options(motion="nonrigid"), client=fake_client)
    arm = bpy.data.objects[summary.armature_name]
    assert summary.motion == "nonrigid" and rig.rig_of(obj) == arm and obj.parent == arm
    assert len(arm.data.bones) == 3 and keyframes.keyframe_count(arm) == summary.keyframes > 0
    assert obj.modifiers[0].type == "ARMATURE"
    handles, weights = rig.skinning(obj)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    means = read_gaussians(obj[gaussian_object.SOURCE_KEY]).means.astype(np.float64)
    _, H, dense = known_nonrigid_motion(means, FRAMES)
    picked = np.where(weights > 0, dense[np.arange(len(dense))[:, None], handles], 0.0)   # unused slots: 0
    np.testing.assert_allclose(picked, weights, atol=1 / 1024)
    for mod in obj.modifiers[1:]:                 # the display turns points into splats: look at the points
        mod.show_viewport = False
    local = gaussian_object.file_to_local(obj)
    for f in (0, FRAMES // 2, FRAMES - 1):
        scene.frame_set(1 + f)
        expected = motion_result.linear_blend(means, handles, weights, H[f]) @ local[:3, :3].T + local[:3, 3]
        np.testing.assert_allclose(_evaluated_local_positions(obj), expected, atol=1e-3)
    # the render sees the same pose as file-frame handle transforms
    scene.frame_set(FRAMES)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    now = rig.handle_transforms_now(obj, arm, depsgraph, gaussian_object.file_to_world(obj))
    np.testing.assert_allclose(now, H[-1], atol=2e-3)


def test_render_splats_renders_the_keyed_motion(scene_with_object, fake_client, tmp_path):
    from PIL import Image

    scene, obj = scene_with_object
    animate_ops.animate_blocking(scene, obj, options(frames=6), client=fake_client)
    scene.frame_start, scene.frame_end, scene.frame_step = 1, 6, 5
    client = engine_client.EngineClient(python=ENGINE_PYTHON)
    try:
        keyed = render_splats.render_splats_blocking(scene, tmp_path / "keyed", SIZE, "cpu", write_video=False,
                                                     client=client)
        # the same pose set by hand, without keys, renders the same image
        scene.frame_set(6)
        world = obj.matrix_world.copy()
        obj.animation_data_clear()
        obj.matrix_world = world
        scene.frame_start = 6
        still = render_splats.render_splats_blocking(scene, tmp_path / "still", SIZE, "cpu", write_video=False,
                                                     client=client)
    finally:
        client.stop()
    first, last, posed = (np.asarray(Image.open(p).convert("RGB"), np.float32) for p in keyed + still)
    assert last.std() > 3 and np.abs(last - posed).max() <= 1.0
    assert np.abs(first - last).mean() > 1.0       # it did move


def test_render_splats_of_a_rigged_object_sends_the_bones_and_renders_them(scene_with_object, fake_client,
                                                                           tmp_path):
    from PIL import Image

    scene, obj = scene_with_object
    animate_ops.animate_blocking(scene, obj, options(motion="nonrigid", frames=6), client=fake_client)
    scene.frame_start, scene.frame_end, scene.frame_step = 1, 6, 5
    params, arrays = render_request.build_render_request(scene, tmp_path, SIZE, "cpu")
    handles, weights = rig.skinning(obj)
    np.testing.assert_array_equal(arrays["skin_handles_0"], handles)
    means = read_gaussians(obj[gaussian_object.SOURCE_KEY]).means.astype(np.float64)
    _, H, _ = known_nonrigid_motion(means, 6)
    assert arrays["skin_transforms_0"].shape == (2, 3, 4, 4)
    np.testing.assert_allclose(arrays["skin_transforms_0"][0], H[0], atol=1e-5)
    np.testing.assert_allclose(arrays["skin_transforms_0"][1], H[-1], atol=2e-3)
    client = engine_client.EngineClient(python=ENGINE_PYTHON)
    try:
        files = render_splats.render_splats_blocking(scene, tmp_path / "bent", SIZE, "cpu", write_video=False,
                                                     client=client)
    finally:
        client.stop()
    first, last = (np.asarray(Image.open(p).convert("RGB"), np.float32) for p in files)
    assert last.std() > 3 and np.abs(first - last).mean() > 1.0
