"""Something slow far below a handler says what it is doing in the request's progress: a first build of our CUDA
kernels (a minute) shows as its own stage in the panel and the batch log instead of the last stage staying up."""

from __future__ import annotations

import io
import threading
import types

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


def test_the_first_kernel_build_says_so_and_a_built_one_does_not(tmp_path, monkeypatch):
    import torch
    import torch.utils.cpp_extension as cpp_extension

    from cuda_ext import build

    compiled = types.SimpleNamespace(name="the extension")
    calls = []

    def fake_load(**kwargs):
        calls.append(kwargs["build_directory"])
        return compiled

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(cpp_extension, "load", fake_load)
    monkeypatch.setattr(build, "_module", None)
    monkeypatch.setattr(build, "_error", None)

    class Notes:
        def __init__(self):
            self.stages = []

        def note(self, stage):
            self.stages.append(stage)

    first = Notes()
    with request_progress.serving(first):
        assert build.load_extension() is compiled
    assert first.stages == [build.FIRST_BUILD_STAGE] and len(calls) == 1

    (tmp_path / calls[0].split("/")[-1] / f"{build.EXTENSION_NAME}.so").touch()   # as the build leaves it
    monkeypatch.setattr(build, "_module", None)
    again = Notes()
    with request_progress.serving(again):
        assert build.load_extension() is compiled
    assert again.stages == [] and len(calls) == 2
