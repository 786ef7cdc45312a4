"""An engine that fails on purpose: the real engine server whose segment, animate, query4d and render handlers
first do what a fault file tells them (be killed, hang, or write garbage on the protocol stream) after their
first progress step. Each fault is used once, so the retry runs the handler: quick fakes that answer what the real
ones answer (the real models, and torch's import alone, are too slow for a CI test that restarts engines).

The fault file is JSON {request type: "kill" | "hang" | "garbage" | "empty_answer" (a well-formed result frame
with nothing in it)}, named by $ANIMATE_GAUSSIANS_TEST_FAULTS.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
FAULTS_ENV = "ANIMATE_GAUSSIANS_TEST_FAULTS"
FAULTS = ("kill", "hang", "garbage", "empty_answer")
REQUEST_TYPES = ("segment", "animate", "query4d", "render")
_stream = None   # the engine's protocol output, for the garbage fault


def take_fault(request_type: str) -> str | None:
    path = os.environ.get(FAULTS_ENV)
    if not path or not os.path.exists(path):
        return None
    faults = json.loads(Path(path).read_text() or "{}")
    fault = faults.pop(request_type, None)
    Path(path).write_text(json.dumps(faults))
    return fault


def _do(fault: str) -> None:
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "garbage":
        _stream.write(b"\x00HTTP/1.1 200 OK\r\n\r\n{not a frame}" + bytes(range(256)) * 4)
        _stream.flush()
    time.sleep(3600)   # hang (and, after garbage, wait to be killed by the client)


def fake_segment(ctx, params, arrays):
    n = len(arrays["indices"])
    return {"method": "fake"}, {"mask": np.arange(n) < max(1, n // 2)}


def fake_query4d(ctx, params, arrays):
    from engine.ply import read_header

    n = sum(read_header(o["ply_path"]).vertex_count for o in params["objects"])
    t = len(arrays["object_matrices"])
    start, end = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
    start[:5], end[:5] = 0, t - 1
    return ({"span": [0, t - 1], "timesteps": t, "counts": [5] * t, "extractor": "fake"},
            {"mask_start": start, "mask_end": end, "peak": np.ones(n, np.float32)})


def fake_render(ctx, params, arrays):
    out = Path(params["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, frame in enumerate(params["frames"]):
        ctx.progress((i + 1) / len(params["frames"]), f"frame {frame}")
        path = out / f"frame_{int(frame):04d}.png"
        path.write_bytes(b"")   # the add-on only lists what the answer names
        frames.append(str(path))
    return {"frames": frames, "video": None}, {}


def _with_fault(request_type: str, handler):
    def run(ctx, params, arrays):
        fault = take_fault(request_type)
        if fault:
            ctx.progress(0.05, f"about to {fault}")
            if fault == "empty_answer":
                return {}, {}
            _do(fault)
        return handler(ctx, params, arrays)

    return run


def main() -> int:
    global _stream
    sys.path.insert(0, str(TESTS))
    from motion_fakes import handle_animate

    from engine import handlers
    from engine.server import EngineServer, claim_stdio

    real = {"segment": fake_segment, "animate": handle_animate, "query4d": fake_query4d,
            "render": fake_render}
    registry = dict(handlers.HANDLERS)
    registry.update({t: _with_fault(t, real[t]) for t in REQUEST_TYPES})
    rx, _stream = claim_stdio()
    return EngineServer(rx, _stream, registry).serve()


def faulty_engine_python(folder: Path) -> str:
    """An 'interpreter' for EngineClient that runs this faulty engine (it ignores `-m engine`)."""
    from engine_python import ENGINE_PYTHON   # the interpreter with torch (the bpy-only venvs have none)

    script = folder / "faulty_python"
    script.write_text(f"#!/bin/sh\nexec {ENGINE_PYTHON} {Path(__file__).resolve()}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


if __name__ == "__main__":
    sys.exit(main())
