"""Fitting the camera's keyframes to the frame size a video model works at, and mapping its video back.

Models make fixed sizes (Runway 1280x768, Wan 832x480 ...). We pad the keyframes to the model's aspect ratio
(edge pixels, no crop: the object must stay in view), resize, and undo both on the result, so pixel (u, v) of
every returned frame is pixel (u, v) of the engine's camera: the lifting stage relies on that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Framing:
    """How a (height, width) camera image sits inside a model frame of (model_height, model_width)."""

    height: int
    width: int
    model_height: int
    model_width: int
    pad_top: int
    pad_left: int
    padded_height: int
    padded_width: int


def plan_framing(height: int, width: int, model_height: int, model_width: int) -> Framing:
    """Pad (height, width) symmetrically to the model's aspect ratio; the padded image is then resized to the model size."""
    target = model_width / model_height
    if width / height < target:
        padded_h, padded_w = height, int(round(height * target))
    else:
        padded_h, padded_w = int(round(width / target)), width
    padded_h, padded_w = max(padded_h, height), max(padded_w, width)
    return Framing(height, width, model_height, model_width, (padded_h - height) // 2, (padded_w - width) // 2,
                   padded_h, padded_w)


def to_model_frame(image: np.ndarray, framing: Framing) -> np.ndarray:
    """(H, W, 3) uint8 camera image -> (model_height, model_width, 3) uint8, padded with its edge pixels."""
    import cv2

    image = np.asarray(image, dtype=np.uint8)[..., :3]
    if image.shape[:2] != (framing.height, framing.width):
        raise ValueError(f"image is {image.shape[:2]}, the framing was planned for {(framing.height, framing.width)}")
    bottom = framing.padded_height - framing.height - framing.pad_top
    right = framing.padded_width - framing.width - framing.pad_left
    padded = np.pad(image, ((framing.pad_top, bottom), (framing.pad_left, right), (0, 0)), mode="edge")
    return cv2.resize(padded, (framing.model_width, framing.model_height), interpolation=cv2.INTER_AREA)


def from_model_video(video: np.ndarray, framing: Framing) -> np.ndarray:
    """(F, h, w, 3) uint8 model video (any size of the model's aspect) -> (F, H, W, 3) uint8 in the camera's pixels."""
    import cv2

    video = np.asarray(video)
    frames, h, w = video.shape[:3]
    sy, sx = h / framing.padded_height, w / framing.padded_width
    y0, x0 = framing.pad_top * sy, framing.pad_left * sx
    # An affine warp (not crop + resize) keeps sub-pixel accuracy when the padding is not a whole model pixel.
    matrix = np.array([[sx, 0.0, x0 + 0.5 * sx - 0.5], [0.0, sy, y0 + 0.5 * sy - 0.5]], dtype=np.float64)
    out = np.empty((frames, framing.height, framing.width, 3), dtype=np.uint8)
    flags = cv2.INTER_AREA if sx < 1 or sy < 1 else cv2.INTER_LINEAR
    for f in range(frames):  # one cv2 call per frame (tens of frames), not per pixel
        out[f] = cv2.warpAffine(np.ascontiguousarray(video[f, ..., :3]), matrix, (framing.width, framing.height),
                                flags=flags | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return out


def resample_frames(video: np.ndarray, frames: int) -> np.ndarray:
    """Pick `frames` frames evenly over the whole clip (first and last kept): the clip is the motion's duration."""
    if frames <= 0 or len(video) == 0:
        raise ValueError("need at least one frame in and out")
    index = np.rint(np.linspace(0, len(video) - 1, frames)).astype(np.int64)
    return np.ascontiguousarray(video[index])


def decode_video(path: str | Path) -> tuple[np.ndarray, float]:
    """All frames of a video file as (F, H, W, 3) uint8 RGB, and its frame rate (OpenCV's decoder)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot open the video {path}")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0) or 24.0
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    capture.release()
    if not frames:
        raise ValueError(f"the video {path} has no readable frames")
    return np.ascontiguousarray(np.stack(frames)), fps
