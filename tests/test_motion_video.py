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


def _depth_video(kind: str, truths: list[tuple[float, float]], h: int = 64, w: int = 80, seed: int = 0):
    """(relative (F, H, W) float32, reference, true metric per frame): frame f has its own scale and shift
    (truths[f] as (s, t) of metric = s·relative + t, or of 1/metric for disparity) and the object moved."""
    rng = np.random.default_rng(seed)
    ref = np.linspace(2.0, 5.0, h)[:, None] * np.ones((h, w))
    relative, metric = [], []
    for f, (s, t) in enumerate(truths):
        truth = ref.copy()
        top, left = h * 5 // 16, w * 3 // 8 + 3 * f            # the object, a little further right each frame
        truth[top:top + h * 5 // 16, left:left + w // 4] = 1.5
        noisy = truth * (1 + 0.05 * rng.normal(size=truth.shape))
        relative.append((noisy - t) / s if kind == "depth" else (1 / noisy - t) / s)
        metric.append(truth)
    return np.stack(relative).astype(np.float32), ref, np.stack(metric)


@pytest.mark.parametrize("kind", ["depth", "disparity"])
def test_depth_video_alignment_recovers_each_frames_scale_and_shift(kind):
    truths = [(2.0, 1.0), (1.2, 0.4), (3.5, -0.5), (0.7, 0.5)] if kind == "depth" else \
             [(1 / 3.0, -0.7 / 3.0), (0.5, -0.1), (0.2, 0.05), (1.5, -0.6)]
    # 144x160 is more pixels than MAX_SAMPLES: the frames share a subsample of them.
    relative, ref, truth = _depth_video(kind, truths, h=144, w=160)
    metric, fits = align_depth_video(relative, ref, kind=kind)
    assert metric.shape == relative.shape and metric.dtype == np.float32 and len(fits) == len(truths)
    for f, ((s, t), a) in enumerate(zip(truths, fits)):
        assert a.kind == kind
        assert a.scale == pytest.approx(s, rel=0.01), f"frame {f}"
        assert a.shift == pytest.approx(t, rel=0.03, abs=0.01), f"frame {f}"
        assert 0.8 < a.inlier_fraction < 0.97, f"frame {f}: the moved object is rejected as outliers"
        assert np.median(np.abs(metric[f] - truth[f]) / truth[f]) < 0.05


@pytest.mark.parametrize("kind", ["depth", "disparity"])
def test_depth_video_alignment_equals_fitting_each_frame_alone(kind):
    # Frame f of the video is fitted as fit_scale_shift(..., seed=f): with all pixels sampled (fewer than
    # MAX_SAMPLES) the same pixels and hypotheses, so the same fit up to rounding. With more pixels the video
    # shares one subsample (drawn from seed 0) where a lone fit draws its own, so only frame 0 stays equal.
    relative, ref, _ = _depth_video(kind, [(2.0, 1.0), (1.5, 0.2), (2.5, 0.8)] if kind == "depth" else
                                    [(0.4, -0.2), (0.3, -0.1), (0.6, 0.1)])
    relative[1, :10] = np.nan                     # frames differ in which pixels are valid
    if kind == "depth":
        relative[2, :, :7] = -1.0
    mask = np.ones(ref.shape, bool)
    mask[:, -5:] = False
    _, fits = align_depth_video(relative, ref, mask, kind=kind)
    for f, a in enumerate(fits):
        alone = fit_scale_shift(relative[f], ref, mask, kind=kind, seed=f)
        assert a.scale == pytest.approx(alone.scale, rel=1e-9) and a.shift == pytest.approx(alone.shift, rel=1e-9)
        assert a.inlier_fraction == alone.inlier_fraction
        assert a.residual == pytest.approx(alone.residual, rel=1e-9)


def test_depth_video_alignment_names_the_frame_it_cannot_fit():
    relative, ref, _ = _depth_video("depth", [(2.0, 1.0)] * 3)
    relative[2] = np.nan
    with pytest.raises(DepthAlignmentError, match="frame 2: only 0 static pixels"):
        align_depth_video(relative, ref)
    relative[2] = -1.0                             # no depth at all (a depth map's "unknown")
    with pytest.raises(DepthAlignmentError, match="frame 2: only 0 static pixels"):
        align_depth_video(relative, ref)
    relative[2] = relative[0]
    relative[1] = 0.5                             # flat: nothing to fit a line to
    with pytest.raises(DepthAlignmentError, match="frame 1: the depth map does not vary"):
        align_depth_video(relative, ref)
    with pytest.raises(DepthAlignmentError, match="^the depth map does not vary"):   # one frame: no frame named
        fit_scale_shift(relative[1], ref)


def test_depth_video_alignment_with_one_fit_for_all_frames():
    import torch

    relative, ref, _ = _depth_video("depth", [(2.0, 1.0), (4.0, 0.0), (1.0, 3.0)])
    relative[2] = np.nan                          # frame 0's fit does not need the others
    # A tensor in (e.g. the depth model's output where it ran), numpy out.
    metric, fits = align_depth_video(torch.from_numpy(relative), ref, per_frame=False, device="cpu")
    assert isinstance(metric, np.ndarray) and metric.dtype == np.float32 and len(fits) == 3
    alone = fit_scale_shift(relative[0], ref, seed=0)
    assert all(a == alone for a in fits)
    assert fits[0].scale == pytest.approx(2.0, rel=0.01)
    for f in range(3):
        np.testing.assert_array_equal(metric[f], alone.apply(relative[f]))
    assert not metric[2].any()                    # NaN in: unknown (0) out


@pytest.mark.gpu
def test_depth_video_alignment_on_cuda_matches_the_cpu():
    # The handler aligns where the depth model ran: on CUDA the sampling and hypotheses are the same draws,
    # so the fits agree with the CPU's up to float rounding.
    import torch

    relative, ref, _ = _depth_video("disparity", [(0.4, -0.2), (0.3, -0.1), (0.6, 0.1)], h=144, w=160)
    on_cpu, fits_cpu = align_depth_video(relative, ref, kind="disparity", device="cpu")
    on_gpu, fits_gpu = align_depth_video(torch.from_numpy(relative).cuda(), ref, kind="disparity")
    for a, b in zip(fits_cpu, fits_gpu):
        assert b.scale == pytest.approx(a.scale, rel=1e-4) and b.shift == pytest.approx(a.shift, rel=1e-4, abs=1e-5)
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-4, atol=1e-5)
