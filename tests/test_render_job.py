"""The "render" request handler: frames and video on disk, object motion (SH included), cancel, bad requests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cameras import intrinsics_from_fov, look_at
from engine.errors import CancelledError
from engine.render.job import RenderRequestError, handle_render
from engine.render.png import write_png
from engine.render.video import Mp4Writer, video_backend
from engine.synthetic_scene import make_primitives_scene

W, H = 64, 48
# Blender world from the file (COLMAP) frame: +90° about x, as the add-on's import sets it.
AXIS_CONVERSION = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


class Ctx:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.events: list[tuple[float, str]] = []
        self.cancel_after = cancel_after
        self.checks = 0

    def progress(self, fraction: float, stage: str) -> None:
        self.events.append((fraction, stage))

    def check_cancelled(self) -> None:
        self.checks += 1
        if self.cancel_after is not None and self.checks > self.cancel_after:
            raise CancelledError("cancelled by the test")


@pytest.fixture(scope="module")
def shiny_ply(tmp_path_factory):
    """The primitives with strong view-dependent colour, so a wrong SH rotation shows."""
    scene = make_primitives_scene(gaussians_per_object=400, sh_degree=3, seed=1)
    scene.gaussians.sh_rest *= 25.0
    return scene.write(tmp_path_factory.mktemp("job") / "shiny.ply")


def _camera(eye, target=(0.0, 0.0, 0.3)) -> np.ndarray:
    return look_at(np.array(eye, float), np.array(target, float), up=(0.0, 0.0, 1.0))


def _request(out_dir, ply_paths, viewmats, object_matrices, **overrides):
    F = len(viewmats)
    params = {"width": W, "height": H, "out_dir": str(out_dir), "fps": 12, "frames": list(range(1, F + 1)),
              "near": 0.05, "far": 100.0, "device": "cpu", "background": [0.0, 0.0, 0.0], "write_video": False,
              "objects": [{"name": f"obj{i}", "ply_path": str(p)} for i, p in enumerate(ply_paths)]}
    params.update(overrides)
    arrays = {"viewmats": np.asarray(viewmats, np.float32),
              "Ks": np.repeat(intrinsics_from_fov(W, H, 55.0)[None], F, 0).astype(np.float32),
              "object_matrices": np.asarray(object_matrices, np.float32)}
    return params, arrays


def _read(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float32)


def _video_frames(path) -> list[np.ndarray]:
    """Decoded RGB frames, with whichever decoder is installed (imageio-ffmpeg here, OpenCV on the GPU box)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        import cv2
        capture, frames = cv2.VideoCapture(str(path)), []
        while True:
            ok, frame = capture.read()
            if not ok:
                return frames
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    return [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]


def test_frames_and_video_are_written(shiny_ply, tmp_path):
    eyes = [(0.0, -4.5, 2.0), (1.0, -4.5, 2.0), (2.0, -4.0, 2.0)]
    params, arrays = _request(tmp_path, [shiny_ply], [_camera(e) for e in eyes],
                              np.repeat(AXIS_CONVERSION[None, None], 3, 0), write_video=video_backend() is not None,
                              frames=[7, 8, 9])
    ctx = Ctx()
    result, result_arrays = handle_render(ctx, params, arrays)
    assert [p.rsplit("/", 1)[1] for p in result["frames"]] == ["frame_0007.png", "frame_0008.png", "frame_0009.png"]
    images = [_read(p) for p in result["frames"]]
    assert images[0].shape == (H, W, 3)
    assert all(img.std() > 10 for img in images)
    assert np.abs(images[0] - images[2]).mean() > 3      # the camera moved
    assert ctx.events[-1][0] == 1.0 and "frame 9" in ctx.events[-1][1]
    if video_backend() is not None:
        assert result["video"].endswith("render.mp4")
        frames = _video_frames(result["video"])
        assert len(frames) == 3 and frames[0].shape == (H, W, 3)
        assert np.abs(frames[0].astype(np.float32) - images[0]).mean() < 8    # lossy, but the same picture
    assert not list(tmp_path.glob("*.partial*"))


