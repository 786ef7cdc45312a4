"""The model registry: cache hits, user-given paths, downloads with progress and checksums, offline errors.
Downloads come from a local http server on 127.0.0.1 (no test touches the internet)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from engine.models import registry
from engine.models.registry import ModelEntry, ModelUnavailableError

PAYLOAD = bytes(range(256)) * 4096   # 1 MiB


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "weights.bin").write_bytes(PAYLOAD)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.RequestHandlerClass.log_message = lambda *a, **k: None
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path / "models"))
    monkeypatch.delenv(registry.OFFLINE_ENV, raising=False)
    saved = dict(registry.REGISTRY)
    yield tmp_path / "models"
    registry.REGISTRY.clear()
    registry.REGISTRY.update(saved)


def _entry(url: str, sha: str) -> ModelEntry:
    return registry.register(ModelEntry(id="tiny-test", kind="test", source="url", location=f"{url}/weights.bin",
                                        size_bytes=len(PAYLOAD), licence="MIT", description="test weights",
                                        sha256=sha))


def test_download_checks_sha_reports_progress_and_then_uses_the_cache(server, models):
    _entry(server, hashlib.sha256(PAYLOAD).hexdigest())
    assert not registry.is_available("tiny-test")
    seen = []
    path = registry.fetch("tiny-test", progress=lambda f, text: seen.append(f))
    assert path.read_bytes() == PAYLOAD and path.parent == models / "tiny-test"
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    assert registry.is_available("tiny-test")
    assert registry.fetch("tiny-test", allow_download=False) == path      # no second download
    assert [r["available"] for r in registry.status("test")] == [True]


def test_corrupt_download_is_removed_and_named(server, models):
    _entry(server, "0" * 64)
    with pytest.raises(ModelUnavailableError, match="corrupt"):
        registry.fetch("tiny-test")
    assert not any((models / "tiny-test").iterdir())


def test_offline_missing_model_says_where_to_put_it(server, models, monkeypatch):
    _entry(server, "")
    monkeypatch.setenv(registry.OFFLINE_ENV, "1")
    with pytest.raises(ModelUnavailableError) as info:
        registry.fetch("tiny-test")
    assert "ANIMATE_GAUSSIANS_MODEL_TINY_TEST" in info.value.user_message()


def test_unreachable_source_is_a_clear_error(models):
    registry.register(ModelEntry(id="tiny-test", kind="test", source="url", location="http://127.0.0.1:9/x.bin",
                                 size_bytes=1, licence="MIT", description="test"))
    with pytest.raises(ModelUnavailableError, match="cannot download tiny-test"):
        registry.fetch("tiny-test", timeout=2)


def test_user_given_path_wins_and_a_wrong_one_is_named(server, models, monkeypatch, tmp_path):
    entry = _entry(server, "")
    own = tmp_path / "mine.bin"
    own.write_bytes(b"x")
    monkeypatch.setenv(entry.env_var, str(own))
    assert registry.fetch("tiny-test", allow_download=False) == own
    monkeypatch.setenv(entry.env_var, str(tmp_path / "missing.bin"))
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        registry.fetch("tiny-test")


def test_unknown_model_and_conflicting_registration(models):
    with pytest.raises(ModelUnavailableError, match="unknown model"):
        registry.model_entry("nope")
    a = ModelEntry(id="dup", kind="test", source="url", location="http://127.0.0.1/a", size_bytes=1,
                   licence="MIT", description="a")
    registry.register(a)
    registry.register(a)  # the same entry twice is fine (module re-import)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(ModelEntry(**{**a.__dict__, "location": "http://127.0.0.1/b"}))
