"""Render Splats with the bpy module: the request Blender builds (animated camera and objects, per frame) and a
real render through the engine process (CPU) to PNGs and an MP4."""

from __future__ import annotations

import time

import numpy as np
import pytest
from engine_python import ENGINE_PYTHON

bpy = pytest.importorskip("bpy")

from blender_addon.engine_link import engine_client  # noqa: E402
from blender_addon.engine_link.modal_engine import RequestProgress  # noqa: E402
from blender_addon.render import render_request, render_splats  # noqa: E402
from blender_addon.render.camera_data import camera_from_blender  # noqa: E402
from blender_addon.io.gaussian_layout import AXIS_CONVERSION, SOURCE_KEY  # noqa: E402
from blender_addon.io.gaussian_object import import_ply  # noqa: E402
from engine.errors import AnimateGaussiansError, CameraError  # noqa: E402
from engine.synthetic_scene import make_primitives_scene  # noqa: E402

pytestmark = pytest.mark.blender
SIZE = (48, 32)


@pytest.fixture(scope="module")
def small_ply(tmp_path_factory):
    path = tmp_path_factory.mktemp("render_splats") / "small.ply"
    return make_primitives_scene(gaussians_per_object=250, sh_degree=1, seed=3).write(path)


@pytest.fixture
def animated_scene(small_ply):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    obj = import_ply(small_ply, bpy.context)
    cam_data = bpy.data.cameras.new("cam")
    camera = bpy.data.objects.new("cam", cam_data)
    scene.collection.objects.link(camera)
    camera.location = (0.0, -7.0, 3.0)
    camera.rotation_euler = (np.radians(68.0), 0.0, 0.0)
    scene.camera = camera
    scene.frame_start, scene.frame_end = 1, 3
    scene.render.resolution_x, scene.render.resolution_y = 96, 64
    scene.render.resolution_percentage = 50
    # keyframes: the object slides +x, the camera dollies in
    for frame, x in ((1, 0.0), (3, 1.5)):
        obj.location = (x, 0.0, 0.0)
        obj.keyframe_insert("location", frame=frame)
    for frame, y in ((1, -7.0), (3, -6.0)):
        camera.location = (0.0, y, 3.0)
        camera.keyframe_insert("location", frame=frame)
    for fcurve in (obj.animation_data.action.fcurves if hasattr(obj.animation_data.action, "fcurves") else []):
        for point in fcurve.keyframe_points:
            point.interpolation = "LINEAR"
    scene.frame_set(2)
    return scene, obj, camera


@pytest.fixture(scope="module")
def client():
    c = engine_client.EngineClient(python=ENGINE_PYTHON)
    yield c
    c.stop()


def test_request_holds_every_frames_evaluated_camera_and_object(animated_scene):
    scene, obj, camera = animated_scene
    params, arrays = render_request.build_render_request(scene, "/tmp/out", None, "cpu")
    assert params["frames"] == [1, 2, 3] and (params["width"], params["height"]) == (48, 32)
    assert params["objects"] == [{"name": obj.name, "ply_path": obj[SOURCE_KEY]}]
    assert arrays["viewmats"].shape == (3, 4, 4) and arrays["object_matrices"].shape == (3, 1, 4, 4)
    assert {arrays[k].dtype for k in ("viewmats", "Ks", "object_matrices")} == {np.dtype(np.float32)}
    np.testing.assert_array_equal(arrays["indices_0"], np.arange(len(obj.data.vertices)))  # the whole file
    np.testing.assert_allclose(arrays["object_matrices"][0, 0][:3, :3], AXIS_CONVERSION[:3, :3], atol=1e-6)
    np.testing.assert_allclose(arrays["object_matrices"][:, 0, 0, 3], [0.0, 0.75, 1.5], atol=1e-5)
    scene.frame_set(3)
    viewmat, K, _, _ = camera_from_blender(scene, camera, 48, 32)
    np.testing.assert_allclose(arrays["viewmats"][2], viewmat, atol=1e-5)
    np.testing.assert_allclose(arrays["Ks"][2], K, atol=1e-4)
    assert not np.allclose(arrays["viewmats"][0], arrays["viewmats"][2])  # the dolly is in the request
    assert scene.frame_current == 3


def test_the_current_frame_is_restored(animated_scene):
    scene, _, _ = animated_scene
    render_request.build_render_request(scene, "/tmp/out", SIZE, "cpu")
    assert scene.frame_current == 2


def test_errors_before_anything_is_sent(animated_scene, tmp_path):
    scene, obj, camera = animated_scene
    scene.camera = None
    with pytest.raises(CameraError):
        render_request.build_render_request(scene, tmp_path, SIZE)
    scene.camera = camera
    obj[SOURCE_KEY] = str(tmp_path / "gone.ply")
    with pytest.raises(AnimateGaussiansError, match="missing"):
        render_request.build_render_request(scene, tmp_path, SIZE)
    obj.hide_render = True
    with pytest.raises(AnimateGaussiansError, match="no Gaussian objects"):
        render_request.build_render_request(scene, tmp_path, SIZE)


