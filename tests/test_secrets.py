"""API keys never end up in a .blend, a batch report, a log line or an exception message. With a fake key set in
the preferences (what they hand the animate request) and the environment, the test saves a .blend, runs the
batch CLI against a local fake hosted API that rejects the key and echoes it back (the worst case), and searches
every byte written: files, stderr, the add-on's and the engine's log lines, and the error."""

from __future__ import annotations

import json
import logging
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading

import pytest
from blender_fixtures import addon, bpy  # noqa: F401 (fixtures)
from fault_scene import make_scene

from blender_addon import batch
from blender_addon.animate import animate_ops
from blender_addon.engine_link import engine_client
from engine.errors import AnimateGaussiansError
from engine.synthetic_scene import make_primitives_scene

pytestmark = pytest.mark.blender
KEY = "key_TEST_SECRET_7f3a9c51d2e84b06"


class EchoingApi:
    """A hosted API on 127.0.0.1 that answers every call 401 and echoes the credentials it got."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reject(self):
                auth = self.headers.get("Authorization", "")
                api.authorizations.append(auth)
                body = json.dumps({"error": f"invalid credentials {auth}", "key": auth.split()[-1] if auth else ""})
                data = body.encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("WWW-Authenticate", f"Bearer error=\"{auth}\"")
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._reject()

            do_GET = _reject

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api():
    fake = EchoingApi()
    yield fake
    fake.close()


@pytest.fixture
def key_everywhere(monkeypatch, api, tmp_path):
    """The key in the preferences (as generator_credentials hands it to the request) and in the environment."""
    monkeypatch.setattr(animate_ops, "generator_credentials",
                        lambda generator: {"api_key": KEY, "base_url": api.url} if generator == "runway" else {})
    monkeypatch.setenv("RUNWAY_API_KEY", KEY)
    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    engine_client.shutdown_client()          # the next engine starts with this environment
    yield
    engine_client.shutdown_client()


def files_containing(folder, secret: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret in p.read_bytes()]


def test_save_report_and_a_rejected_key_never_write_the_key(addon, api, key_everywhere, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    ply = make_primitives_scene(gaussians_per_object=40, sh_degree=1, seed=6).write(tmp_path / "prims.ply")
    scene, obj = make_scene(ply)
    name = obj.name
    bpy.context.scene.gaussians_animate.prompt = "the ball rolls"     # the panel's settings, saved with the file
    bpy.context.scene.gaussians_animate.generator = "RUNWAY"
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))

    out, report = tmp_path / "out.blend", tmp_path / "report.json"
    status = batch.run(["--blend", str(blend), "--animate", "the ball rolls", "--target", name,
                        "--generator", "runway", "--frames", "6", "--device", "cpu", "--save", str(out),
                        "--report", str(report)])
    err = capsys.readouterr().err
    assert status != 0 and not out.exists()
    assert api.authorizations and all(KEY in a for a in api.authorizations)   # the key really was used
    assert "key" in err.lower().splitlines()[-1]                              # the error says what to check
    errors = json.loads(report.read_text())["errors"]
    assert errors

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    with pytest.raises(AnimateGaussiansError) as info:                       # the same, through the add-on's call
        animate_ops.animate_blocking(bpy.context.scene, bpy.data.objects[name],
                                     animate_ops.AnimateOptions(prompt="the ball rolls", generator="runway",
                                                                frames=6, device="cpu"))
    error_text = "".join(traceback.format_exception(info.value)) + info.value.hint + repr(info.value)
    engine_log = "\n".join(engine_client.get_client().stderr_tail)

    assert KEY not in error_text
    assert KEY not in err
    assert KEY not in caplog.text
    assert engine_log and KEY not in engine_log
    assert files_containing(tmp_path, KEY.encode()) == []
