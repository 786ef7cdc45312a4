"""The engine started by a splat import in the UI: the import sends a "preload" (engine warm, scene read and on
the device), the panel's line follows it, a later request reuses that engine and finds the scene loaded, and
unregistering the add-on leaves no engine process behind. Background runs (batch, scripts) start nothing."""

from __future__ import annotations

import os
import time

import pytest
from engine_python import ENGINE_PYTHON

bpy = pytest.importorskip("bpy")

from blender_fixtures import addon, clean_scene  # noqa: E402,F401

from blender_addon.engine_link import engine_client, engine_preload  # noqa: E402
from blender_addon.engine_link.engine_process import EngineEvent  # noqa: E402
from blender_addon.render import render_request  # noqa: E402
from engine.errors import InputFileError  # noqa: E402
from engine.synthetic_scene import make_primitives_scene  # noqa: E402

pytestmark = pytest.mark.blender
TIMEOUT = 120


@pytest.fixture(scope="module")
def small_ply(tmp_path_factory):
    path = tmp_path_factory.mktemp("preload") / "small.ply"
    return make_primitives_scene(gaussians_per_object=200, sh_degree=1, seed=5).write(path)


@pytest.fixture
def ui_session(monkeypatch):
    """Imports behave as in Blender's UI (the bpy module runs in background mode)."""
    monkeypatch.setattr(engine_preload, "interactive", lambda: True)
    yield
    engine_preload.unregister()


def _follow(timeout: float = TIMEOUT) -> engine_preload.PreloadState:
    """Run the panel's timer as Blender would until the preload ends."""
    deadline = time.monotonic() + timeout
    while engine_preload.poll() is not None:
        assert time.monotonic() < deadline, "the preload did not end"
        time.sleep(0.05)
    return engine_preload.state()


def _scene_with_camera():
    scene = bpy.context.scene
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    cam.location = (0.0, -4.0, 1.5)
    cam.rotation_euler = (1.2, 0.0, 0.0)
    scene.camera = cam
    scene.frame_start = scene.frame_end = 1
    return scene


def test_import_starts_the_engine_and_a_later_render_finds_the_scene_loaded(clean_scene, small_ply, ui_session,
                                                                           monkeypatch, tmp_path):
    client = engine_client.EngineClient(python=ENGINE_PYTHON)
    monkeypatch.setattr(engine_client, "get_client", lambda: client)
    try:
        assert not client.running
        assert bpy.ops.gaussians.import_ply(filepath=str(small_ply)) == {"FINISHED"}
        state = engine_preload.state()
        assert client.running and state.request_id is not None     # started by the import, not waited for
        assert state.phase in ("starting", "loading") and state.line()[1] == "SORTTIME"
        pid = client._proc.popen.pid
        state = _follow()
        assert state.phase == "ready", state.message
        assert state.line() == (f"Engine ready: {state.names} loaded", "CHECKMARK")
        assert _drawn() == [state.line()]
        params, arrays = render_request.build_render_request(_scene_with_camera(), tmp_path / "out", (32, 24))
        result, _ = client.request("render", params, arrays, timeout=TIMEOUT)
        assert result["preloaded"] is True                  # no read, no upload: the import's preload did both
        assert client._proc.popen.pid == pid                # the same engine
        assert len(result["frames"]) == 1 and os.path.getsize(result["frames"][0]) > 0
    finally:
        client.stop()


def test_a_render_without_a_preload_loads_the_scene_itself(clean_scene, small_ply, tmp_path):
    """The figure above can fail: a fresh engine's first render reports that it loaded the Gaussians."""
    bpy.ops.gaussians.import_ply(filepath=str(small_ply))
    assert engine_preload.state().phase == "idle"          # background mode: the import started nothing
    client = engine_client.EngineClient(python=ENGINE_PYTHON)
    try:
        params, arrays = render_request.build_render_request(_scene_with_camera(), tmp_path / "out", (32, 24))
        result, _ = client.request("render", params, arrays, timeout=TIMEOUT)
        assert result["preloaded"] is False
        result, _ = client.request("render", params, arrays, timeout=TIMEOUT)
        assert result["preloaded"] is True                  # the second request of the same objects
    finally:
        client.stop()


def test_preference_off_starts_nothing(clean_scene, small_ply, ui_session, monkeypatch):
    from blender_addon import preferences

    monkeypatch.setattr(preferences, "settings",
                        lambda context=None: preferences.Settings(start_engine_on_import=False))
    monkeypatch.setattr(engine_client, "get_client", lambda: pytest.fail("the engine was asked for"))
    assert bpy.ops.gaussians.import_ply(filepath=str(small_ply)) == {"FINISHED"}
    assert engine_preload.state().phase == "idle"


def test_unregister_leaves_no_engine_process(clean_scene, small_ply, ui_session, monkeypatch):
    import blender_addon

    monkeypatch.setenv("ANIMATE_GAUSSIANS_PYTHON", ENGINE_PYTHON)   # the shared client finds this engine
    engine_client.shutdown_client()
    bpy.ops.gaussians.import_ply(filepath=str(small_ply))
    client = engine_client.get_client()
    assert client.running and bpy.app.timers.is_registered(engine_preload.poll)
    popen = client._proc.popen
    blender_addon.unregister()        # while the preload may still run
    try:
        assert popen.poll() is not None                     # exited and reaped: no orphan
        assert not bpy.app.timers.is_registered(engine_preload.poll)
        assert engine_preload.state().phase == "idle"
    finally:
        blender_addon.register()


def _drawn() -> list[tuple[str, str]]:
    """The labels engine_preload.draw puts in a panel."""
    labels = []
    layout = type("Layout", (), {"label": lambda self, text, icon: labels.append((text, icon))})()
    engine_preload.draw(layout)
    return labels


def test_the_line_is_about_the_open_file(clean_scene, monkeypatch):
    monkeypatch.setattr(engine_preload, "_state", engine_preload.PreloadState(objects=("elsewhere",), phase="ready"))
    assert _drawn() == []                                   # another file's objects: nothing to say here
    bpy.data.objects.new("elsewhere", None)
    assert _drawn() == [("Engine ready: elsewhere loaded", "CHECKMARK")]


def test_panel_line_follows_the_preload_and_names_a_failure():
    state = engine_preload.PreloadState(objects=("scene",), phase="starting")
    assert state.line() == ("Engine: starting…", "SORTTIME")
    assert state.advance(True, []) and state.phase == "loading"
    assert state.advance(False, [EngineEvent("progress", 1, 0.5, "loading torch")])
    assert state.line() == ("Engine: loading torch (scene)…", "SORTTIME") and not state.finished
    assert not state.advance(True, [])                     # nothing new: no redraw
    failed = engine_preload.PreloadState(objects=("scene",), phase="loading")
    failed.advance(True, [EngineEvent("error", 1, error=InputFileError("the file is gone"))])
    assert failed.finished and failed.phase == "failed"
    assert "the file is gone" in failed.line()[0] and failed.line()[1] == "ERROR"
