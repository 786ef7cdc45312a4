"""Every operator that changes the scene is one undo step: after it, Ctrl+Z (ed.undo) restores the scene exactly
(objects, meshes and every attribute, node groups, actions and keys, markers; tests/scene_state.py). One row per
operator in UNDO_TABLE: add a row when you add an operator (a test below fails for any unlisted operator)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from blender_fixtures import addon, bpy  # noqa: F401 (fixtures)
from engine_faults import fake_query4d
from fault_scene import make_scene
from motion_fakes import fake_engine_python
from scene_state import differences, scene_state
from segment_fakes import InProcessClient

from blender_addon.engine_link import engine_client
from blender_addon.segment import object_subsets
from engine.dynamic import make_moving_sequence, write_dynamic
from engine.synthetic_scene import make_primitives_scene

pytestmark = pytest.mark.blender


@dataclass
class Files:
    ply: object
    npz: object
    out: object
    sequence: object        # a folder of frame_####.ply files


def _select_half(scene, obj, files):
    n = len(obj.data.vertices)
    object_subsets.write_selection(obj, np.arange(n) < n // 2)
    return {}


def _keyed(scene, obj):
    obj.location = (0.0, 0.0, 0.0)
    obj.keyframe_insert("location", frame=1)
    obj.location = (1.0, 0.0, 0.0)
    obj.keyframe_insert("location", frame=3)
    scene.frame_set(1)      # the object where its keys put it, as after any frame change


def _query_setup(scene, obj, files):
    _keyed(scene, obj)
    scene.gaussians_query4d.text = "a ball rolling"
    return {}


def _queried(scene, obj, files):
    _query_setup(scene, obj, files)
    assert bpy.ops.gaussians.query4d() == {"FINISHED"}
    bpy.context.view_layer.objects.active = obj
    return {}


def _animate_setup(scene, obj, files):
    scene.gaussians_animate.prompt = "the ball rolls"
    scene.gaussians_animate.frames = 6
    return {}


@dataclass(frozen=True)
class UndoCase:
    """`setup(scene, obj, files)` prepares the scene (not part of the step) and returns the operator's kwargs."""

    operator: str
    setup: Callable = lambda scene, obj, files: {}
    changes_scene: bool = True


UNDO_TABLE = [
    UndoCase("import_ply", lambda s, o, f: {"filepath": str(f.ply)}),
    UndoCase("import_dynamic", lambda s, o, f: {"filepath": str(f.npz)}),
    UndoCase("export_ply", lambda s, o, f: {"filepath": str(f.out)}, changes_scene=False),
    UndoCase("export_splats", lambda s, o, f: {"filepath": str(f.out.with_suffix(".spz"))}, changes_scene=False),
    UndoCase("import_ply_sequence", lambda s, o, f: {"filepath": str(f.sequence / "frame_0001.ply")}),
    UndoCase("export_ply_sequence", lambda s, o, f: {"filepath": str(f.out.parent / "seq_out" / "f_####.ply")},
             changes_scene=False),
    UndoCase("segment_apply", lambda s, o, f: {**_select_half(s, o, f), "name": "half"}),
    UndoCase("segment_clear", _select_half),
    UndoCase("animate", _animate_setup),
    UndoCase("query4d", _query_setup),
    UndoCase("query4d_segment", _queried),
    UndoCase("query4d_clear", _queried),
]
# Operators that change nothing in the scene, so there is nothing to undo: they write files, or start an
# engine request whose answer arrives later as a selection preview (segment_apply makes it an edit).
NOT_EDITS = {"render_splats", "segment_click", "segment_box", "segment_text",
             "segment_train"}    # trains features in the engine's cache; the scene is not touched


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("undo")
    ply = make_primitives_scene(gaussians_per_object=40, sh_degree=1, seed=4).write(folder / "prims.ply")
    npz = write_dynamic(folder / "params.npz", make_moving_sequence(30, timesteps=4, move_start=1, move_end=3))
    sequence = folder / "sequence"
    sequence.mkdir()
    for t in range(3):
        make_primitives_scene(gaussians_per_object=20, sh_degree=1, seed=4).write(sequence / f"frame_{t + 1:04d}.ply")
    return Files(ply, npz, folder / "exported.ply", sequence)


@pytest.fixture(scope="module")
def animate_client(tmp_path_factory):
    client = engine_client.EngineClient(python=fake_engine_python(tmp_path_factory.mktemp("fake_engine")))
    yield client
    client.stop()


class ClientsByType:
    """The engine client for the operators' blocking calls: each request type goes to its own fake."""

    def __init__(self, clients: dict) -> None:
        self.clients = clients

    def request(self, request_type: str, *args, **kwargs):
        return self.clients[request_type].request(request_type, *args, **kwargs)


@pytest.fixture
def fake_engines(monkeypatch, animate_client, tmp_path):
    """animate: a real engine process with the known-motion fake; query4d: a fake answered in this process."""
    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    router = ClientsByType({"animate": animate_client, "query4d": InProcessClient({"query4d": fake_query4d})})
    monkeypatch.setattr(engine_client, "get_client", lambda: router)


@pytest.mark.parametrize("case", UNDO_TABLE, ids=[c.operator for c in UNDO_TABLE])
def test_operator_is_one_undo_step(addon, files, fake_engines, case):
    scene, obj = make_scene(files.ply)
    scene.frame_end = 6
    kwargs = case.setup(scene, obj, files)
    bpy.ops.ed.undo_push(message="start")
    # A step of our own just before the operator: if the operator pushed no step, Ctrl+Z would undo this one.
    scene.collection.objects.link(bpy.data.objects.new("undo_probe", None))
    bpy.ops.ed.undo_push(message="before")
    before = scene_state()
    operator = getattr(bpy.ops.gaussians, case.operator)
    assert operator("EXEC_DEFAULT", True, **kwargs) == {"FINISHED"}    # undo=True: as from the UI
    after = scene_state()
    changed = differences(before, after)
    assert bool(changed) == case.changes_scene, changed
    bpy.ops.ed.undo()
    left = differences(before, scene_state())
    assert left == [], "\n".join(left)
    if case.changes_scene:                                              # and exactly one step: redo brings it back
        bpy.ops.ed.redo()
        assert differences(after, scene_state()) == []


def test_every_operator_is_in_the_table(addon):
    registered = set(dir(bpy.ops.gaussians))
    assert "import_ply" in registered
    assert registered - ({c.operator for c in UNDO_TABLE} | NOT_EDITS) == set(), \
        "add these operators to UNDO_TABLE (or, if they change nothing in the scene, to NOT_EDITS)"
