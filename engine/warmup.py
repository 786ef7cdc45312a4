"""The engine's start-up warm-up: once the engine has been idle for IDLE_S after hello (or after its last request),
a background thread imports torch, starts CUDA, loads gsplat, the render job and our CUDA kernels (their first
build on a thread of its own), and draws one tiny frame, so a request that comes later finds all of that done. A
request that comes during it waits on the same imports; one already waiting at hello runs first (importing what
it needs itself), since an import holds Python's lock while it loads torch's libraries.

Set ANIMATE_GAUSSIANS_WARMUP=0 to skip it (the engine then pays these costs on its first request).
"""

from __future__ import annotations

import os
import sys
import threading
import time

WARMUP_ENV = "ANIMATE_GAUSSIANS_WARMUP"
IDLE_S = 0.25     # how long the engine waits for a request before it warms up

_done = threading.Event()
_thread: threading.Thread | None = None
_seconds: dict[str, float] = {}


def _step(name: str, fn) -> None:
    start = time.perf_counter()
    fn()
    _seconds[name] = round(time.perf_counter() - start, 4)


def _import_torch() -> None:
    import torch  # noqa: F401


def _start_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")


def _load_render_job() -> None:
    import engine.render.job  # noqa: F401  (the render handler, its encoders and posing)
    from engine.render.rasterizer import gsplat_available

    gsplat_available()    # imports gsplat where it is installed


def _first_frame() -> None:
    """One 32×32 frame through gsplat, the PNG encoder and the video conversion: their kernels load now."""
    import torch

    from engine.render.png import encode_png
    from engine.render.rasterizer import gsplat_available, render_gaussians
    from engine.render.video import yuv420p_frame

    if not gsplat_available():
        return
    device = torch.device("cuda")
    with torch.no_grad():
        out = render_gaussians(torch.tensor([[0.0, 0.0, 2.0]], device=device),
                               torch.tensor([[1.0, 0.0, 0.0, 0.0]], device=device),
                               torch.full((1, 3), 0.2, device=device), torch.ones(1, device=device),
                               torch.full((1, 1, 3), 0.5, device=device), torch.eye(4, device=device),
                               torch.tensor([[32.0, 0, 16], [0, 32.0, 16], [0, 0, 1]], device=device), 32, 32,
                               backend="gsplat")
        rgb8 = (out.rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        encode_png(rgb8).deflate.cpu()
        yuv420p_frame(rgb8).cpu()


def _load_kernels() -> None:
    """Load our CUDA kernels; their first build for this GPU and torch (about a minute) starts on a thread of its
    own, so the warm-up (and a preload waiting for it) is done without it. A request that needs the kernels
    meanwhile waits for that build, its progress saying so; a SAGA click takes the path that needs none."""
    import torch

    import cuda_ext
    from cuda_ext.build import is_built, load_extension

    if not torch.cuda.is_available() or os.environ.get(cuda_ext.DISABLE_ENV) == "1":
        return
    if is_built():
        load_extension()
        return

    def first_build() -> None:
        start = time.perf_counter()
        if cuda_ext.available():      # a failure is remembered and warned about in the requests that meet it
            _seconds["kernels first build"] = round(time.perf_counter() - start, 4)

    threading.Thread(target=first_build, name="engine-kernels-build", daemon=True).start()


def warm_up() -> None:
    """Run every step (each timed into seconds()); a failing step is logged and the rest still run: the
    request that needs it reports the error properly."""
    try:
        for name, fn in (("import torch", _import_torch), ("CUDA", _start_cuda), ("render job", _load_render_job),
                         ("first frame", _first_frame), ("kernels", _load_kernels)):
            try:
                _step(name, fn)
            except Exception as exc:  # noqa: BLE001 - the request that needs it raises it again
                print(f"engine: warm-up step {name!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr,
                      flush=True)
    finally:
        _done.set()


def start() -> threading.Thread | None:
    """Start the warm-up thread (once), unless ANIMATE_GAUSSIANS_WARMUP is 0."""
    global _thread
    if _thread is None and os.environ.get(WARMUP_ENV, "1") != "0":
        _thread = threading.Thread(target=warm_up, name="engine-warmup", daemon=True)
        _thread.start()
    return _thread


def waiting() -> bool:
    """True while the warm-up is enabled and has not started yet."""
    return _thread is None and os.environ.get(WARMUP_ENV, "1") != "0"


def running() -> bool:
    return _thread is not None and _thread.is_alive()


def wait(timeout: float | None = None) -> dict[str, float] | None:
    """Seconds per warm-up step once it is done (None: it was not started or is still running at timeout)."""
    if _thread is None or not _done.wait(timeout):
        return None
    return dict(_seconds)
