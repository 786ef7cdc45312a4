"""Render Splats of a dynamic (4D) object: the engine shows each frame's timestep of the .npz, so two frames differ
where the object moved and each matches a render of DynamicGaussians.frame(t) made directly; the add-on sends
the sequence and the timestep per frame."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")   # the render job runs in this process

from engine.cameras import intrinsics_from_fov, look_at  # noqa: E402
from engine.dynamic import make_moving_sequence, write_dynamic  # noqa: E402
from engine.ply import gaussians_to_structured, write_ply  # noqa: E402
from engine.render.job import RenderRequestError, handle_render  # noqa: E402
from tests.motion_fixtures import QuietContext

W, H = 64, 48
AXIS_CONVERSION = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], np.float32)


def _request(out_dir, objects, frames, **arrays):
    viewmat = look_at(np.array([0.0, -5.0, 2.5]), np.array([0.0, 0.0, 0.3]), up=(0.0, 0.0, 1.0))
    F = len(frames)
    params = {"width": W, "height": H, "out_dir": str(out_dir), "fps": 12, "frames": frames, "near": 0.05,
              "far": 100.0, "device": "cpu", "background": [0.0, 0.0, 0.0], "write_video": False, "objects": objects}
    base = {"viewmats": np.repeat(viewmat[None], F, 0).astype(np.float32),
            "Ks": np.repeat(intrinsics_from_fov(W, H, 55.0)[None], F, 0).astype(np.float32),
            "object_matrices": np.repeat(AXIS_CONVERSION[None, None], F, 0)}
    base.update(arrays)
    return params, base


def _images(result):
    return [np.asarray(Image.open(p), np.float32) for p in result["frames"]]


@pytest.fixture(scope="module")
def dynamic_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dyn_render")
    seq = make_moving_sequence(150, timesteps=8, move_start=2, move_end=6, distance=1.0)
    npz = write_dynamic(folder / "params.npz", seq)
    plys = [folder / f"t{t}.ply" for t in range(seq.timesteps)]
    for t, path in enumerate(plys):
        write_ply(path, gaussians_to_structured(seq.frame(t)))
    return seq, npz, plys


def test_dynamic_object_renders_each_frames_timestep(tmp_path, dynamic_files):
    seq, npz, plys = dynamic_files
    obj = {"name": "dyn", "ply_path": str(plys[0]), "npz_path": str(npz)}
    result, _ = handle_render(QuietContext(), *_request(tmp_path / "dyn", [obj], [1, 2], timesteps_0=np.array([0, 7])))
    first, last = _images(result)
    assert (np.abs(first - last).sum(-1) > 20).sum() > 10          # the sphere rolled away
    for t, image in ((0, first), (7, last)):
        plain = [{"name": "f", "ply_path": str(plys[t])}]
        direct, _ = handle_render(QuietContext(), *_request(tmp_path / f"direct{t}", plain, [1]))
        np.testing.assert_allclose(image, _images(direct)[0], atol=1.0)


def test_dynamic_subset_and_bad_timesteps(tmp_path, dynamic_files):
    seq, npz, plys = dynamic_files
    rows = np.flatnonzero(seq.labels == 1)                 # a segment holding the rolling sphere
    obj = {"name": "seg", "ply_path": str(plys[0]), "npz_path": str(npz)}
    result, _ = handle_render(QuietContext(), *_request(tmp_path / "seg", [obj], [1], timesteps_0=np.array([7]),
                                               indices_0=rows))
    g = seq.frame(7)
    only = type(g)(**{k: getattr(g, k)[rows] for k in ("means", "sh_dc", "sh_rest", "opacity_logit", "log_scales",
                                                        "quats_wxyz")})
    write_ply(tmp_path / "sphere7.ply", gaussians_to_structured(only))
    alone = [{"name": "s", "ply_path": str(tmp_path / "sphere7.ply")}]
    direct, _ = handle_render(QuietContext(), *_request(tmp_path / "direct", alone, [1]))
    seg_img = _images(result)[0]
    assert (seg_img.sum(-1) > 30).sum() > 20
    np.testing.assert_allclose(seg_img, _images(direct)[0], atol=1.0)   # the sphere alone, where it rolled to
    with pytest.raises(RenderRequestError, match="timesteps outside"):
        handle_render(QuietContext(), *_request(tmp_path / "bad", [obj], [1], timesteps_0=np.array([8])))


@pytest.mark.blender
def test_render_request_of_a_dynamic_object(tmp_path, monkeypatch, dynamic_files):
    bpy = pytest.importorskip("bpy")
    from blender_fixtures import addon  # noqa: F401
    import blender_addon
    from blender_addon.io.dynamic_import import import_dynamic
    from blender_addon.render.render_request import build_render_request

    if not blender_addon.is_registered():
        blender_addon.register()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    seq, npz, _ = dynamic_files
    scene.frame_start = 10
    import_dynamic(npz)
    scene.frame_end = 20                                   # past the sequence: held at its last timestep
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    params, arrays = build_render_request(scene, tmp_path / "out", (W, H), "cpu")
    assert params["objects"][0]["npz_path"] == str(npz.resolve())
    np.testing.assert_array_equal(arrays["timesteps_0"], np.minimum(np.arange(11), 7))
    assert "highlight_color" not in params and "highlight_start_0" not in arrays
    from blender_addon.io.dynamic_import import set_query_highlight
    obj = bpy.data.objects[params["objects"][0]["name"]]
    n = len(obj.data.vertices)
    set_query_highlight(obj, np.full(n, 12, np.int32), np.full(n, 14, np.int32), np.ones(n, np.float32))
    params, arrays = build_render_request(scene, tmp_path / "out", (W, H), "cpu", tint_query=True)
    assert params["highlight_color"]
    assert (arrays["highlight_start_0"] == 12).all() and (arrays["highlight_end_0"] == 14).all()


def test_query_tint_shows_only_on_the_answers_frames(tmp_path, dynamic_files):
    seq, npz, plys = dynamic_files
    obj = {"name": "dyn", "ply_path": str(plys[0]), "npz_path": str(npz)}
    n = seq.count
    start, end = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    sphere = seq.labels == 1
    start[sphere], end[sphere] = 2, 2                       # the answer: the sphere, on scene frame 2 only
    steps = np.array([3, 3, 3])
    plain, _ = handle_render(QuietContext(), *_request(tmp_path / "plain", [obj], [1, 2, 3], timesteps_0=steps))
    params, arrays = _request(tmp_path / "tint", [obj], [1, 2, 3], timesteps_0=steps, highlight_start_0=start,
                              highlight_end_0=end)
    params.update(highlight_color=[0.0, 0.0, 1.0], highlight_strength=1.0)
    tint, _ = handle_render(QuietContext(), params, arrays)
    (p1, p2, p3), (t1, t2, t3) = _images(plain), _images(tint)
    np.testing.assert_array_equal(t1, p1)
    np.testing.assert_array_equal(t3, p3)
    changed = np.abs(t2 - p2).sum(-1) > 30
    assert changed.sum() > 10 and (t2[changed][:, 2] > p2[changed][:, 2]).all()   # bluer where the sphere is
