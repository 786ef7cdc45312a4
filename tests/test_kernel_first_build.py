"""The first build of our CUDA kernels for a GPU and torch (about a minute): it says so in the request's progress,
starts in the engine's idle warm-up without holding the warm-up up, a request that needs the kernels meanwhile
waits for it (saying so), and a build that died (Blender closed mid-build) does not make the next one wait
forever on torch's lock file. torch's compiler is faked: these run without CUDA."""

from __future__ import annotations

import threading
import types
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension as cpp_extension

import cuda_ext
from cuda_ext import build
from engine import request_progress, warmup


class Notes:
    def __init__(self):
        self.stages = []

    def note(self, stage):
        self.stages.append(stage)


@pytest.fixture
def fake_gpu(tmp_path, monkeypatch):
    """A GPU that has never had our kernels built, and a compiler that records its builds (build folders)."""
    compiled = types.SimpleNamespace(name="the extension")
    builds: list[str] = []
    gate = {"before_return": None}

    def fake_load(**kwargs):
        builds.append(kwargs["build_directory"])
        assert not (Path(kwargs["build_directory"]) / "lock").exists(), "torch would wait on this lock forever"
        if gate["before_return"] is not None:
            gate["before_return"]()
        return compiled

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv(cuda_ext.DISABLE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(cpp_extension, "load", fake_load)
    monkeypatch.setattr(build, "_module", None)
    monkeypatch.setattr(build, "_error", None)
    return types.SimpleNamespace(module=compiled, builds=builds, gate=gate, root=tmp_path)


def test_the_first_build_says_so_and_a_built_one_does_not(fake_gpu, monkeypatch):
    first = Notes()
    with request_progress.serving(first):
        assert build.load_extension() is fake_gpu.module
    assert first.stages == [build.FIRST_BUILD_STAGE] and len(fake_gpu.builds) == 1

    (Path(fake_gpu.builds[0]) / f"{build.EXTENSION_NAME}.so").touch()   # as the build leaves it
    monkeypatch.setattr(build, "_module", None)
    again = Notes()
    with request_progress.serving(again):
        assert build.load_extension() is fake_gpu.module
    assert again.stages == [] and len(fake_gpu.builds) == 2


def test_a_lock_file_left_by_a_build_that_died_is_removed(fake_gpu, capfd):
    kwargs = build.compile_arguments((9, 0), torch.__version__, torch.version.cuda)
    folder = Path(kwargs["build_directory"])
    folder.mkdir(parents=True)
    (folder / "lock").touch()                  # torch's baton, its process killed mid-build
    assert build.load_extension() is fake_gpu.module
    assert "left by a build that did not finish" in capfd.readouterr().err


def test_the_folder_lock_keeps_a_second_build_out_until_the_first_is_done(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    inside = threading.Event()
    release = threading.Event()

    def first():
        with build._build_folder_lock(tmp_path):
            inside.set()
            release.wait(5)

    holder = threading.Thread(target=first)
    holder.start()
    assert inside.wait(5)
    with open(tmp_path / "animate_gaussians.flock", "a") as other:   # another process's view of the folder
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        release.set()
        holder.join(5)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)              # free once the first is done


def test_the_warm_up_starts_the_first_build_without_waiting_for_it_and_a_request_waits_saying_so(fake_gpu,
                                                                                                 monkeypatch):
    monkeypatch.setattr(warmup, "_seconds", {})
    building, finish = threading.Event(), threading.Event()

    def slow_compile():
        building.set()
        assert finish.wait(10)

    fake_gpu.gate["before_return"] = slow_compile
    warmup._load_kernels()                         # returns while the build runs
    assert building.wait(10) and not build.loaded()

    request = Notes()
    got = {}

    def request_needing_kernels():
        with request_progress.serving(request):
            got["module"] = build.load_extension()

    waiting = threading.Thread(target=request_needing_kernels)
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive() and request.stages == [build.FIRST_BUILD_STAGE]   # waits, and says why
    finish.set()
    waiting.join(10)
    assert got["module"] is fake_gpu.module and len(fake_gpu.builds) == 1       # one build served both
    for builder in [t for t in threading.enumerate() if t.name == "engine-kernels-build"]:
        builder.join(10)
    assert "kernels first build" in warmup._seconds             # the warm-up's timings list it once done