def test_render_blocking_writes_frames_and_video(animated_scene, tmp_path, client):
    from PIL import Image

    scene, _, _ = animated_scene
    lines = []
    files = render_splats.render_splats_blocking(scene, tmp_path / "out", SIZE, "cpu", report=lines.append,
                                                 client=client)
    pngs = [f for f in files if f.endswith(".png")]
    assert [p.rsplit("/", 1)[1] for p in pngs] == ["frame_0001.png", "frame_0002.png", "frame_0003.png"]
    images = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in pngs]
    assert images[0].shape == (32, 48, 3)
    assert all(img.std() > 5 for img in images)  # the primitives are in view, not a flat background
    assert np.abs(images[0] - images[2]).mean() > 2  # the object and the camera moved
    assert any("frame 3" in line for line in lines)
    if files[-1].endswith(".mp4"):
        assert (tmp_path / "out" / "render.mp4").stat().st_size > 0


def test_render_blocking_can_write_the_video_only(animated_scene, tmp_path, client):
    # The engine's environment has an MP4 encoder (requirements.txt: imageio-ffmpeg, OpenCV).
    scene, _, _ = animated_scene
    files = render_splats.render_splats_blocking(scene, tmp_path / "out", SIZE, "cpu", client=client,
                                                 frame_format="none")
    assert [f.rsplit("/", 1)[1] for f in files] == ["render.mp4"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["render.mp4"]


def test_operator_execute_renders_and_reports(animated_scene, tmp_path, monkeypatch, client):
    monkeypatch.setattr(engine_client, "get_client", lambda: client)  # reuse the warm engine (test_engine_client
    scene, obj, _ = animated_scene                                     # covers the shared client itself)
    cls = render_splats.GAUSSIANS_OT_render_splats
    registered_here = not cls.is_registered   # the add-on (registered by other tests) may hold it already
    if registered_here:
        bpy.utils.register_class(cls)
    try:
        result = bpy.ops.gaussians.render_splats(directory=str(tmp_path), write_video=False)
        assert result == {"FINISHED"}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["frame_0001.png", "frame_0002.png", "frame_0003.png"]
        obj.hide_render = True
        assert not bpy.ops.gaussians.render_splats.poll()  # nothing to render
    finally:
        if registered_here:
            bpy.utils.unregister_class(cls)


def test_cancelled_render_keeps_written_frames_and_reports_a_warning(animated_scene, tmp_path, client):
    scene, _, _ = animated_scene
    scene.frame_end = 200
    params, arrays = render_request.build_render_request(scene, tmp_path, SIZE, "cpu", write_video=True)
    request_id = client.submit("render", params, arrays)
    state = RequestProgress("Render Splats")
    deadline = time.monotonic() + 60
    cancelled = False
    while not state.done and time.monotonic() < deadline:
        state.apply(client.poll(request_id))
        if not cancelled and state.fraction >= 2 / 200:
            client.cancel(request_id)
            cancelled = True
        time.sleep(0.01)
    assert state.done and state.failure(render_splats.CANCELLED_MESSAGE) == ("WARNING", render_splats.CANCELLED_MESSAGE)
    assert "cancelled" in render_splats.CANCELLED_MESSAGE
    written = sorted(p.name for p in tmp_path.glob("frame_*.png"))
    assert 2 <= len(written) < 200 and written[0] == "frame_0001.png"
    assert not (tmp_path / "render.mp4").exists()  # an unfinished video is not left looking finished


def test_render_progress_reports_results_and_errors():
    from blender_addon.engine_link.engine_client import EngineEvent
    from engine.errors import EngineError as Err

    state = RequestProgress("Render Splats").apply(
        [EngineEvent("progress", 1, fraction=0.5, stage="frame 2 (2 of 4)")])
    assert not state.done and state.status == "Render Splats: 50% frame 2 (2 of 4) — Esc cancels"
    state.apply([EngineEvent("result", 1, params={"frames": ["a", "b"], "video": "/out/render.mp4"})])
    assert state.done and state.failure() is None
    assert render_splats.rendered_message(state.params, "/out") == "Rendered 2 frames and render.mp4 to /out"
    assert render_splats.rendered_message({"frames": [], "video": "/out/render.mp4"}, "/out") == \
        "Rendered render.mp4 to /out"
    state = RequestProgress("Render Splats").apply(
        [EngineEvent("error", 1, error=Err("the engine stopped: it exited with code 3"))])
    kind, message = state.failure()
    assert kind == "ERROR" and "exited with code 3" in message
