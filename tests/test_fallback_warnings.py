"""Fallbacks are never silent: a warning raised in the engine reaches the result, the add-on's notices (panel)
and the batch report; a request that requires the method away fails with FallbackRefusedError."""

from __future__ import annotations

import sys

import pytest

from blender_addon import notices
from blender_addon.engine_link.engine_client import EngineClient
from engine import fallbacks
from engine.errors import FallbackRefusedError

TIMEOUT = 20


@pytest.fixture
def client():
    notices.clear()
    c = EngineClient(python=sys.executable)
    yield c
    c.stop()
    notices.clear()


def test_a_warning_in_the_engine_arrives_with_the_result_and_is_recorded(client):
    params, _ = client.request("sleep_steps", {"steps": 1, "seconds": 0.0, "warn": "no depth model: colour only",
                                               "warn_code": "no_depth"}, timeout=TIMEOUT)
    assert params["warnings"] == [{"code": "no_depth", "message": "no depth model: colour only"}]
    assert notices.latest("sleep_steps") == ["no depth model: colour only"]
    assert notices.history() == [{"source": "sleep_steps", "code": "no_depth",
                                  "message": "no depth model: colour only"}]
    # the next result of the same kind replaces what the panel shows; the history (batch report) keeps it
    client.request("sleep_steps", {"steps": 1, "seconds": 0.0}, timeout=TIMEOUT)
    assert notices.latest("sleep_steps") == []
    assert len(notices.history()) == 1


def test_a_required_method_turns_the_fallback_into_an_error(client):
    with pytest.raises(FallbackRefusedError, match="no depth model.*--require-depth"):
        client.request("sleep_steps", {"steps": 1, "seconds": 0.0, "warn": "no depth model",
                                       "warn_code": "no_depth", "require": ["no_depth"]}, timeout=TIMEOUT)
    assert notices.history() == []


def test_collecting_outside_and_inside_a_request():
    fallbacks.warn("no_depth", "outside any request: only logged")        # must not raise
    with fallbacks.collecting({"require": "torch_rasterizer"}) as found:
        fallbacks.warn("no_depth", "a")
        fallbacks.warn("no_depth", "a")                                    # said once
        with pytest.raises(FallbackRefusedError):
            fallbacks.warn("torch_rasterizer", "b")
    assert found == [{"code": "no_depth", "message": "a"}]
    assert fallbacks.attach({"warnings": [{"code": "x", "message": "y"}]}, found)["warnings"] == [
        {"code": "x", "message": "y"}, {"code": "no_depth", "message": "a"}]
    assert fallbacks.warnings_of({"warnings": ["plain", {"code": "c", "message": "m"}]}) == [
        {"code": "warning", "message": "plain"}, {"code": "c", "message": "m"}]


def test_a_warning_said_every_frame_is_logged_once_a_request(capsys):
    """Lesser methods warn on every use (every frame); the engine's log gets each once a request, and once a
    process outside requests."""
    for _ in range(2):
        with fallbacks.collecting() as found:
            for _ in range(5):
                fallbacks.warn("png_eager", "per frame, inside")
        assert found == [{"code": "png_eager", "message": "per frame, inside"}]
    for _ in range(3):
        fallbacks.warn("png_eager", "per frame, outside")
    log = capsys.readouterr().err
    assert log.count("per frame, inside") == 2 and log.count("per frame, outside") == 1


def test_kernels_that_cannot_be_built_are_a_fallback_warning_in_each_request(monkeypatch):
    """Without nvcc our CUDA kernels cannot be built: every request that meets it carries a cuda_ext_reference
    warning that says what to install (the torch reference runs)."""
    import cuda_ext

    def no_compiler(*args, **kwargs):
        raise RuntimeError("nvcc not found")

    monkeypatch.setattr(cuda_ext.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda_ext, "load_extension", no_compiler)
    monkeypatch.delenv(cuda_ext.DISABLE_ENV, raising=False)
    for _ in range(2):
        with fallbacks.collecting() as found:
            assert not cuda_ext.available() and not cuda_ext.available()
        assert [w["code"] for w in found] == ["cuda_ext_reference"]
        assert "nvcc not found" in found[0]["message"] and "CUDA toolkit" in found[0]["message"]
