"""The batch CLI: steps, report, refusals of later options, and one-line errors that write no .blend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bad_ply_files import BAD_CASES, make_bad_file
from blender_fixtures import addon, bpy, clean_scene, datablock_snapshot  # noqa: F401 (fixtures)

from blender_addon import batch
from engine.ply import read_header, read_structured

pytestmark = pytest.mark.blender

ROOT = Path(__file__).resolve().parents[1]
BATCH = ROOT / "blender_addon" / "batch.py"


def _run(capsys, *argv):
    status = batch.run([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return status, err


def test_import_export_save_report(clean_scene, capsys, primitives_ply, primitives_scene, tmp_path):
    out, blend, report = tmp_path / "out.ply", tmp_path / "scene.blend", tmp_path / "report.json"
    status, err = _run(capsys, "--ply", primitives_ply, "--export-ply", out, "--save", blend, "--report", report)
    assert status == 0, err
    data = json.loads(report.read_text())
    assert data["ok"] is True and data["errors"] == []
    count = primitives_scene.gaussians.count
    assert data["objects"] == [{"name": "primitives", "gaussians": count, "sh_degree": 3, "keyframes": 0,
                                "frame_range": None}]
    assert [s["name"] for s in data["steps"]] == ["import_ply", "export_ply", "save"]
    assert all(s["seconds"] >= 0 for s in data["steps"])
    assert data["files"] == [str(out.resolve()), str(blend.resolve())]
    assert read_structured(read_header(out)).tobytes() == read_structured(read_header(primitives_ply)).tobytes()
    assert blend.stat().st_size > 0


def test_blend_then_export(clean_scene, capsys, primitives_ply, tmp_path):
    blend = tmp_path / "scene.blend"
    assert _run(capsys, "--ply", primitives_ply, "--save", blend)[0] == 0
    bpy.ops.wm.read_factory_settings(use_empty=True)
    out = tmp_path / "again.ply"
    status, err = _run(capsys, "--blend", blend, "--export-ply", out)
    assert status == 0, err
    assert read_structured(read_header(out)).tobytes() == read_structured(read_header(primitives_ply)).tobytes()


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_fails_with_one_line_and_no_blend(clean_scene, capsys, tmp_path, case):
    path = make_bad_file(case, tmp_path)
    blend, report = tmp_path / "scene.blend", tmp_path / "report.json"
    status, err = _run(capsys, "--ply", path, "--save", blend, "--report", report)
    assert status != 0
    assert len(err.splitlines()) == 1 and err.startswith("batch.py: error:")
    import re
    assert re.search(BAD_CASES[case][2], err)
    assert not blend.exists()
    if case != "nonexistent":   # a missing input is refused before anything runs, report included
        data = json.loads(report.read_text())
        assert data["ok"] is False and re.search(BAD_CASES[case][2], data["errors"][0])


def test_later_options_are_refused_before_anything_runs(clean_scene, capsys, primitives_ply, tmp_path, monkeypatch):
    # Every step is available now: make one a "later" step to check the refusal still happens before anything.
    steps = [batch.Step(s.name, s.wanted, None, s.options) if s.name == "query" else s for s in batch.STEPS]
    monkeypatch.setattr(batch, "STEPS", steps)
    argv = ["--query", "a ball"]
    blend, report = tmp_path / "scene.blend", tmp_path / "report.json"
    before = datablock_snapshot()
    status, err = _run(capsys, "--ply", primitives_ply, *argv, "--save", blend, "--report", report)
    assert status != 0
    assert "not available yet" in err and len(err.splitlines()) == 1
    assert datablock_snapshot() == before and not blend.exists()
    # the report still says why nothing ran
    data = json.loads(report.read_text())
    assert data["ok"] is False and "not available yet" in data["errors"][0] and data["steps"] == []


@pytest.mark.parametrize("option,needs", [(["--fps", "24"], "--animate"), (["--segment-name", "ball"], "--select"),
                                          (["--resolution", "64", "48"], "--render"),
                                          (["--generator", "preset"], "--animate"), (["--device", "cpu"], "--render")])
def test_qualifying_option_without_its_step_is_refused(clean_scene, capsys, primitives_ply, option, needs):
    status, err = _run(capsys, "--ply", primitives_ply, *option)
    assert status != 0 and needs in err and len(err.splitlines()) == 1
    assert len(bpy.data.objects) == 0


def test_bad_command_line_is_one_line(clean_scene, capsys):
    status, err = _run(capsys, "--bogus")
    assert status == 2 and err == "batch.py: error: unrecognized arguments: --bogus (run with --help for the options)"
    status, err = _run(capsys)
    assert status == 2 and "nothing to do" in err


def test_arguments_after_double_dash():
    argv = ["blender", "-b", "scene.blend", "-P", "blender_addon/batch.py", "--", "--ply", "a.ply"]
    assert batch.script_arguments(argv) == ["--ply", "a.ply"]
    assert batch.script_arguments(["batch.py", "--ply", "a.ply"]) == ["--ply", "a.ply"]


def test_runs_as_a_script_file(primitives_ply, primitives_scene, tmp_path):
    report = tmp_path / "report.json"
    ok = subprocess.run([sys.executable, str(BATCH), "--ply", str(primitives_ply), "--report", str(report)],
                        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(report.read_text())["objects"][0]["gaussians"] == primitives_scene.gaussians.count
    bad = subprocess.run([sys.executable, str(BATCH), "--", "--ply", str(tmp_path / "missing.ply"), "--save",
                          str(tmp_path / "x.blend")], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == [f"batch.py: error: --ply: {tmp_path / 'missing.ply'} does not exist "
                                               "(check the path)"]
    assert not (tmp_path / "x.blend").exists()


def test_render_without_a_camera_is_one_line_and_writes_nothing(clean_scene, capsys, primitives_ply, tmp_path):
    status, err = _run(capsys, "--ply", primitives_ply, "--render", tmp_path / "frames", "--resolution", "32", "24",
                       "--device", "cpu", "--save", tmp_path / "scene.blend")
    assert status != 0 and len(err.splitlines()) == 1 and "camera" in err
    assert not (tmp_path / "scene.blend").exists() and not list((tmp_path).glob("frames/*.png"))


def test_blend_with_keyframes_renders_frames_and_video(clean_scene, capsys, primitives_ply, tmp_path):
    """The batch --render step: a saved .blend with a camera and a keyframed Gaussian object renders through
    the engine (CPU) to one PNG per frame and render.mp4, listed in the report; the object's motion shows."""
    from blender_addon.io.gaussian_object import import_ply
    from PIL import Image

    obj = import_ply(primitives_ply, bpy.context)
    scene = bpy.context.scene
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam.location, cam.rotation_euler = (0.0, -8.0, 3.0), (1.2, 0.0, 0.0)
    scene.frame_start, scene.frame_end = 1, 2
    obj.location = (0.0, 0.0, 0.0)
    obj.keyframe_insert("location", frame=1)
    obj.location = (1.0, 0.0, 0.0)
    obj.keyframe_insert("location", frame=2)
    blend = tmp_path / "anim.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_factory_settings(use_empty=True)

    out, report = tmp_path / "frames", tmp_path / "report.json"
    status, err = _run(capsys, "--blend", blend, "--render", out, "--resolution", "64", "40", "--device", "cpu",
                       "--report", report)
    assert status == 0, err
    data = json.loads(report.read_text())
    pngs = sorted(f for f in data["files"] if f.endswith(".png"))
    assert len(pngs) == 2 and any(f.endswith("render.mp4") for f in data["files"])
    assert (out / "render.mp4").stat().st_size > 0
    first, second = (np.asarray(Image.open(p).convert("RGB"), np.float32) for p in pngs)
    assert first.shape == (40, 64, 3)
    assert np.abs(first - second).mean() > 1.0      # the object moved between the two frames
    assert any(step["name"] == "render" for step in data["steps"])
    # The engine said what it rendered with (its hello): here the torch rasterizer on the CPU, by request.
    from engine.backend_probe import RASTERIZERS
    assert data["engine_backend"]["rasterizer"] in RASTERIZERS and data["engine_backend"]["device"]
