"""Rendered passes handed from the engine to Blender in shared memory instead of through the pipe: a 1080p
Combined pass is 33 MB, which the pipe copies twice in 64 kB pieces; in shared memory the engine writes it once
where Blender reads it. The add-on owns the segment (PixelBuffer), the engine attaches to it by name per request.
numpy and the standard library only: both processes import it.
"""

from __future__ import annotations

from multiprocessing import shared_memory

import numpy as np

PASS_CHANNELS = {"combined": 4, "depth": 1}     # in the order the passes lie in the buffer


def pass_shapes(passes, frames: int, height: int, width: int) -> dict[str, tuple[int, ...]]:
    """The float32 arrays a pixels answer holds, in buffer order."""
    return {name: (frames, height, width, 4) if name == "combined" else (frames, height, width)
            for name in PASS_CHANNELS if name in passes}


def nbytes(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(4 * int(np.prod(shape)) for shape in shapes.values())


def views(buffer, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """float32 arrays over `buffer`, one after the other (delete them before the segment is closed)."""
    out, offset = {}, 0
    for name, shape in shapes.items():
        out[name] = np.ndarray(shape, np.float32, buffer=buffer, offset=offset)
        offset += 4 * int(np.prod(shape))
    return out


def attach(name: str) -> shared_memory.SharedMemory:
    """Open a segment the add-on made, without this process's resource tracker adopting it (on POSIX it would
    unlink the add-on's segment when the engine exits: CPython issue 82300)."""
    try:
        return shared_memory.SharedMemory(name=name, track=False)   # Python 3.13+
    except TypeError:
        pass
    from multiprocessing import resource_tracker

    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None      # not ours to track (3.12 and older)
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register


class PixelBuffer:
    """The add-on's segment for pixels answers, grown as needed and reused request after request."""

    def __init__(self) -> None:
        self._shm: shared_memory.SharedMemory | None = None

    def name_for(self, size: int) -> str:
        """The segment's name, after making sure it holds `size` bytes (only while no request writes to it)."""
        if self._shm is None or self._shm.size < size:
            self.close()
            self._shm = shared_memory.SharedMemory(create=True, size=max(1, size))
        return self._shm.name

    def views(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        if self._shm is None or self._shm.size < nbytes(shapes):
            raise ValueError("the pixel buffer is smaller than the answer")
        return views(self._shm.buf, shapes)

    def close(self) -> None:
        if self._shm is not None:
            shm, self._shm = self._shm, None
            try:
                shm.close()
                shm.unlink()
            except (BufferError, FileNotFoundError):   # a view still alive, or already gone: the OS frees it
                pass
