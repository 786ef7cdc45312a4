"""The progress of the request the current thread serves, for code far below its handler: a first build of our
CUDA kernels (a minute) says so in the panel's progress line and the batch's log, instead of leaving the last
stage up as if the engine had hung. Torch-free."""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Iterator, Protocol


class _Notes(Protocol):
    def note(self, stage: str) -> None: ...


_current: contextvars.ContextVar[_Notes | None] = contextvars.ContextVar("animate_gaussians_request", default=None)


@contextmanager
def serving(ctx: _Notes) -> Iterator[None]:
    """Make `ctx` (the server's RequestContext) the current request's for the code run inside."""
    token = _current.set(ctx)
    try:
        yield
    finally:
        _current.reset(token)


def say(stage: str) -> None:
    """Show `stage` as the current request's progress stage, its fraction unchanged; nothing outside a request."""
    ctx = _current.get()
    if ctx is not None:
        ctx.note(stage)
