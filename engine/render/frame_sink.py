"""Where a render job's frames go: PNG files and the MP4, written on worker threads while the next frame
renders, with at most a few frames in flight.

Frames on a GPU are copied to pinned host memory without waiting (the video frame converted there first by
video.yuv420p_frame); a worker waits for its own copy, then encodes (Pillow, one worker per core) and writes.
`gpu_png` encodes the PNG on the GPU instead (engine/render/png.py: the frame's PNG is finished, its Huffman
code built on the host, once the next frame has been queued behind it). It is off by default: on the H200
its host step serialises at ~37 ms a frame, slower than Pillow on 16 cores.
"""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .png import EncodedPng, PendingPng, write_png
from .video import Mp4Writer


def to_host(t: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """A host copy of `t` and the event to wait for before reading it (None: ready now). From a GPU the
    copy goes into pinned memory and does not wait."""
    if not t.is_cuda:
        return t, None
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return host, ready


def _write_host_png(path: Path, host: torch.Tensor, ready: torch.cuda.Event | None) -> None:
    if ready is not None:
        ready.synchronize()
    write_png(path, host.numpy())


def _write_encoded(encoded: EncodedPng, path: Path, host: torch.Tensor, ready: torch.cuda.Event | None) -> None:
    if ready is not None:
        ready.synchronize()
    encoded.write(path, host.numpy())


class FrameSink:
    """Writes frames on worker threads (PNG files in parallel, the video in order)."""

    def __init__(self, video: Mp4Writer | None, workers: int, gpu_png: bool = False) -> None:
        self.video = video
        self.gpu_png = gpu_png
        self._png_pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="png")
        self._video_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mp4") if video else None
        self._pending: collections.deque[Future] = collections.deque()
        self._limit = 2 * max(1, workers) + 2
        self._staged: tuple[Path, PendingPng] | None = None

    def submit(self, path: Path | None, image: torch.Tensor | None, video_frame: torch.Tensor | None) -> None:
        """Queue one frame: `image` ((H, W, 3|4) uint8) becomes the PNG at `path`, `video_frame` (in the video
        writer's input format) the video's next frame; either may be None."""
        while len(self._pending) >= self._limit:
            self._pending.popleft().result()
        staged = None
        if image is not None and image.is_cuda and self.gpu_png:
            staged = (path, PendingPng(image))
        elif image is not None and image.is_cuda:
            host, ready = to_host(image)
            self._pending.append(self._png_pool.submit(_write_host_png, path, host, ready))
        elif image is not None:
            self._pending.append(self._png_pool.submit(write_png, path, image.numpy()))
        self._finish_staged()
        self._staged = staged
        if video_frame is not None:
            host, ready = to_host(video_frame)
            self._pending.append(self._video_pool.submit(self._write_video, host, ready))

    def _finish_staged(self) -> None:
        if self._staged is None:
            return
        (path, pending), self._staged = self._staged, None
        encoded = pending.finish()
        host, ready = to_host(encoded.deflate)
        self._pending.append(self._png_pool.submit(_write_encoded, encoded, path, host, ready))

    def _write_video(self, frame: torch.Tensor, ready: torch.cuda.Event | None) -> None:
        if ready is not None:
            ready.synchronize()
        self.video.write(np.asarray(frame.numpy()))

    def finish(self) -> None:
        """Write the frame still staged, wait for every queued write (raising the first failure) and close
        the video."""
        try:
            self._finish_staged()
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._png_pool.shutdown(wait=True)
            if self._video_pool is not None:
                self._video_pool.shutdown(wait=True)
            if self.video is not None:
                self.video.close()
