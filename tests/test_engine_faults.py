"""Engine faults in every request type (segment, animate, query4d, render): the engine is killed, hangs (no
progress: the client's stall limit stops it with a clear message) or answers garbage in the middle of the
request. Each time the call raises one EngineError that says what happened, the scene is exactly as it was, and
the next request of that type, on the same client, works."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from blender_fixtures import addon, bpy  # noqa: F401 (fixtures)
from engine_faults import FAULTS, FAULTS_ENV, REQUEST_TYPES, faulty_engine_python
from fault_scene import make_scene, run_request
from scene_state import differences, scene_state

from blender_addon.engine_link import engine_client
from blender_addon.engine_link.engine_watchdog import STALL_ENV
from engine.errors import EngineError
from engine.synthetic_scene import make_primitives_scene

pytestmark = pytest.mark.blender
HANG_LIMIT_S = 1.0
MESSAGES = {"kill": "SIGKILL", "hang": "no progress", "garbage": "unreadable frame", "empty_answer": "engine"}


@pytest.fixture(scope="module")
def small_ply(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "small.ply"
    return make_primitives_scene(gaussians_per_object=60, sh_degree=1, seed=3).write(path)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """(client, fault file): every engine the client starts reads the same fault file."""
    folder = tmp_path_factory.mktemp("faulty")
    faults = folder / "faults.json"
    client = engine_client.EngineClient(python=faulty_engine_python(folder),
                                        env={**os.environ, FAULTS_ENV: str(faults)})
    yield client, faults
    client.stop()


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("request_type", REQUEST_TYPES)
def test_a_fault_leaves_the_scene_unchanged_and_the_next_request_works(addon, small_ply, faulty, tmp_path,
                                                                       monkeypatch, request_type, fault):
    faulty_client, faults = faulty
    scene, obj = make_scene(small_ply)
    faults.write_text(json.dumps({request_type: fault}))
    if fault == "hang":
        monkeypatch.setenv(STALL_ENV, str(HANG_LIMIT_S))
    before = scene_state()
    with pytest.raises(EngineError) as info:
        run_request(request_type, scene, obj, faulty_client, tmp_path / "out")
    message = str(info.value)
    assert MESSAGES[fault] in message, message
    if fault == "hang":
        assert request_type in message and "raise 'Hung After'" in info.value.hint
    assert differences(before, scene_state()) == []
    assert json.loads(faults.read_text()) == {}          # the fault was used: the retry runs the real handler
    monkeypatch.delenv(STALL_ENV, raising=False)
    answer = run_request(request_type, bpy.context.scene, bpy.data.objects[obj.name], faulty_client, tmp_path / "out")
    assert answer is not None
    if request_type == "render":
        assert [Path(f).name for f in answer] == ["frame_0001.png", "frame_0002.png", "frame_0003.png"]
