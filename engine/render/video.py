"""Writing rendered frames: 8-bit PNGs (Pillow) and an MP4 fed one frame at a time as frames are rendered.

MP4 encoders, in order: imageio-ffmpeg's bundled ffmpeg (H.264, yuv420p), else OpenCV's VideoWriter
('mp4v'). Frames with an odd width or height are padded by one edge pixel, as yuv420p needs even sizes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import AnimateGaussiansError


class VideoEncoderError(AnimateGaussiansError):
    """No MP4 encoder is installed in the engine environment, or the encoder failed."""

    hint = "install imageio-ffmpeg in the engine environment (pip install imageio-ffmpeg), or turn video off"


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (H, W, C) -> uint8, rounding to nearest."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: str | os.PathLike, image: np.ndarray, compress_level: int = 1) -> Path:
    """Write an (H, W, 3) RGB or (H, W, 4) RGBA image (uint8, or float in [0, 1]) as an 8-bit PNG.

    Level 1 compression: rendered frames are written at video rate, where zlib's default level costs
    several times more time for a few percent of size.
    """
    from PIL import Image

    data = to_uint8(np.asarray(image))
    if data.ndim != 3 or data.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3|4) image, got shape {data.shape}")
    path = Path(path)
    Image.fromarray(np.ascontiguousarray(data), "RGBA" if data.shape[2] == 4 else "RGB").save(
        path, format="PNG", compress_level=compress_level)
    return path


def video_backend() -> str | None:
    """'imageio-ffmpeg', 'opencv', or None when neither can write MP4 here."""
    try:
        import imageio_ffmpeg
        imageio_ffmpeg.get_ffmpeg_exe()
        return "imageio-ffmpeg"
    except Exception:
        pass
    try:
        import cv2  # noqa: F401
        return "opencv"
    except Exception:
        return None


class Mp4Writer:
    """Streams RGB uint8 frames of one size into an MP4 file; use as a context manager or call close()."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float = 24.0,
                 backend: str | None = None, crf: int = 18) -> None:
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.out_width, self.out_height = self.width + self.width % 2, self.height + self.height % 2
        self.backend = backend or video_backend()
        self.frames = 0
        self._closed = False
        if self.backend is None:
            raise VideoEncoderError("no MP4 encoder found: neither imageio-ffmpeg nor OpenCV (cv2) is installed")
        if self.backend == "imageio-ffmpeg":
            import imageio_ffmpeg
            self._gen = imageio_ffmpeg.write_frames(
                str(self.path), (self.out_width, self.out_height), fps=float(fps), codec="libx264",
                pix_fmt_in="rgb24", pix_fmt_out="yuv420p", quality=None, macro_block_size=1,
                ffmpeg_log_level="error", output_params=["-crf", str(crf), "-preset", "veryfast"])
            self._gen.send(None)
        elif self.backend == "opencv":
            import cv2
            self._cv2 = cv2
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps),
                                           (self.out_width, self.out_height))
            if not self._writer.isOpened():
                raise VideoEncoderError(f"OpenCV could not open an MP4 writer for {self.path}")
        else:
            raise ValueError(f"unknown video backend {self.backend!r}")

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) frame (uint8, or float in [0, 1])."""
        data = to_uint8(np.asarray(frame))[..., :3]
        if data.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {data.shape[1]}×{data.shape[0]}, the video {self.width}×{self.height}")
        if (self.out_height, self.out_width) != (self.height, self.width):
            data = np.pad(data, ((0, self.out_height - self.height), (0, self.out_width - self.width), (0, 0)),
                          mode="edge")
        data = np.ascontiguousarray(data)
        try:
            if self.backend == "imageio-ffmpeg":
                self._gen.send(data)
            else:
                self._writer.write(self._cv2.cvtColor(data, self._cv2.COLOR_RGB2BGR))
        except (OSError, RuntimeError) as exc:
            raise VideoEncoderError(f"the video encoder failed on frame {self.frames}: {exc}") from exc
        self.frames += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.backend == "imageio-ffmpeg":
            self._gen.close()
        else:
            self._writer.release()

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
