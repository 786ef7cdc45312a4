"""Every engine capability is reachable from the batch command line: generator model/steps/seed/offload,
depth model, motion kind and handles, SAM model, feature training and the --require-* options; they reach the
engine's request, and the real diffusers path picks the named profile with the asked steps."""

from __future__ import annotations

import json

import pytest
from blender_fixtures import addon, bpy, clean_scene  # noqa: F401 (fixtures)
from motion_fakes import fake_engine_python
from tiny_diffusers_engine import tiny_diffusers_engine_python

from blender_addon import batch, notices
from blender_addon.cli import batch_args
from blender_addon.engine_link import engine_client
from engine import fallbacks
from test_batch_animate import camera_blend, small_ply  # noqa: F401 (fixtures)

pytestmark = pytest.mark.blender

NEW_OPTIONS = ("--model", "--steps", "--seed", "--offload", "--depth-model", "--require-depth", "--motion",
               "--handles", "--lift-effort", "--smoothness", "--sam-model", "--train-features", "--render-frames",
               "--no-video")


@pytest.fixture(autouse=True)
def _fresh_notices():
    notices.clear()
    yield
    notices.require([])
    notices.clear()


def _run(capsys, *argv):
    status = batch.run([str(a) for a in argv])
    return status, capsys.readouterr().err.strip()


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        batch_args.build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for option in NEW_OPTIONS + tuple(fallbacks.CODES.values()):
        assert option in text, option


def test_model_names_resolve_and_unknown_ones_list_the_profiles():
    from engine.motion.model_profiles import resolve_model_id

    assert resolve_model_id("ltx") == "ltx-video-0.9.5"
    assert resolve_model_id("CogVideoX") == "cogvideox-5b-i2v"
    with pytest.raises(batch_args.BatchError, match="ambiguous") as info:
        resolve_model_id("wan", error=batch_args.BatchError)
    assert "wan2.1-i2v-14b-480p" in info.value.user_message()
    with pytest.raises(batch_args.BatchError, match="unknown video model"):
        resolve_model_id("sora", error=batch_args.BatchError)


@pytest.mark.parametrize("argv, message", [
    (["--animate", "x", "--model", "ltx"], "--model only applies to --generator diffusers"),
    (["--animate", "x", "--generator", "diffusers", "--steps", "0"], "--steps must be at least 1"),
    (["--animate", "x", "--motion", "rigid", "--handles", "4"], "--handles only applies"),
    (["--animate", "x", "--generator", "diffusers", "--model", "sora"], "unknown video model"),
    (["--ply", "x.ply", "--sam-model", "vit_b"], "--sam-model only applies to --select"),
    (["--ply", "x.ply", "--no-video"], "--no-video only applies to --render"),
    (["--ply", "x.ply", "--render-frames", "none"], "--render-frames only applies to --render"),
    (["--render", "out", "--render-frames", "none", "--no-video"], "leaves --render nothing to write"),
    (["--animate", "x", "--smoothness", "-1"], "--smoothness: lifting smoothness must be within 0-100"),
    (["--ply", "x.ply", "--lift-effort", "fast"], "--lift-effort only applies to --animate"),
])
def test_bad_option_combinations_are_one_line(capsys, argv, message):
    status, err = _run(capsys, *argv)
    assert status == 2 and message in err and len(err.splitlines()) == 1


def test_motion_options_reach_the_animate_request(camera_blend, small_ply, monkeypatch, capsys, tmp_path):
    client = engine_client.EngineClient(python=fake_engine_python(tmp_path))
    monkeypatch.setattr(engine_client, "get_client", lambda: client)
    report = tmp_path / "report.json"
    try:
        status, err = _run(capsys, "--blend", camera_blend, "--ply", small_ply, "--animate", "it bends",
                           "--motion", "nonrigid", "--handles", 5, "--seed", 7, "--depth-model",
                           "depth-anything-v2-base", "--require-depth", "--require-sam", "--frames", 4,
                           "--lift-effort", "thorough", "--smoothness", 2.5, "--report", report)
    finally:
        client.stop()
    assert status == 0, err
    (animation,) = json.loads(report.read_text())["animations"]
    sent = animation["info"]["params"]
    assert sent["motion"] == "nonrigid" and sent["handles"] == 5
    assert sent["options"]["seed"] == 7 and sent["options"]["depth_model"] == "depth-anything-v2-base"
    assert sorted(sent["require"]) == ["no_depth", "region_growing"]
    assert sent["options"]["lifting"] == {"effort": "thorough", "smoothness": 2.5}
    assert animation["lifting"] == {"effort": "thorough", "smoothness": 2.5}
    assert animation["motion"] == "nonrigid" and animation["armature"]


@pytest.mark.slow
def test_diffusers_ltx_with_4_steps_reaches_the_ltx_profile(camera_blend, small_ply, monkeypatch, capsys,
                                                           tmp_path):
    pytest.importorskip("diffusers")
    monkeypatch.setenv("ANIMATE_GAUSSIANS_OFFLINE", "1")
    monkeypatch.setenv("ANIMATE_GAUSSIANS_MODELS", str(tmp_path / "no_models"))
    client = engine_client.EngineClient(python=tiny_diffusers_engine_python(tmp_path))
    monkeypatch.setattr(engine_client, "get_client", lambda: client)
    report = tmp_path / "report.json"
    try:
        status, err = _run(capsys, "--blend", camera_blend, "--ply", small_ply, "--animate", "the ball rolls",
                           "--generator", "diffusers", "--model", "ltx", "--steps", 4, "--motion", "rigid",
                           "--frames", 3, "--device", "cpu", "--report", report)
        assert status == 0, err
        data = json.loads(report.read_text())
        (animation,) = data["animations"]
        assert animation["info"]["model"] == "ltx-video-0.9.5"
        assert animation["info"]["steps"] == 4
        assert "step 4 of 4" in err
        # no depth model here: said in the report and on stderr, not silently skipped
        assert [w["code"] for w in data["warnings"]] == ["no_depth"]
        assert "batch.py: warning: no depth model" in err
        # --require-depth turns the same run into a one-line failure, listed in the report
        status, err = _run(capsys, "--blend", camera_blend, "--ply", small_ply, "--animate", "the ball rolls",
                           "--generator", "diffusers", "--model", "ltx", "--steps", 1, "--motion", "rigid",
                           "--frames", 3, "--device", "cpu", "--require-depth", "--report", report)
    finally:
        client.stop()
    assert status == 1 and err.splitlines()[-1].startswith("batch.py: error:") and "--require-depth" in err
    assert json.loads(report.read_text())["ok"] is False


@pytest.mark.parametrize("argv, frame_format, write_video", [
    ([], "png", True), (["--render-frames", "none"], "none", True), (["--no-video"], "png", False)])
def test_render_output_options_reach_the_render(camera_blend, monkeypatch, capsys, tmp_path, argv, frame_format,
                                                write_video):
    from blender_addon.render import render_splats

    asked = {}

    def fake_render(scene, out_dir, **kwargs):
        asked.update(kwargs)
        return []

    monkeypatch.setattr(render_splats, "render_splats_blocking", fake_render)
    status, err = _run(capsys, "--blend", camera_blend, "--render", tmp_path / "out", *argv)
    assert status == 0, err
    assert (asked["frame_format"], asked["write_video"]) == (frame_format, write_video)
