"""The engine's rasterizer backend: its hello names it (gsplat / torch CUDA / torch CPU and the device) without
importing torch, a lesser path is a warning the add-on records, and a render on CUDA without gsplat warns."""

from __future__ import annotations

import sys

import pytest

from blender_addon import notices
from blender_addon.engine_link import engine_backend
from blender_addon.engine_link.engine_client import EngineClient
from engine import backend_probe, fallbacks
from engine.errors import FallbackRefusedError

TIMEOUT = 60


@pytest.fixture(autouse=True)
def _no_notices():
    notices.clear()
    yield
    notices.clear()


@pytest.mark.parametrize("torch_version, torch_cuda, gpu, has_gsplat, rasterizer, device, code", [
    ("2.5.1+cu124", "12.4", "NVIDIA H200", True, "gsplat", "NVIDIA H200", None),
    ("2.5.1+cu124", "12.4", "NVIDIA H200", False, "torch CUDA", "NVIDIA H200", "torch_rasterizer"),
    ("2.5.1+cpu", None, "NVIDIA H200", True, "torch CPU", "cpu", "cpu_device"),
    ("2.5.1+cpu", None, None, False, "torch CPU", "cpu", None),
    ("2.5.1+cu124", "12.4", None, True, "torch CPU", "cpu", None),     # a CUDA build on a machine without a GPU
    (None, None, "NVIDIA H200", True, None, None, "cpu_device"),
])
def test_describe_every_combination(torch_version, torch_cuda, gpu, has_gsplat, rasterizer, device, code):
    found = backend_probe.describe(torch_version, torch_cuda, gpu, has_gsplat)
    assert found["rasterizer"] == rasterizer
    if device == "cpu":
        assert found["device"] == backend_probe.cpu_name() and found["device"]
    else:
        assert found["device"] == device
    assert (found["warning"] or {}).get("code") == code
    if code is not None:
        assert found["warning"]["code"] in fallbacks.CODES and found["warning"]["message"]
    if code == "torch_rasterizer":
        assert "nvcc" in found["warning"]["message"] and "NVIDIA H200" in found["warning"]["message"]


def test_hello_names_the_backend_of_this_machine():
    import torch

    client = EngineClient(python=sys.executable)
    try:
        hello = client.wait_ready(TIMEOUT)
    finally:
        client.stop()
    backend = engine_backend.from_hello(hello)
    if torch.cuda.is_available():
        assert backend["rasterizer"] in ("gsplat", "torch CUDA")
        assert backend["device"] == torch.cuda.get_device_name(0)
    else:
        assert backend == {"rasterizer": "torch CPU", "device": backend_probe.cpu_name()}
    assert client.hello == hello      # kept after the engine stopped (the batch report reads it at the end)


def test_a_hello_warning_becomes_a_notice_and_the_summary_line():
    hello = {"backend": backend_probe.describe("2.5.1+cu124", "12.4", "NVIDIA L4", False)}
    message = engine_backend.record(hello)
    assert "torch rasterizer on NVIDIA L4" in message
    assert notices.latest(engine_backend.SOURCE) == [message]
    assert notices.history()[0]["code"] == "torch_rasterizer"
    assert backend_probe.summary(engine_backend.from_hello(hello)) == "torch CUDA on NVIDIA L4"
    assert engine_backend.record({"backend": backend_probe.describe("2.5.1", "12.4", "NVIDIA L4", True)}) is None
    assert engine_backend.from_hello({"protocol": 1}) is None         # an engine too old to say


def test_render_on_cuda_without_gsplat_warns_and_can_be_refused(monkeypatch):
    import torch

    from engine.render import rasterizer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA L4")
    monkeypatch.setattr(rasterizer, "gsplat_problem", lambda: "gsplat is not installed")
    with fallbacks.collecting() as found:
        assert rasterizer.choose_backend("auto") == "cpu"
        assert rasterizer.choose_backend("auto", "cpu") == "cpu"     # pinned to the CPU: asked for, no warning
        assert rasterizer.choose_backend("cpu") == "cpu"
    assert [w["code"] for w in found] == ["torch_rasterizer"]
    assert "gsplat is not installed" in found[0]["message"] and "NVIDIA L4" in found[0]["message"]
    with fallbacks.collecting({"require": ["torch_rasterizer"]}), pytest.raises(FallbackRefusedError,
                                                                               match="--require-gsplat"):
        rasterizer.choose_backend("auto")


def test_no_warning_when_gsplat_renders(monkeypatch):
    import torch

    from engine.render import rasterizer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(rasterizer, "gsplat_problem", lambda: None)
    with fallbacks.collecting() as found:
        assert rasterizer.choose_backend("auto") == "gsplat"
    assert found == []


@pytest.mark.gpu
def test_gpu_hello_and_render_backend_agree():
    """On the device machine: hello's rasterizer is the one a render request takes."""
    import torch

    from engine.render import rasterizer

    client = EngineClient(python=sys.executable)
    try:
        backend = engine_backend.from_hello(client.wait_ready(TIMEOUT))
    finally:
        client.stop()
    assert backend["device"] == torch.cuda.get_device_name(0)
    with fallbacks.collecting() as found:
        chosen = rasterizer.choose_backend("auto", "cuda")
    assert (chosen == "gsplat") == (backend["rasterizer"] == "gsplat")
    assert (found != []) == (backend["rasterizer"] == "torch CUDA")


def test_panel_line_and_batch_value_come_from_the_shared_clients_hello(monkeypatch):
    from types import SimpleNamespace

    from blender_addon.engine_link import engine_client

    class Layout:
        def __init__(self):
            self.labels = []

        def label(self, text="", icon="NONE"):
            self.labels.append((text, icon))

    hello = {"backend": backend_probe.describe("2.5.1+cu124", "12.4", "NVIDIA L4", True)}
    monkeypatch.setattr(engine_client, "get_client", lambda: SimpleNamespace(hello=hello))
    layout = Layout()
    engine_backend.draw(layout, engine_client.current_backend())
    assert layout.labels == [("Engine: gsplat on NVIDIA L4", "CHECKMARK")]
    assert engine_client.current_backend() == {"rasterizer": "gsplat", "device": "NVIDIA L4"}
    monkeypatch.setattr(engine_client, "get_client", lambda: SimpleNamespace(hello=None))   # not started yet
    layout = Layout()
    engine_backend.draw(layout, engine_client.current_backend())
    assert layout.labels == [] and engine_client.current_backend() is None
