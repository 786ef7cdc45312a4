"""Something slow far below a handler says what it is doing in the request's progress: a first build of our CUDA
kernels (a minute) shows as its own stage in the panel and the batch log instead of the last stage staying up."""

from __future__ import annotations

import io
import threading

from engine import protocol, request_progress
from engine.server import EngineServer


def _messages(stream: io.BytesIO) -> list[protocol.Message]:
    stream.seek(0)
    out = []
    while (msg := protocol.read_message(stream)) is not None:
        out.append(msg)
    return out


def test_a_note_from_below_the_handler_reaches_the_add_on_at_the_current_fraction():
    def handler(ctx, params, arrays):
        ctx.progress(0.4, "rendering")
        request_progress.say("compiling something once")      # as cuda_ext.build does, knowing no ctx
        return {"done": True}, {}

    out = io.BytesIO()
    server = EngineServer(io.BytesIO(), out, {"deep": handler})
    server._cancel_flags[7] = threading.Event()
    server._run(protocol.request(7, "deep"))
    progress = [(m["fraction"], m["stage"]) for m in _messages(out) if m.kind == "progress"]
    assert progress == [(0.4, "rendering"), (0.4, "compiling something once")]
    request_progress.say("outside any request: nothing to tell, no error")
