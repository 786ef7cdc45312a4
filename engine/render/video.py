"""Writing rendered frames: 8-bit PNGs (engine/render/png.py) and an MP4 fed one frame at a time as frames
are rendered.

MP4 encoders, in order: imageio-ffmpeg's bundled ffmpeg (H.264, yuv420p), else OpenCV's VideoWriter
('mp4v'). Frames with an odd width or height are padded by one edge pixel, as yuv420p needs even sizes.
The job hands ffmpeg frames already in yuv420p, converted on the GPU (`yuv420p_frame`): half the bytes
through the pipe, and no colour conversion in ffmpeg, whose conversion runs on one thread.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import AnimateGaussiansError

# x264's speed/size trade-off: at 1080p on the H200's 16 cores superfast encodes about 220 frames a second
# against veryfast's 116 (benchmarks/render_speed.py prints both), so the video keeps up with the renderer
# while PNGs are written too; at crf 18 the file is about twice veryfast's (a 240-frame preview: 5.7 MB).
X264_PRESET = "superfast"
# BT.601 limited range (what ffmpeg's own rgb24 -> yuv420p conversion uses), tagged in the stream.
_RGB_TO_YCBCR = ((65.481, 128.553, 24.966), (-37.797, -74.203, 112.0), (112.0, -93.786, -18.214))


class VideoEncoderError(AnimateGaussiansError):
    """No MP4 encoder is installed in the engine environment, or the encoder failed."""

    hint = "install imageio-ffmpeg in the engine environment (pip install imageio-ffmpeg), or turn video off"


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (H, W, C) -> uint8, rounding to nearest."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def even_padded(rgb: torch.Tensor) -> torch.Tensor:
    """(H, W, C) with an odd height or width grown by repeating the last row / column (yuv420p needs even)."""
    if rgb.shape[0] % 2:
        rgb = torch.cat([rgb, rgb[-1:]], dim=0)
    if rgb.shape[1] % 2:
        rgb = torch.cat([rgb, rgb[:, -1:]], dim=1)
    return rgb


def yuv420p_frame(rgb: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> one yuv420p frame (Y plane, then Cb and Cr at half size; flat uint8), on the
    image's device. BT.601 limited range; chroma is the mean of each 2×2 block. Odd sizes are padded first."""
    x = even_padded(rgb).to(torch.float32)
    h, w = x.shape[:2]
    m = torch.tensor(_RGB_TO_YCBCR, dtype=torch.float32, device=x.device) / 255.0
    y = 16.0 + x @ m[0]
    block = x.reshape(h // 2, 2, w // 2, 2, 3).mean(dim=(1, 3))
    chroma = 128.0 + block @ m[1:].T                        # (h/2, w/2, 2)
    planes = [y.reshape(-1), chroma[..., 0].reshape(-1), chroma[..., 1].reshape(-1)]
    return (torch.cat(planes) + 0.5).clamp(0, 255).to(torch.uint8)


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
    """Streams frames of one size into an MP4 file; use as a context manager or call close().

    `input_format` "rgb24" takes (H, W, 3) RGB frames; "yuv420p" (ffmpeg only) takes yuv420p_frame's bytes.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float = 24.0,
                 backend: str | None = None, crf: int = 18, input_format: str = "rgb24",
                 preset: str = X264_PRESET, threads: int | None = None) -> None:
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.out_width, self.out_height = self.width + self.width % 2, self.height + self.height % 2
        self.backend = backend or video_backend()
        self.input_format = input_format
        self.frames = 0
        self._closed = False
        if self.backend is None:
            raise VideoEncoderError("no MP4 encoder found: neither imageio-ffmpeg nor OpenCV (cv2) is installed")
        if input_format not in ("rgb24", "yuv420p") or (input_format == "yuv420p" and self.backend != "imageio-ffmpeg"):
            raise ValueError(f"the {self.backend} video backend does not take {input_format!r} frames")
        if self.backend == "imageio-ffmpeg":
            import imageio_ffmpeg
            self._gen = imageio_ffmpeg.write_frames(
                str(self.path), (self.out_width, self.out_height), fps=float(fps), codec="libx264",
                pix_fmt_in=input_format, pix_fmt_out="yuv420p", quality=None, macro_block_size=1,
                ffmpeg_log_level="error",
                output_params=["-crf", str(crf), "-preset", preset, "-colorspace", "smpte170m",
                               "-color_range", "tv"] + (["-threads", str(int(threads))] if threads else []))
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
        """Append one frame: (H, W, 3) RGB (uint8, or float in [0, 1]), or with input_format "yuv420p" the
        flat bytes of yuv420p_frame."""
        if self.input_format == "yuv420p":
            data = np.ascontiguousarray(frame, dtype=np.uint8).reshape(-1)
            if data.size != self.out_width * self.out_height * 3 // 2:
                raise ValueError(f"a yuv420p frame of {self.out_width}×{self.out_height} has "
                                 f"{self.out_width * self.out_height * 3 // 2} bytes, got {data.size}")
            self._send(data)
            return
        data = to_uint8(np.asarray(frame))[..., :3]
        if data.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {data.shape[1]}×{data.shape[0]}, the video {self.width}×{self.height}")
        if (self.out_height, self.out_width) != (self.height, self.width):
            data = np.pad(data, ((0, self.out_height - self.height), (0, self.out_width - self.width), (0, 0)),
                          mode="edge")
        self._send(np.ascontiguousarray(data))

    def _send(self, data: np.ndarray) -> None:
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
