"""The `video` generator (a user's video file, resampled to the request's frames, fps and camera size) and
the robust depth alignment."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputFileError
from engine.motion.depth_alignment import DepthAlignmentError, align_depth_video, fit_scale_shift
from engine.motion.generators.base import GeneratorError, MotionRequest
from engine.motion.generators.video import VideoGenerator, fit_to_camera, resample_in_time


def _request(**kw) -> MotionRequest:
    base = dict(prompt="", frames=6, fps=12.0, segment_means=np.zeros((1, 3)), scene_means=np.zeros((0, 3)),
                up=np.array([0.0, -1.0, 0.0]), viewmat=np.eye(4), K=np.eye(3), width=64, height=48)
    base.update(kw)
    return MotionRequest(**base)


def _numbered_clip(count: int, h: int = 96, w: int = 128) -> np.ndarray:
    """Frames whose mean brightness encodes their index (survives resizing and mild compression)."""
    return np.stack([np.full((h, w, 3), 10 + 20 * i, np.uint8) for i in range(count)])


def test_resample_in_time_picks_frames_by_time():
    clip = _numbered_clip(10)
    out, info = resample_in_time(clip, source_fps=24.0, frames=5, fps=12.0)
    assert [int(f.mean()) for f in out] == [10 + 20 * i for i in (0, 2, 4, 6, 8)]
    out, info = resample_in_time(clip, source_fps=24.0, frames=8, fps=12.0)   # longer than the clip: hold
    assert info["held_frames"] > 0 and int(out[-1].mean()) == 10 + 20 * 9
    out, _ = resample_in_time(clip, source_fps=24.0, frames=0, fps=24.0)      # whole clip
    assert len(out) == 10


def test_fit_to_camera_crops_to_aspect_and_resizes():
    clip = np.zeros((2, 100, 200, 3), np.uint8)
    clip[:, :, 50:150] = 255            # the centre square (4:3 crop keeps columns 33..166)
    out = fit_to_camera(clip, 64, 48)
    assert out.shape == (2, 48, 64, 3)
    assert out[0, 24, 32].min() == 255 and out[0, 24, 0].max() < 128


def test_video_file_through_the_generator(tmp_path):
    import cv2

    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24.0, (128, 96))
    for frame in _numbered_clip(12):
        writer.write(frame[..., ::-1])
    writer.release()
    progress = []
    motion = VideoGenerator().generate(_request(video_path=str(path)), lambda f, s="": progress.append(f),
                                       lambda: None)
    assert motion.video.shape == (6, 48, 64, 3) and motion.video.dtype == np.uint8
    means = [float(f.mean()) for f in motion.video]
    assert np.all(np.diff(means) > 0)                      # time runs forward, every second frame
    assert abs(means[1] - (10 + 20 * 2)) < 6
    assert progress[-1] == 1.0


def test_video_generator_errors(tmp_path):
    gen = VideoGenerator()
    with pytest.raises(GeneratorError, match="needs a video"):
        gen.generate(_request(), lambda *a: None, lambda: None)
    with pytest.raises(InputFileError):
        gen.generate(_request(video_path=str(tmp_path / "missing.mp4")), lambda *a: None, lambda: None)
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(GeneratorError, match="cannot read"):
        gen.generate(_request(video_path=str(tmp_path / "junk.mp4")), lambda *a: None, lambda: None)


@pytest.mark.parametrize("kind", ["depth", "disparity"])
def test_depth_alignment_recovers_scale_and_shift_despite_a_moved_object(kind):
    rng = np.random.default_rng(0)
    ref = np.linspace(2.0, 5.0, 64)[:, None] * np.ones((64, 80))
    truth = ref.copy()
    truth[20:40, 30:50] = 1.5                         # the object moved here: not static
    noisy = truth * (1 + 0.05 * rng.normal(size=truth.shape))
    if kind == "depth":
        relative, s, t = (noisy - 1.0) / 2.0, 2.0, 1.0
    else:
        relative, s, t = 3.0 / noisy + 0.7, 1 / 3.0, -0.7 / 3.0
    a = fit_scale_shift(relative, ref, kind=kind)
    assert a.scale == pytest.approx(s, rel=0.01) and a.shift == pytest.approx(t, rel=0.03, abs=0.01)
    assert 0.8 < a.inlier_fraction < 0.97             # the moved object is rejected as outliers
    metric, fits = align_depth_video(relative[None].repeat(3, 0).astype(np.float32), ref, kind=kind)
    assert metric.shape == (3, 64, 80) and len(fits) == 3
    assert np.median(np.abs(metric[0] - truth) / truth) < 0.05


def test_depth_alignment_without_static_pixels_fails_clearly():
    with pytest.raises(DepthAlignmentError):
        fit_scale_shift(np.ones((8, 8)), np.ones((8, 8)), mask=np.zeros((8, 8), bool))
