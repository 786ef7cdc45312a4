"""Where a render job's frames go: PNG files and the MP4, written on worker threads while the next frame
renders, with at most a few frames in flight.

A PNG of a frame on a GPU is filtered and split into deflate symbols there as soon as it is submitted
(engine/render/png.py); a worker waits for that frame's symbol counts only, builds its Huffman code, has the
GPU pack the bits and writes the file. Host frames (and `png_encoder="pillow"`) go to Pillow, one worker per
core. The video frame is copied to pinned host memory without waiting (made yuv420p on the GPU first by
video.yuv420p_frame) and written in order by one worker. benchmarks/render_speed.py times both PNG encoders.

The GPU's PNG work runs on a stream of its own: the rasterizer leaves much of the GPU idle within a frame
(sorting, a tile pass of few blocks), where the previous frames' PNG kernels then run instead of queueing
behind the next frame's render on one stream.
"""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .. import fallbacks
from .png import CapturedHalf, PendingPng, captured_half, write_png
from .video import Mp4Writer


def to_host(t: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """A host copy of `t` and the event to wait for before reading it (None: ready now). From a GPU the
    copy goes into pinned memory (`out`, a pinned buffer of t's shape kept by the caller, else a new one) and
    does not wait."""
    if not t.is_cuda:
        return t, None
    host = out if out is not None else torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return host, ready


def _write_host_png(path: Path, host: torch.Tensor, ready: torch.cuda.Event | None) -> None:
    if ready is not None:
        ready.synchronize()
    write_png(path, host.numpy())


def _write_device_png(path: Path, pending: PendingPng, stream: torch.cuda.Stream) -> None:
    # A worker thread's current device and stream are not the frame's: the PNG's kernels stay on its stream.
    with torch.cuda.device(pending.device), torch.cuda.stream(stream):
        encoded = pending.finish()
        host, ready = to_host(encoded.deflate)
    ready.synchronize()
    encoded.write(path, host.numpy())


PNG_ENCODERS = ("auto", "pillow")


class FrameSink:
    """Writes frames on worker threads (PNG files in parallel, the video in order). `png_encoder`: "auto"
    encodes a frame on the device it is on (GPU or Pillow), "pillow" always on the CPU."""

    def __init__(self, video: Mp4Writer | None, workers: int, png_encoder: str = "auto",
                 capture_png: bool = False) -> None:
        """`capture_png`: GPU frames' PNGs start as a CUDA graph captured for their shape (png.CapturedHalf):
        worth it for many frames of one size (a job), not for one."""
        if png_encoder not in PNG_ENCODERS:
            raise ValueError(f"png_encoder must be one of {PNG_ENCODERS}, got {png_encoder!r}")
        self.video = video
        self.png_encoder = png_encoder
        self.capture_png = capture_png
        self._png_pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="png")
        self._video_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mp4") if video else None
        self._pending: collections.deque[Future] = collections.deque()
        self._limit = 2 * max(1, workers) + 2
        self._png_streams: dict[torch.device, torch.cuda.Stream] = {}

    def _png_stream(self, image: torch.Tensor) -> torch.cuda.Stream:
        """The PNG stream of the image's device, made to wait for the image (rendered on the current stream),
        which it keeps from the allocator until its own work on it is done."""
        stream = self._png_streams.get(image.device)
        if stream is None:
            stream = self._png_streams[image.device] = torch.cuda.Stream(image.device)
        stream.wait_stream(torch.cuda.current_stream(image.device))
        image.record_stream(stream)
        return stream

    def submit(self, path: Path | None, image: torch.Tensor | None, video_frame: torch.Tensor | None) -> None:
        """Queue one frame: `image` ((H, W, 3|4) uint8) becomes the PNG at `path`, `video_frame` (in the video
        writer's input format) the video's next frame; either may be None."""
        while len(self._pending) >= self._limit:
            self._pending.popleft().result()
        if image is not None and image.is_cuda and self.png_encoder != "pillow":
            stream = self._png_stream(image)
            with torch.cuda.stream(stream):
                pending = PendingPng(image, captured=self._captured(image))
            self._pending.append(self._png_pool.submit(_write_device_png, path, pending, stream))
        elif image is not None:
            host, ready = to_host(image)
            self._pending.append(self._png_pool.submit(_write_host_png, path, host, ready))
        if video_frame is not None:
            host, ready = to_host(video_frame)
            self._pending.append(self._video_pool.submit(self._write_video, host, ready))

    def _captured(self, image: torch.Tensor) -> CapturedHalf | None:
        if not self.capture_png:
            return None
        half = captured_half(image)
        if isinstance(half, str):
            self.capture_png = False   # say it once a job; the frames go on with the kernels one by one
            fallbacks.warn("png_eager", f"PNG encoder: capturing its CUDA graph failed ({half}); the frames' "
                                        "PNGs are the same, their kernels launched one by one (slower)")
            return None
        return half

    def _write_video(self, frame: torch.Tensor, ready: torch.cuda.Event | None) -> None:
        if ready is not None:
            ready.synchronize()
        self.video.write(np.asarray(frame.numpy()))

    def finish(self) -> None:
        """Wait for every queued write (raising the first failure) and close the video."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._png_pool.shutdown(wait=True)
            if self._video_pool is not None:
                self._video_pool.shutdown(wait=True)
            if self.video is not None:
                self.video.close()
