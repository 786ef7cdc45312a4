"""Which rasterizer the engine will render with, and on what device, said in its hello.

The hello must not import torch (it takes seconds; tests hold the engine to it), so this asks cheaper sources:
torch's CUDA build from torch/version.py (server.torch_version_without_import), the GPU from the CUDA driver
itself through ctypes (cuInit, cuDeviceGetName: milliseconds, no torch), and gsplat from its import spec. The
render request checks again for real (render/rasterizer.py) and warns there too if it falls back.

Torch-free: the add-on imports the names below.
"""

from __future__ import annotations

import ctypes
import importlib.util
import platform
import sys
from typing import Any

GSPLAT = "gsplat"
TORCH_CUDA = "torch CUDA"
TORCH_CPU = "torch CPU"
RASTERIZERS = (GSPLAT, TORCH_CUDA, TORCH_CPU)

GSPLAT_NEEDS = ("install gsplat into the engine environment (`python build_addon.py --engine-env DIR` does it "
                "where CUDA is present); gsplat compiles its CUDA code on first use, which needs nvcc (the CUDA "
                "toolkit) matching torch's CUDA, or install a prebuilt gsplat wheel for your torch and CUDA")


def _driver_library() -> ctypes.CDLL | None:
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def cuda_device_name() -> str | None:
    """The first visible CUDA GPU's name (honours CUDA_VISIBLE_DEVICES), or None when there is none."""
    lib = _driver_library()
    if lib is None:
        return None
    try:
        if lib.cuInit(0) != 0:
            return None
        count = ctypes.c_int(0)
        if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
            return None
        device = ctypes.c_int(0)
        if lib.cuDeviceGet(ctypes.byref(device), 0) != 0:
            return None
        name = ctypes.create_string_buffer(256)
        if lib.cuDeviceGetName(name, 256, device) != 0:
            return None
        return name.value.decode(errors="replace") or "CUDA GPU"
    except (AttributeError, OSError):
        return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def gsplat_installed() -> bool:
    return importlib.util.find_spec("gsplat") is not None


def describe(torch_version: str | None, torch_cuda: str | None, gpu: str | None,
             has_gsplat: bool) -> dict[str, Any]:
    """The rasterizer and device for these facts: {"rasterizer", "device", "warning": {code, message} | None}.

    Pure, so every combination is tested without the hardware. A lesser path where a better one exists is a
    warning with a code of engine.fallbacks.CODES (the add-on shows it; nothing degrades silently)."""
    if torch_version is None:
        return {"rasterizer": None, "device": None,
                "warning": {"code": "cpu_device", "message": "the engine environment has no torch: the engine "
                            "cannot render; create it with `python build_addon.py --engine-env DIR`"}}
    if gpu is not None and torch_cuda is None:
        return {"rasterizer": TORCH_CPU, "device": cpu_name(),
                "warning": {"code": "cpu_device", "message": f"{gpu} is present but the engine's torch "
                            f"{torch_version} is a CPU-only build: rendering runs on the CPU; install torch built "
                            "for CUDA (`python build_addon.py --engine-env DIR` picks it)"}}
    if gpu is None:
        return {"rasterizer": TORCH_CPU, "device": cpu_name(), "warning": None}
    if has_gsplat:
        return {"rasterizer": GSPLAT, "device": gpu, "warning": None}
    return {"rasterizer": TORCH_CUDA, "device": gpu,
            "warning": {"code": "torch_rasterizer", "message": f"gsplat is not installed: splats render with the "
                        f"slower torch rasterizer on {gpu}; {GSPLAT_NEEDS}"}}


def probe(torch_version: str | None, torch_cuda: str | None) -> dict[str, Any]:
    """describe() for this machine and this engine environment."""
    return describe(torch_version, torch_cuda, cuda_device_name(), gsplat_installed())


def summary(backend: dict[str, Any] | None) -> str:
    """One line for the panel and logs: "gsplat on NVIDIA H200"."""
    if not backend or not backend.get("rasterizer"):
        return "no rasterizer (no torch in the engine environment)"
    return f"{backend['rasterizer']} on {backend.get('device') or 'unknown device'}"
