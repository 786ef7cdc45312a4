"""The `video` generator: the user's own motion video (any generator, any phone), whose first frame is the
active camera's view at the start frame; it is resampled to the requested frames and fps and camera size.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import InputFileError
from .base import GeneratedMotion, GeneratorError, MotionRequest, Progress


def resample_in_time(video: np.ndarray, source_fps: float, frames: int, fps: float) -> tuple[np.ndarray, dict]:
    """`frames` frames at `fps` from a clip at `source_fps` (nearest source frame to each time); with
    frames <= 0, the whole clip at `fps`. A clip shorter than asked holds its last frame (reported)."""
    count = len(video)
    duration = count / source_fps
    if frames <= 0:
        frames = max(2, int(round(duration * fps)))
    times = np.arange(frames) / fps
    index = np.minimum(np.rint(times * source_fps).astype(np.int64), count - 1)
    held = int((times * source_fps > count - 1 + 0.5).sum())
    return np.ascontiguousarray(video[index]), {"source_frames": count, "source_fps": source_fps,
                                               "held_frames": held}


def fit_to_camera(video: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop to the camera's aspect ratio, then resize to (height, width) (area filter when shrinking)."""
    import cv2

    h, w = video.shape[1:3]
    target = width / height
    if abs(w / h - target) > 1e-3:
        if w / h > target:
            cw = int(round(h * target))
            x0 = (w - cw) // 2
            video = video[:, :, x0:x0 + cw]
        else:
            ch = int(round(w / target))
            y0 = (h - ch) // 2
            video = video[:, y0:y0 + ch]
    if video.shape[1:3] == (height, width):
        return np.ascontiguousarray(video)
    flags = cv2.INTER_AREA if video.shape[2] > width else cv2.INTER_LINEAR
    return np.stack([cv2.resize(np.ascontiguousarray(f), (width, height), interpolation=flags) for f in video])


class VideoGenerator:
    name = "video"

    def available(self) -> tuple[bool, str]:
        # Looked up, not imported: importing cv2 costs a third of a second, and frames handed in need none.
        if importlib.util.find_spec("cv2") is None:
            return False, "install opencv-python-headless in the engine environment"
        return True, ""

    def generate(self, request: MotionRequest, progress: Progress, check_cancelled: Callable[[], None]
                 ) -> GeneratedMotion:
        frames = request.options.get("video_frames")   # (F, H, W, 3) uint8 handed in by the request
        source_fps = float(request.options.get("video_fps") or request.fps)
        if frames is None:
            if not request.video_path:
                raise GeneratorError("the video generator needs a video file",
                                     hint="choose the motion video (--video PATH)")
            path = Path(request.video_path).expanduser()
            if not path.is_file():
                raise InputFileError(f"the motion video does not exist: {path}")
            progress(0.05, "reading the video")
            from ..video_framing import decode_video
            try:
                frames, source_fps = decode_video(path)
            except ValueError as exc:
                raise GeneratorError(f"cannot read the motion video {path.name}: {exc}",
                                     hint="use an .mp4 (H.264) or another format OpenCV reads") from None
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] < 3 or len(frames) < 2:
            raise GeneratorError(f"the motion video must have at least 2 RGB frames, got shape {frames.shape}")
        frames = frames[..., :3].astype(np.uint8, copy=False)
        check_cancelled()
        video, info = resample_in_time(frames, source_fps, request.frames, request.fps)
        video = fit_to_camera(video, request.width, request.height)
        progress(1.0, "video ready")
        return GeneratedMotion(video=video, fps=request.fps, info={"generator": "video", **info})
