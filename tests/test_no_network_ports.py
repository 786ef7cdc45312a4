"""No network port is opened by the engine or the add-on: they talk over the engine's stdin/stdout only. A fresh
process registers the add-on, starts the engine and, while the engine serves requests (a scene load, a render
and a long request in flight), lists both processes' sockets from /proc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.blender,
              pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux /proc")]
ROOT = Path(__file__).resolve().parents[1]

_PROBE = textwrap.dedent("""
    import json, os, sys, time
    sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
    import bpy
    import blender_addon
    from blender_addon.engine_link.engine_client import EngineClient
    from socket_audit import network_sockets, socket_inodes
    from engine.synthetic_scene import make_random_gaussians
    from engine.ply import write_gaussians
    import numpy as np

    blender_addon.register()
    ply = os.path.join(sys.argv[2], "s.ply")
    write_gaussians(ply, make_random_gaussians(200, sh_degree=1, seed=0))
    from engine_python import ENGINE_PYTHON   # the interpreter with torch (the bpy-only venvs have none)
    client = EngineClient(python=ENGINE_PYTHON)
    pid = client.wait_ready(60)["pid"]
    seen = {"addon": [], "engine": [], "engine_socket_fds": 0}
    def look():
        seen["addon"] += network_sockets(os.getpid())
        seen["engine"] += network_sockets(pid)
        seen["engine_socket_fds"] = max(seen["engine_socket_fds"], len(socket_inodes(pid)))
    look()
    client.request("scene_info", {"ply_path": ply}, timeout=120)
    look()
    view = np.eye(4); view[2, 3] = 4.0
    K = np.array([[40.0, 0, 16], [0, 40.0, 12], [0, 0, 1]])
    client.request("render", {"objects": [{"name": "s", "ply_path": ply}], "width": 32, "height": 24,
                              "frames": [1], "out_dir": sys.argv[2], "device": "cpu", "write_video": False},
                   {"viewmats": view[None].astype(np.float32), "Ks": K[None].astype(np.float32),
                    "object_matrices": np.eye(4)[None, None]}, timeout=300)
    look()
    rid = client.submit("sleep_steps", {"steps": 20, "seconds": 0.05})
    time.sleep(0.3)
    look()                                       # while a request is in flight
    client.wait(rid, timeout=60)
    client.stop()
    print(json.dumps(seen))
""")


def test_engine_and_addon_open_no_network_port(tmp_path):
    done = subprocess.run([sys.executable, "-c", _PROBE, str(ROOT), str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "ANIMATE_GAUSSIANS_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["engine"] == [] and seen["addon"] == [], seen


def test_the_audit_sees_a_listening_port():
    import socket

    sys.path.insert(0, str(ROOT / "tests"))
    from socket_audit import network_sockets

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = f"{server.getsockname()[1]:04X}"
        assert any(port in line and "state 0A" in line for line in network_sockets(os.getpid()))   # 0A: LISTEN
