"""batch --animate: keys from the engine's motion (a fake handler with a known motion, and the real preset
generator when the engine has it), keyframe counts in the report, one-line failures that write no .blend."""

from __future__ import annotations

import json
import math

import pytest
from engine_python import ENGINE_PYTHON
from blender_fixtures import addon, bpy, clean_scene  # noqa: F401 (fixtures)
from motion_fakes import fake_engine_python

from blender_addon import batch
from blender_addon.engine_link import engine_client
from engine.handlers import HANDLERS
from engine.synthetic_scene import make_primitives_scene

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def small_ply(tmp_path_factory):
    path = tmp_path_factory.mktemp("batch_animate") / "small.ply"
    return make_primitives_scene(gaussians_per_object=100, sh_degree=1, seed=2).write(path)


@pytest.fixture
def camera_blend(clean_scene, tmp_path):
    scene = clean_scene
    camera = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(camera)
    camera.location = (0.0, -8.0, 3.0)
    camera.rotation_euler = (math.radians(70.0), 0.0, 0.0)
    scene.camera = camera
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    scene.frame_start, scene.frame_end = 1, 5
    path = tmp_path / "camera.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path), check_existing=False)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return path


@pytest.fixture(scope="module")
def fake_client(tmp_path_factory):
    client = engine_client.EngineClient(python=fake_engine_python(tmp_path_factory.mktemp("fake_engine")))
    yield client
    client.stop()


def _run(capsys, *argv):
    status = batch.run([str(a) for a in argv])
    return status, capsys.readouterr().err.strip()


def test_animate_with_a_fake_engine_reports_keyframes(camera_blend, small_ply, fake_client, monkeypatch, capsys,
                                                       tmp_path):
    monkeypatch.setattr(engine_client, "get_client", lambda: fake_client)
    report, blend = tmp_path / "report.json", tmp_path / "animated.blend"
    status, err = _run(capsys, "--blend", camera_blend, "--ply", small_ply, "--animate", "the ball rolls",
                       "--generator", "preset", "--frames", 12, "--fps", 24, "--report", report, "--save", blend)
    assert status == 0, err
    data = json.loads(report.read_text())
    (entry,) = data["objects"]
    assert entry["name"] == "small" and 0 < entry["keyframes"] < 7 * 12
    assert entry["frame_range"] == [1.0, 12.0]
    assert [s["name"] for s in data["steps"]] == ["open_blend", "import_ply", "animate", "save"]
    assert "animate: 100%" in err
    assert blend.exists() and bpy.context.scene.frame_end == 12


def test_animate_failures_are_one_line_and_write_no_blend(camera_blend, small_ply, fake_client, monkeypatch, capsys,
                                                          tmp_path):
    monkeypatch.setattr(engine_client, "get_client", lambda: fake_client)
    blend = tmp_path / "out.blend"
    cases = [
        (["--blend", camera_blend, "--ply", small_ply, "--animate", "fail"], "asked to fail"),
        (["--ply", small_ply, "--animate", "it rolls"], "no active camera"),
        (["--blend", camera_blend, "--ply", small_ply, "--animate", "it rolls", "--target", "nope"], "nope"),
        (["--ply", small_ply, "--frames", "12"], "--frames only applies to --animate"),
    ]
    for argv, message in cases:
        bpy.ops.wm.read_factory_settings(use_empty=True)     # as a fresh Blender would start
        status, err = _run(capsys, *argv, "--save", blend)
        assert status != 0 and len(err.splitlines()) == 1 and message in err, err
        assert not blend.exists()


@pytest.mark.skipif("animate" not in HANDLERS, reason="the engine's animate handler (helper D) is not there yet")
def test_animate_with_the_preset_generator(camera_blend, small_ply, monkeypatch, capsys, tmp_path):
    client = engine_client.EngineClient(python=ENGINE_PYTHON)
    monkeypatch.setattr(engine_client, "get_client", lambda: client)
    report = tmp_path / "report.json"
    try:
        status, err = _run(capsys, "--blend", camera_blend, "--ply", small_ply, "--animate", "it bounces",
                           "--generator", "preset", "--frames", 10, "--fps", 24, "--device", "cpu",
                           "--report", report)
    finally:
        client.stop()
    assert status == 0, err
    (entry,) = json.loads(report.read_text())["objects"]
    assert entry["keyframes"] > 0 and entry["frame_range"][0] == 1.0
