"""Just-in-time build of our CUDA extension with torch.utils.cpp_extension.load, cached on disk.

The first use compiles for the present GPU (about a minute); later processes load the cached library.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Iterator

from engine import request_progress

EXTENSION_NAME = "animate_gaussians_cuda"
CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = ("bindings.cpp", "transform_gaussians.cu", "accumulate_contributions.cu", "lerf_relevancy.cu",
           "grid_knn.cu", "composite_pixel.cu")
# No --use_fast_math: the kernels are fused multiply-adds only, so it would buy nothing and would flush
# denormal SH coefficients to zero.
CXX_FLAGS = ("-O3",)
CUDA_FLAGS = ("-O3", "-lineinfo")

FIRST_BUILD_STAGE = "compiling our CUDA kernels for this GPU (once; about a minute)"

_lock = threading.Lock()
_module: ModuleType | None = None
_error: Exception | None = None
_building = False      # a first build is compiling (under _lock)


def build_root() -> Path:
    """Where builds live: $TORCH_EXTENSIONS_DIR, else ~/.cache/animate_gaussians/torch_extensions."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    return Path(root) if root else Path.home() / ".cache" / "animate_gaussians" / "torch_extensions"


def arch_list(capability: tuple[int, int] | None) -> str:
    """TORCH_CUDA_ARCH_LIST to build for: the user's setting, else the present GPU's compute capability."""
    configured = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if configured:
        return configured
    if capability is None:
        raise RuntimeError("no CUDA device to build for; set TORCH_CUDA_ARCH_LIST (e.g. 9.0)")
    return f"{capability[0]}.{capability[1]}"


def compile_arguments(capability: tuple[int, int] | None, torch_version: str, cuda_version: str | None) -> dict:
    """Keyword arguments for torch.utils.cpp_extension.load, plus 'arch_list' (set in the environment).

    The build folder is named after torch, CUDA and the target arch, so an upgrade or another GPU gets a
    fresh build instead of loading a library built for something else.
    """
    arch = arch_list(capability)
    tag = "_".join([
        f"torch{torch_version.split('+')[0]}",
        f"cu{(cuda_version or 'none').replace('.', '')}",
        "sm" + "-".join(a.replace(".", "").replace("+PTX", "ptx") for a in arch.replace(";", " ").split()),
    ])
    return {
        "name": EXTENSION_NAME,
        "sources": [str(CSRC / s) for s in SOURCES],
        "extra_cflags": list(CXX_FLAGS),
        "extra_cuda_cflags": list(CUDA_FLAGS),
        "extra_include_paths": [str(CSRC)],
        "build_directory": str(build_root() / f"{EXTENSION_NAME}_{tag}"),
        "arch_list": arch,
    }


def load_extension(verbose: bool = False) -> ModuleType:
    """Build (first time) and import the extension; raises the build's error, remembered for later calls."""
    global _module, _error, _building
    if not _lock.acquire(blocking=False):
        if _building:      # another thread (the engine's warm-up) is compiling: this request waits for it
            request_progress.say(FIRST_BUILD_STAGE)
        _lock.acquire()
    try:
        if _module is not None:
            return _module
        if _error is not None:
            raise _error
        try:
            import torch
            from torch.utils.cpp_extension import load

            if not torch.cuda.is_available():
                raise RuntimeError("CUDA is not available")
            kwargs = compile_arguments(torch.cuda.get_device_capability(), torch.__version__, torch.version.cuda)
            arch = kwargs.pop("arch_list")
            _building = not _library_in(kwargs["build_directory"])
            if _building:
                print(f"engine: {FIRST_BUILD_STAGE} in {kwargs['build_directory']}", file=sys.stderr, flush=True)
                request_progress.say(FIRST_BUILD_STAGE)
            previous = os.environ.get("TORCH_CUDA_ARCH_LIST")
            os.environ["TORCH_CUDA_ARCH_LIST"] = arch  # torch reads the target arch from here
            try:
                with _build_folder_lock(Path(kwargs["build_directory"])):
                    _module = load(verbose=verbose, **kwargs)
            finally:
                if previous is None:
                    os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
                else:
                    os.environ["TORCH_CUDA_ARCH_LIST"] = previous
        except Exception as exc:  # noqa: BLE001 - any build failure means: use the reference
            _error = exc
            raise
        return _module
    finally:
        _building = False
        _lock.release()


@contextmanager
def _build_folder_lock(folder: Path) -> Iterator[None]:
    """Hold an OS lock on the build folder while torch builds or loads there.

    torch guards a build with a `lock` file that it deletes when done; a process that dies mid-build (Blender
    closed during the first minute) leaves the file behind, and every later build waits on it forever. The OS
    frees our flock when its holder dies, so once we hold it any `lock` file there is such a leftover, and goes.
    Where there is no fcntl (Windows) or the folder is read-only, torch's file alone guards the build.
    """
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
        handle = open(folder / "animate_gaussians.flock", "a")
    except (ImportError, OSError):     # no fcntl, or a folder we may read but not write: as torch alone does
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            leftover = folder / "lock"
            if leftover.exists():
                print(f"engine: removing {leftover}, left by a build that did not finish", file=sys.stderr,
                      flush=True)
                leftover.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def loaded() -> bool:
    """True when this process has the extension loaded already."""
    return _module is not None


def is_built() -> bool:
    """True when the build for this machine's GPU and torch is on disk, so loading it compiles nothing (the
    engine's warm-up loads it only then)."""
    import torch

    if not torch.cuda.is_available():
        return False
    kwargs = compile_arguments(torch.cuda.get_device_capability(), torch.__version__, torch.version.cuda)
    return _library_in(kwargs["build_directory"])


def _library_in(build_directory: str) -> bool:
    return (Path(build_directory) / f"{EXTENSION_NAME}.so").is_file()
