"""Batch rough edges: a corrupt .blend is the user's input error in one line (nothing on stdout), every failure
writes --report (creating its folder), a render says how long it will take after its first frame, and
--train-features / --sam-model reach the engine's requests."""

from __future__ import annotations

import json

import numpy as np
import pytest
from blender_fixtures import addon, bpy, clean_scene  # noqa: F401 (fixtures)

from blender_addon import batch, notices
from blender_addon.engine_link import engine_client
from blender_addon.cli.batch_progress import RenderEstimate

pytestmark = pytest.mark.blender


@pytest.fixture(autouse=True)
def _no_requirements_left():
    yield
    notices.require([])
    notices.clear()


def _run(capfd, *argv):
    status = batch.run([str(a) for a in argv])
    captured = capfd.readouterr()
    return status, captured.err.strip(), captured.out.strip()


def test_a_corrupt_blend_is_a_user_error_in_one_line(clean_scene, capfd, tmp_path):
    corrupt = tmp_path / "broken.blend"
    corrupt.write_bytes(b"BLENDER-v402" + bytes(range(256)) * 8)
    report = tmp_path / "new" / "folder" / "report.json"
    status, err, out = _run(capfd, "--blend", corrupt, "--save", tmp_path / "x.blend", "--report", report)
    assert status == 1
    assert err.splitlines() == [err] and err.startswith("batch.py: error: --blend: Blender cannot read")
    assert "internal error" not in err and "please report" not in err
    assert "Error" not in out      # Blender's own line no longer reaches stdout
    data = json.loads(report.read_text())
    assert data["ok"] is False and "cannot read" in data["errors"][0]


@pytest.mark.parametrize("argv, message", [
    (["--ply", "missing.ply"], "does not exist"),
    (["--frames", "3"], "--frames only applies to --animate"),
    (["--no-such-option"], "unrecognized arguments"),
])
def test_command_line_errors_write_the_report_in_a_new_folder(clean_scene, capfd, tmp_path, argv, message):
    report = tmp_path / "deep" / "er" / "report.json"
    status, err, _ = _run(capfd, *argv, "--report", report)
    assert status == 2 and message in err and len(err.splitlines()) == 1
    data = json.loads(report.read_text())
    assert data["ok"] is False and message in data["errors"][0] and data["warnings"] == []


def test_a_successful_run_creates_the_report_folder(clean_scene, capfd, primitives_ply, tmp_path):
    report = tmp_path / "a" / "b" / "report.json"
    status, err, _ = _run(capfd, "--ply", primitives_ply, "--report", report)
    assert status == 0, err
    assert json.loads(report.read_text())["ok"] is True


def test_render_estimate_after_the_first_frame():
    lines, now = [], [0.0]
    estimate = RenderEstimate(lines.append, resolution_given=False, size=(1920, 1080), clock=lambda: now[0])
    estimate(0.0, "render:   0% loading Gaussians")
    now[0] = 16.0
    estimate(0.01, "render:   1% frame 1 (1 of 48)")
    now[0] = 30.0
    estimate(0.02, "render:   2% frame 2 (2 of 48)")
    assert len(lines) == 1
    assert "16.0 s per frame" in lines[0] and "13 min" in lines[0]
    assert "--resolution" in lines[0] and "1920×1080" in lines[0]
    quiet = []
    RenderEstimate(quiet.append, resolution_given=True, size=(64, 40), clock=lambda: 1.0)(0.5, "frame 1 (1 of 2)")
    assert "--resolution" not in quiet[0]


def test_a_cpu_render_prints_its_estimate(clean_scene, capfd, primitives_ply, tmp_path):
    from blender_addon.io.gaussian_object import import_ply

    import_ply(primitives_ply, bpy.context)
    scene = bpy.context.scene
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam.location, cam.rotation_euler = (0.0, -8.0, 3.0), (1.2, 0.0, 0.0)
    scene.frame_start, scene.frame_end = 1, 3
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    client = engine_client.EngineClient()
    try:
        engine_client_get = engine_client.get_client
        engine_client.get_client = lambda: client
        status, err, _ = _run(capfd, "--blend", blend, "--render", tmp_path / "frames", "--resolution", 48, 32,
                              "--device", "cpu")
    finally:
        engine_client.get_client = engine_client_get
        client.stop()
    assert status == 0, err
    (line,) = [l for l in err.splitlines() if "s per frame" in l]
    assert "for the other 2 frames" in line


class RecordingClient:
    """Answers segment_train and segment like the engine would, and keeps what was asked."""

    def __init__(self, count):
        self.count, self.requests = count, []

    def request(self, request_type, params=None, arrays=None, on_progress=None, **_):
        self.requests.append((request_type, dict(params or {})))
        if request_type == "segment_train":
            return {"count": self.count, "iterations": 10, "seconds": 1.0, "cached": "x"}, {}
        n = len(arrays["indices"])
        mask = np.zeros(n, bool)
        mask[: n // 3] = True
        return {"count": int(mask.sum()), "method": params["method"], "models": {"used": [], "missing": {}}}, \
            {"mask": mask, "scores": mask.astype(np.float32)}


def test_train_features_then_select_with_them(clean_scene, capfd, primitives_ply, tmp_path, monkeypatch):
    scene = bpy.context.scene
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam.location, cam.rotation_euler = (0.0, -8.0, 3.0), (1.2, 0.0, 0.0)
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    blend = tmp_path / "cam.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    client = RecordingClient(0)
    monkeypatch.setattr(engine_client, "get_client", lambda: client)
    status, err, _ = _run(capfd, "--blend", blend, "--ply", primitives_ply, "--select-point", 32, 24,
                          "--train-features", "--sam-model", "vit_b", "--require-sam")
    assert status == 0, err
    (kind_1, train), (kind_2, segment) = client.requests
    assert kind_1 == "segment_train" and train["sam_variant"] == "vit_b"
    # what EngineClient.submit adds to every request of this run
    assert notices.with_required(train)["require"] == ["region_growing"]
    assert kind_2 == "segment" and segment["method"] == "saga" and segment["sam_variant"] == "vit_b"