def test_moving_the_object_equals_moving_the_camera_the_other_way(shiny_ply, tmp_path, monkeypatch):
    # Object matrix M with camera V renders what the unmoved object (axis conversion A) shows to the camera
    # V·M·A⁻¹: positions, orientations and view-dependent SH colour all travel with the object.
    motion = np.eye(4)
    c, s = np.cos(np.radians(50)), np.sin(np.radians(50))
    motion[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    motion[:3, 3] = [0.4, -0.2, 0.1]
    V = _camera((0.5, -4.5, 2.5))
    moved = motion @ AXIS_CONVERSION
    params, arrays = _request(tmp_path / "a", [shiny_ply], [V, V @ motion],
                              [[moved], [AXIS_CONVERSION]])
    a, b = (_read(p) for p in handle_render(Ctx(), params, arrays)[0]["frames"])
    assert a.std() > 10
    assert np.abs(a - b).max() <= 2.0            # equal up to float rounding in 8 bits
    unmoved = _read(handle_render(Ctx(), *_request(tmp_path / "c", [shiny_ply], [V], [[AXIS_CONVERSION]]))[0]
                    ["frames"][0])
    assert np.abs(a - unmoved).mean() > 3          # the motion is visible
    # A lone object's motion goes into the camera; beside a larger object (here a copy out of view, behind the
    # far plane) the smaller one is transformed instead, SH included: the same picture.
    out_of_view = _shift(0.0, 500.0, 0.0) @ AXIS_CONVERSION
    params_d, arrays_d = _request(tmp_path / "d", [shiny_ply, shiny_ply], [V, V],
                                  [[out_of_view, moved], [out_of_view, AXIS_CONVERSION]], far=50.0)
    transformed, _ = (_read(p) for p in handle_render(Ctx(), params_d, arrays_d)[0]["frames"])
    assert np.abs(a - transformed).max() <= 2.0
    # And the SH rotation matters here: moving positions and orientations but not the SH looks different.
    import cuda_ext
    real = cuda_ext.transform_gaussians_packed

    def without_sh_rotation(means, quats, log_scales, sh_rest, index, params):
        return (*real(means, quats, log_scales, sh_rest, index, params)[:3], sh_rest.clone())

    monkeypatch.setattr(cuda_ext, "transform_gaussians_packed", without_sh_rotation)
    params_b, arrays_b = _request(tmp_path / "b", [shiny_ply, shiny_ply], [V], [[out_of_view, moved]], far=50.0)
    wrong = _read(handle_render(Ctx(), params_b, arrays_b)[0]["frames"][0])
    assert np.abs(a - wrong).mean() > 3


def test_objects_render_together_and_move_independently(tmp_path):
    scene = make_primitives_scene(gaussians_per_object=300, sh_degree=1, seed=2)
    ply = scene.write(tmp_path / "one.ply")
    V = _camera((0.0, -5.0, 2.5))
    far_away = np.eye(4)
    far_away[:3, 3] = [0.0, 500.0, 0.0]                 # behind the far plane
    params, arrays = _request(tmp_path / "two", [ply, ply], [V, V],
                              [[AXIS_CONVERSION, far_away @ AXIS_CONVERSION],
                               [AXIS_CONVERSION, AXIS_CONVERSION @ _shift(0.0, -0.5, 0.0)]])
    params["far"] = 50.0
    only_first, both_near = (_read(p) for p in handle_render(Ctx(), params, arrays)[0]["frames"])
    single_params, single_arrays = _request(tmp_path / "one", [ply], [V], [[AXIS_CONVERSION]], far=50.0)
    alone = _read(handle_render(Ctx(), single_params, single_arrays)[0]["frames"][0])
    assert np.abs(only_first - alone).max() <= 1.0
    assert np.abs(both_near - alone).mean() > 2            # the second copy is now in view as well


def _shift(x, y, z) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = [x, y, z]
    return m


def test_cancel_keeps_frames_already_written_and_no_video(shiny_ply, tmp_path):
    V = _camera((0.0, -4.5, 2.0))
    params, arrays = _request(tmp_path, [shiny_ply], [V] * 4, np.repeat(AXIS_CONVERSION[None, None], 4, 0),
                              write_video=video_backend() is not None)
    with pytest.raises(CancelledError):
        handle_render(Ctx(cancel_after=2), params, arrays)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["frame_0001.png", "frame_0002.png"]
    assert not list(tmp_path.glob("*.mp4"))


def test_transparent_background_writes_straight_alpha(shiny_ply, tmp_path):
    params, arrays = _request(tmp_path, [shiny_ply], [_camera((0.0, -4.5, 2.0))], [[AXIS_CONVERSION]],
                              background=None)
    rgba = _read(handle_render(Ctx(), params, arrays)[0]["frames"][0])
    assert rgba.shape == (H, W, 4)
    assert rgba[..., 3].min() == 0 and rgba[..., 3].max() >= 250
    opaque_bg, _ = _request(tmp_path / "bg", [shiny_ply], [_camera((0.0, -4.5, 2.0))], [[AXIS_CONVERSION]],
                            background=[1.0, 1.0, 1.0])
    white = _read(handle_render(Ctx(), opaque_bg, arrays)[0]["frames"][0])
    # Compositing the straight-alpha PNG over white gives the white-background render.
    a = rgba[..., 3:] / 255
    over = rgba[..., :3] * a + 255 * (1 - a)
    assert np.abs(over - white).mean() < 1.5


def test_bad_requests_fail_with_clear_errors(shiny_ply, tmp_path):
    V = _camera((0.0, -4.5, 2.0))
    params, arrays = _request(tmp_path, [shiny_ply], [V, V], np.repeat(AXIS_CONVERSION[None, None], 2, 0))
    with pytest.raises(RenderRequestError, match="viewmats"):
        handle_render(Ctx(), params, {**arrays, "viewmats": arrays["viewmats"][:1]})
    with pytest.raises(RenderRequestError, match="object_matrices"):
        handle_render(Ctx(), params, {k: v for k, v in arrays.items() if k != "object_matrices"})
    with pytest.raises(RenderRequestError, match="no Gaussian objects"):
        handle_render(Ctx(), {**params, "objects": []}, arrays)
    with pytest.raises(Exception, match="missing"):
        handle_render(Ctx(), {**params, "objects": [{"name": "x", "ply_path": str(tmp_path / "gone.ply")}]}, arrays)
    with pytest.raises(RenderRequestError, match="frame_format must be one of png, none"):
        handle_render(Ctx(), {**params, "frame_format": "tiff"}, arrays)
    with pytest.raises(RenderRequestError, match="png_encoder must be one of auto, pillow"):
        handle_render(Ctx(), {**params, "png_encoder": "gif"}, arrays)
    with pytest.raises(RenderRequestError, match="writes nothing"):
        handle_render(Ctx(), {**params, "frame_format": "none", "write_video": False}, arrays)
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="CUDA"):
            handle_render(Ctx(), {**params, "device": "cuda"}, arrays)


