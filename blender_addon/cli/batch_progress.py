"""Progress lines of the batch CLI, the time a render will take (said after its first frame), and Blender's own
output caught where it would get in the way. Pure Python (no bpy): the batch prints these lines on stderr.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import time
from typing import Callable, Iterator

from .batch_args import PROG

# A render estimated to take longer than this suggests a smaller --resolution.
SLOW_RENDER_S = 60.0
_FRAME = re.compile(r"\((\d+) of (\d+)\)")


def say(text: str) -> None:
    """One progress line of the batch on stderr ("batch.py: segment:  40% lifting masks")."""
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


class RenderEstimate:
    """Watches the render's progress stages ("frame 12 (1 of 48)"); after the first frame it says how long
    the rest will take, once, with a hint when that is long and the resolution was not chosen."""

    def __init__(self, print_line: Callable[[str], None], resolution_given: bool, size: tuple[int, int] | None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.print_line, self.resolution_given, self.size, self.clock = print_line, resolution_given, size, clock
        self.start = clock()
        self.said = False

    def __call__(self, fraction: float, stage: str) -> None:
        match = _FRAME.search(stage)
        if self.said or match is None:
            return
        done, total = int(match.group(1)), int(match.group(2))
        if done < 1:
            return
        self.said = True
        per_frame = (self.clock() - self.start) / done
        left = per_frame * (total - done)
        line = f"render: {per_frame:.1f} s per frame, about {_duration(left)} for the other {total - done} frames"
        if left > SLOW_RENDER_S and not self.resolution_given:
            size = f" (now {self.size[0]}×{self.size[1]})" if self.size else ""
            line += f"; pass --resolution W H for a faster, smaller render{size}, or --device cuda on a GPU"
        self.print_line(line)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@contextlib.contextmanager
def captured_stdout() -> Iterator[Callable[[], str]]:
    """Capture what C code (Blender) writes to file descriptor 1 inside; yields a function returning it."""
    sys.stdout.flush()
    _flush_c_stdio()
    saved = os.dup(1)
    python_side = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink, contextlib.redirect_stdout(python_side):
        os.dup2(sink.fileno(), 1)
        text = ""
        try:
            yield lambda: text
        finally:
            _flush_c_stdio()   # Blender's C printf output is buffered: flush it into the sink, not later
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace") + python_side.getvalue()


def _flush_c_stdio() -> None:
    try:
        import ctypes
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass
