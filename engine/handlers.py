"""Request type → handler: the engine's one registry, the diagnostic handlers (echo, sleep_steps, info), and the
preload an import sends so that later requests find the engine warm and the scene loaded.

A handler is `handler(ctx, params, arrays) -> (result_params, result_arrays)`; `ctx` is the server's
RequestContext (`progress(fraction, stage)`, `check_cancelled()`). Handlers that need torch are named as
"module:function" strings and imported on first use, so the engine says hello without importing torch.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any, Callable, Mapping

import numpy as np

from engine.errors import EngineError

Handler = Callable[[Any, dict, dict], "tuple[dict, dict[str, np.ndarray]]"]


def handle_echo(ctx, params: dict, arrays: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Diagnostic: return the params and arrays unchanged (checks the pipe and measures its speed)."""
    return dict(params), dict(arrays)


def handle_sleep_steps(ctx, params: dict, arrays: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Diagnostic: `steps` steps of `seconds` each with progress after every step (checks progress and cancel)."""
    if params.get("print"):  # what a chatty library does: neither may reach the protocol's stream
        print(params["print"])
        os.write(1, (params["print"] + "\n").encode())
    steps = int(params.get("steps", 10))
    seconds = float(params.get("seconds", 0.01))
    for i in range(steps):
        ctx.check_cancelled()
        time.sleep(seconds)
        ctx.progress((i + 1) / steps, f"step {i + 1} of {steps}")
    if params.get("warn"):  # what a fallback does (checks that warnings reach the add-on, and --require-…)
        from engine import fallbacks
        fallbacks.warn(str(params.get("warn_code", "diagnostic")), str(params["warn"]))
    if params.get("fail"):
        raise RuntimeError(str(params["fail"]))
    if params.get("exit_code") is not None:  # simulates the engine dying mid-request (tests)
        os._exit(int(params["exit_code"]))
    return {"steps": steps}, {}


def handle_info(ctx, params: dict, arrays: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Diagnostic: import torch and say what it can run on."""
    import torch

    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": cuda,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "threads": torch.get_num_threads()}, {}


def handle_warm_up(ctx, params: dict, arrays: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Diagnostic: wait for the start-up warm-up (engine/warmup.py) and say how long each step took."""
    from engine import warmup

    warmup.start()        # now, if the engine was never idle long enough to start it
    seconds = warmup.wait(float(params.get("timeout", 300)))
    return {"warm": seconds is not None, "seconds": seconds or {}}, {}


def handle_scene_info(ctx, params: dict, arrays: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Load a scene through the scene cache (warms it) and report its size and content hash."""
    from engine import scene_cache

    scene = scene_cache.load_scene(params["ply_path"])
    g = scene.gaussians
    return {"hash": scene.hash, "count": g.count, "sh_degree": g.sh_degree}, {}


def handle_preload(ctx, params: dict, arrays: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Get ready for the requests that follow an import: start the warm-up (torch, CUDA, gsplat, the render
    job) now, read the scenes of `objects` [{name, ply_path}] into the scene cache meanwhile (numpy only), and
    once warm put their Gaussians (arrays indices_<j>: the rows object j holds) on `device` (auto|cpu|cuda),
    where a render request of the same objects and rows finds them."""
    from engine import scene_cache, warmup

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    warmup.start()
    objects = list(params.get("objects", []))
    for i, obj in enumerate(objects):
        ctx.progress(0.5 * i / max(1, len(objects)), f"reading {obj.get('name', 'the scene')}")
        scene_cache.load_scene(obj["ply_path"])
    timings["read_s"] = round(time.perf_counter() - clock, 4)
    ctx.progress(0.5, "loading torch")
    clock = time.perf_counter()
    warm = warmup.wait(float(params.get("timeout", 300)))
    timings["warm_wait_s"] = round(time.perf_counter() - clock, 4)
    device = "none"
    if objects:
        from engine.render.job import cached_device_gaussians, resolve_device

        ctx.progress(0.8, "uploading Gaussians")
        clock = time.perf_counter()
        target = resolve_device(str(params.get("device", "auto")))
        cached_device_gaussians(ctx, objects, target,
                                {j: arrays[f"indices_{j}"] for j in range(len(objects)) if f"indices_{j}" in arrays})
        device = str(target)
        timings["upload_s"] = round(time.perf_counter() - clock, 4)
    return {"warm": warm is not None, "device": device, "seconds": timings}, {}


HANDLERS: dict[str, Handler | str] = {
    "echo": handle_echo,
    "sleep_steps": handle_sleep_steps,
    "info": handle_info,
    "warm_up": handle_warm_up,
    "scene_info": handle_scene_info,
    "preload": handle_preload,
    "render": "engine.render.job:handle_render",
    "query4d": "engine.query4d.handler:handle_query4d",
    "segment": "engine.segment.handler:handle_segment",
    "segment_train": "engine.segment.saga.training:handle_segment_train",
    "animate": "engine.motion.handler:handle_animate",
}


def resolve(request_type: str, registry: Mapping[str, Handler | str] = HANDLERS) -> Handler:
    """The handler for a request type, importing it on first use."""
    entry = registry.get(request_type)
    if entry is None:
        raise EngineError(f"the engine has no request type {request_type!r} (it knows {sorted(registry)})",
                          "the add-on and the engine are from different versions: reinstall the engine")
    if callable(entry):
        return entry
    module_name, _, function_name = entry.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineError(f"the engine cannot load the {request_type!r} handler: {exc}",
                          "install the engine's requirements (python build_addon.py --engine-env DIR)") from exc
    return getattr(module, function_name)
