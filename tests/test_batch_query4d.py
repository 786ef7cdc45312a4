"""4D queries from Blender: batch --dynamic + --query (the real query4d handler in-process, oracle extractor) reports
the span; the operator highlights, marks the timeline, splits the answer into a segment that still plays, and
Clear; a failed query leaves the scene as it was; animated (non-dynamic) objects are asked per scene frame."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")   # the query4d handler runs in this process

from blender_fixtures import addon, bpy, clean_scene, datablock_snapshot  # noqa: E402, F401 (fixtures)
from segment_fakes import InProcessClient  # noqa: E402

from blender_addon import batch  # noqa: E402
from blender_addon.engine_link import engine_client  # noqa: E402
from blender_addon.io import dynamic_import  # noqa: E402
from blender_addon.query4d import query4d_request  # noqa: E402
from blender_addon.io.gaussian_layout import AXIS_CONVERSION  # noqa: E402
from engine.dynamic import make_moving_sequence, write_dynamic  # noqa: E402
from engine.query4d import handler  # noqa: E402

pytestmark = pytest.mark.blender
SMALL_FIELD = dict(views=4, width=48, height=48, scales=(0.25, 0.125, 0.0625), backend="cpu", ae_iterations=50,
                   time_stride=1)
MOVE = (4, 8)


@pytest.fixture(scope="module")
def sequence():
    return make_moving_sequence(60, timesteps=12, move_start=MOVE[0], move_end=MOVE[1])


@pytest.fixture
def npz(tmp_path, sequence):
    return write_dynamic(tmp_path / "params.npz", sequence)


@pytest.fixture
def oracle_engine(monkeypatch, tmp_path):
    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(query4d_request.EXTRACTOR_ENV, "oracle")
    monkeypatch.setattr(query4d_request, "FIELD_OPTIONS", SMALL_FIELD)
    handler._fields.clear()
    client = InProcessClient({"query4d": handler.handle_query4d})
    monkeypatch.setattr(engine_client, "get_client", lambda: client)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield client
    torch.set_num_threads(threads)
    handler._fields.clear()


def test_batch_dynamic_query_reports_the_span(clean_scene, oracle_engine, npz, sequence, capsys, tmp_path):
    report, blend = tmp_path / "report.json", tmp_path / "out.blend"
    status = batch.run(["--dynamic", str(npz), "--query", "the red sphere rolling", "--device", "cpu",
                        "--report", str(report), "--save", str(blend)])
    err = capsys.readouterr().err
    assert status == 0, err
    data = json.loads(report.read_text())
    assert data["ok"] and data["objects"][0]["gaussians"] == sequence.count
    (q,) = data["queries"]
    start = bpy.context.scene.frame_start
    a, b = q["span_frames"]
    assert abs(a - (start + MOVE[0])) <= 1 and abs(b - (start + MOVE[1])) <= 1, q
    assert q["span_timesteps"] == [a - start, b - start] and q["extractor"] == "oracle"
    obj = bpy.data.objects[q["objects"][0]]
    matched = q["gaussians"][obj.name]
    first = np.empty(len(obj.data.vertices), np.int32)
    obj.data.attributes[dynamic_import.QUERY_START_ATTRIBUTE].data.foreach_get("value", first)
    assert matched == int((first >= 0).sum()) > 0
    assert (sequence.labels[first >= 0] == 1).mean() > 0.8     # the answer is the rolling sphere
    assert len(q["counts"]) == sequence.timesteps and max(q["counts"]) > 0
    markers = sorted(m.frame for m in bpy.context.scene.timeline_markers if m.name.startswith("4D: "))
    assert markers == [a, b] and blend.exists()


def _evaluated_world(obj, frame: int) -> np.ndarray:
    bpy.context.scene.frame_set(frame)
    mesh = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    m = np.array(obj.matrix_world)
    return co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]


def test_operator_highlights_splits_and_clears(clean_scene, oracle_engine, npz, sequence):
    obj = dynamic_import.import_dynamic(npz)
    bpy.context.view_layer.objects.active = obj
    clean_scene.gaussians_query4d.text = "the red sphere rolling"
    assert bpy.ops.gaussians.query4d() == {"FINISHED"}     # execute(): waits (scripts)
    settings = clean_scene.gaussians_query4d
    assert settings.last_span and settings.last_count > 0
    assert len([m for m in clean_scene.timeline_markers if m.name.startswith("4D: ")]) == 2
    obj.modifiers["Gaussian Splats"].show_viewport = False     # read the points before the splat display
    mid = clean_scene.frame_start + (MOVE[0] + MOVE[1]) // 2
    clean_scene.frame_set(mid)
    mesh = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    sel = np.empty(len(mesh.vertices), np.float32)
    mesh.attributes["selection"].data.foreach_get("value", sel)
    assert (sel > 0).sum() > 0 and (sequence.labels[sel > 0] == 1).mean() > 0.9

    assert bpy.ops.gaussians.query4d_segment() == {"FINISHED"}
    segment = bpy.context.view_layer.objects.active
    assert segment is not obj and len(segment.data.vertices) == settings.last_count
    rows = np.empty(len(segment.data.vertices), np.int32)
    segment.data.attributes["source_index"].data.foreach_get("value", rows)
    assert not segment.modifiers["Gaussian Splats"].show_viewport   # copied from obj
    for t in (0, MOVE[1] + 2):   # the segment still plays the sequence, in place
        expected = sequence.means[t][rows] @ AXIS_CONVERSION[:3, :3].T
        np.testing.assert_allclose(_evaluated_world(segment, clean_scene.frame_start + t), expected, atol=1e-4)

    assert bpy.ops.gaussians.query4d_clear() == {"FINISHED"}
    assert not [m for m in clean_scene.timeline_markers if m.name.startswith("4D: ")]
    assert obj.modifiers.get(dynamic_import.HIGHLIGHT_MODIFIER) is None
    assert obj.data.attributes.get(dynamic_import.QUERY_START_ATTRIBUTE) is None


def test_failed_query_leaves_the_scene_as_it_was(clean_scene, oracle_engine, npz, monkeypatch):
    obj = dynamic_import.import_dynamic(npz)
    bpy.context.view_layer.objects.active = obj
    before = datablock_snapshot()
    clean_scene.gaussians_query4d.text = "   "
    with pytest.raises(RuntimeError, match="no text"):     # bpy.ops raises what the operator reports as ERROR
        bpy.ops.gaussians.query4d()
    monkeypatch.setenv(query4d_request.EXTRACTOR_ENV, "no-such-extractor")
    clean_scene.gaussians_query4d.text = "the red sphere"
    with pytest.raises(RuntimeError, match="unknown feature extractor"):
        bpy.ops.gaussians.query4d()
    assert datablock_snapshot() == before and not list(clean_scene.timeline_markers)
    assert obj.modifiers.get(dynamic_import.HIGHLIGHT_MODIFIER) is None


def test_animated_objects_are_asked_per_scene_frame(clean_scene, monkeypatch, tmp_path):
    from blender_addon.io import gaussian_object
    from engine.synthetic_scene import make_primitives_scene

    ply = make_primitives_scene(20, sh_degree=0).write(tmp_path / "prims.ply")
    obj = gaussian_object.import_ply(ply, bpy.context)
    n = len(obj.data.vertices)
    clean_scene.frame_start, clean_scene.frame_end, clean_scene.frame_step = 3, 9, 2   # frames 3, 5, 7, 9
    obj.location = (0, 0, 0)
    obj.keyframe_insert("location", frame=3)
    obj.location = (2, 0, 0)
    obj.keyframe_insert("location", frame=9)
    seen = {}

    def fake_query(ctx, params, arrays):
        seen.update(params=params, arrays=arrays)
        start, end = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
        start[:5], end[:5] = 1, 2                                  # timesteps 1–2 = frames 5–7
        return ({"span": [1, 2], "timesteps": 4, "counts": [0, 5, 5, 0], "extractor": "fake"},
                {"mask_start": start, "mask_end": end, "peak": np.ones(n, np.float32)})

    monkeypatch.setattr(engine_client, "get_client", lambda: InProcessClient({"query4d": fake_query}))
    answer = query4d_request.query_blocking(clean_scene, obj, "a thing moving", device="cpu")
    matrices = seen["arrays"]["object_matrices"]
    assert matrices.shape == (4, 1, 4, 4) and seen["params"]["objects"][0]["name"] == obj.name
    expected = []
    for frame in (3, 5, 7, 9):
        clean_scene.frame_set(frame)
        expected.append(obj.matrix_world.translation.x)
    np.testing.assert_allclose(matrices[:, 0, 0, 3], expected, atol=1e-5)
    assert expected[0] == 0.0 and 0.0 < expected[1] < expected[2] < expected[3] == 2.0
    assert answer.span_frames == (5, 7)
    assert set(answer.first_frame[0][:5]) == {5} and set(answer.last_frame[0][:5]) == {7}
    assert (answer.first_frame[0][5:] == -1).all()