def test_the_video_alone(shiny_ply, tmp_path):
    if video_backend() is None:
        pytest.skip("no MP4 encoder in this environment")
    V = _camera((0.0, -4.5, 2.0))
    params, arrays = _request(tmp_path, [shiny_ply], [V, V], np.repeat(AXIS_CONVERSION[None, None], 2, 0),
                              frame_format="none", write_video=True)
    result, _ = handle_render(Ctx(), params, arrays)
    assert result["frames"] == [] and result["video"].endswith("render.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["render.mp4"]
    assert len(_video_frames(result["video"])) == 2


def test_png_and_mp4_writers(tmp_path):
    img = np.linspace(0, 1, 5 * 7 * 3).reshape(5, 7, 3)
    path = write_png(tmp_path / "a.png", img)
    back = np.asarray(Image.open(path))
    assert back.shape == (5, 7, 3) and back[-1, -1, -1] == 255 and back[0, 0, 0] == 0
    if video_backend() is None:
        pytest.skip("no MP4 encoder in this environment")
    with Mp4Writer(tmp_path / "v.mp4", 7, 5, fps=10) as writer:   # odd size: padded to 8×6
        for i in range(4):
            writer.write(np.full((5, 7, 3), i * 60, np.uint8))
    frames = _video_frames(tmp_path / "v.mp4")
    assert len(frames) == 4 and frames[0].shape == (6, 8, 3)
    assert abs(float(frames[3].mean()) - 180) < 4
    with Mp4Writer(tmp_path / "w.mp4", 7, 5) as writer, pytest.raises(ValueError, match="frame is 4×4"):
        writer.write(np.zeros((4, 4, 3), np.uint8))


def test_the_job_gives_x264_half_the_cores_beside_pngs_and_all_for_the_video_alone(shiny_ply, tmp_path,
                                                                                   monkeypatch):
    # With PNGs written too, x264 at its default (all cores) starves the threads that feed the GPU.
    if video_backend() != "imageio-ffmpeg":
        pytest.skip("the thread count is an ffmpeg option")
    import imageio_ffmpeg

    seen = []
    real = imageio_ffmpeg.write_frames

    def spy(*args, **kwargs):
        seen.append(kwargs["output_params"])
        return real(*args, **kwargs)

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", spy)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    V = _camera((0.0, -4.5, 2.0))
    for extra in ({}, {"frame_format": "none"}):
        params, arrays = _request(tmp_path / str(len(seen)), [shiny_ply], [V, V],
                                  np.repeat(AXIS_CONVERSION[None, None], 2, 0), write_video=True, **extra)
        result, _ = handle_render(Ctx(), params, arrays)
        assert len(_video_frames(result["video"])) == 2
    assert seen[0][seen[0].index("-threads") + 1] == "3" and "-threads" not in seen[1]
    assert all(p[p.index("-preset") + 1] == "superfast" for p in seen)


def test_yuv420p_frames_decode_like_ffmpegs_own_conversion(tmp_path):
    # The job hands ffmpeg frames converted on the device; the video must look as when ffmpeg converts.
    if video_backend() != "imageio-ffmpeg":
        pytest.skip("the yuv420p input is for imageio-ffmpeg")
    from engine.render.video import yuv420p_frame

    yy, xx = np.mgrid[0:45, 0:63]
    frames = [np.dstack([(xx * 4 + 30 * i) % 256, yy * 5, np.full_like(xx, 60 * i)]).astype(np.uint8)
              for i in range(3)]
    with Mp4Writer(tmp_path / "rgb.mp4", 63, 45, fps=10) as writer:
        for f in frames:
            writer.write(f)
    with Mp4Writer(tmp_path / "yuv.mp4", 63, 45, fps=10, input_format="yuv420p") as writer:
        for f in frames:
            writer.write(yuv420p_frame(torch.from_numpy(f)).numpy())
        with pytest.raises(ValueError, match="yuv420p frame of 64×46"):
            writer.write(np.zeros(10, np.uint8))
    for a, b, original in zip(_video_frames(tmp_path / "rgb.mp4"), _video_frames(tmp_path / "yuv.mp4"), frames):
        assert a.shape == b.shape == (46, 64, 3)            # padded to even, both ways
        a, b = a[:45, :63].astype(np.float32), b[:45, :63].astype(np.float32)
        assert np.abs(b - original).mean() < 4
        assert np.abs(a - b).mean() < 1.5


@pytest.mark.gpu
def test_the_job_on_the_gpu_writes_exact_pngs_and_the_video(shiny_ply, tmp_path):
    # PNGs encoded on the GPU, the video fed yuv420p made there: the PNG holds exactly the rendered pixels.
    from engine.render import render_gaussians
    from engine.render.job import load_objects
    from engine.render.posing import ScenePoser

    eyes = [(0.0, -4.5, 2.0), (1.0, -4.5, 2.0), (2.0, -4.0, 2.0)]
    viewmats = [_camera(e) for e in eyes]
    matrices = np.repeat(AXIS_CONVERSION[None, None], 3, 0)
    params, arrays = _request(tmp_path / "opaque", [shiny_ply], viewmats, matrices, device="cuda",
                              write_video=video_backend() is not None)
    result, _ = handle_render(Ctx(), params, arrays)
    g = load_objects(object(), params["objects"], torch.device("cuda"))
    poser = ScenePoser(g, matrices, np.asarray(viewmats, np.float32))
    K = torch.from_numpy(arrays["Ks"][0]).cuda()
    for i, path in enumerate(result["frames"]):
        m, q, s, c, v = poser.pose(i)
        out = render_gaussians(m, q, s, g.opacities, c, v, K, W, H, near=0.05, far=100.0,
                               background=torch.zeros(3, device="cuda"), sh_degree=g.sh_degree)
        expected = (out.rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        assert np.array_equal(np.asarray(Image.open(path)), expected)
    # The CPU's encoder (Pillow) writes other bytes of the same pixels.
    pillow, _ = handle_render(Ctx(), {**params, "out_dir": str(tmp_path / "pillow"), "png_encoder": "pillow",
                                      "write_video": False}, arrays)
    for ours, theirs in zip(result["frames"], pillow["frames"]):
        assert np.array_equal(np.asarray(Image.open(ours)), np.asarray(Image.open(theirs)))
        assert Path(ours).read_bytes() != Path(theirs).read_bytes()     # the job's PNGs came from the GPU
    if video_backend() is not None:
        frames = _video_frames(result["video"])
        assert len(frames) == 3
        assert np.abs(frames[0].astype(np.float32) - _read(result["frames"][0])).mean() < 8
    rgba = _read(handle_render(Ctx(), *_request(tmp_path / "clear", [shiny_ply], viewmats[:1], matrices[:1],
                                                device="cuda", background=None))[0]["frames"][0])
    assert rgba.shape == (H, W, 4) and rgba[..., 3].min() == 0 and rgba[..., 3].max() >= 250
