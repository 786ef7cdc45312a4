"""Segmentation in Blender (bpy module): object subsets, the highlight, Apply's split (exact, undoable, all or
nothing), export and render of segments, the viewport camera, and the live session against a stand-in engine."""

from __future__ import annotations

import numpy as np
import pytest
from blender_fixtures import addon, bpy, clean_scene, datablock_snapshot  # noqa: F401 (fixtures)
from segment_fakes import InProcessClient, label_segment

from blender_addon.io import gaussian_object
from blender_addon.segment import object_subsets, segment_ops, segment_query, selection
from blender_addon.render import camera_data
from blender_addon.render.camera_data import camera_from_blender
from blender_addon.io.gaussian_layout import FILE_TO_LOCAL_KEY, SELECTION_ATTRIBUTE, SOURCE_INDEX_ATTRIBUTE
from blender_addon.render.viewport_camera import opengl_view_to_opencv
from engine.errors import AnimateGaussiansError, CameraError
from engine.ply import read_header, read_structured
from engine.synthetic_scene import make_primitives_scene

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def labelled_ply(tmp_path_factory):
    path = tmp_path_factory.mktemp("segment_blender") / "prims.ply"
    return make_primitives_scene(gaussians_per_object=150, sh_degree=2, seed=5).write(path, with_labels=True)


@pytest.fixture
def scene_obj(clean_scene, labelled_ply):
    obj = gaussian_object.import_ply(labelled_ply)
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    clean_scene.collection.objects.link(cam)
    cam.location = (0.0, -6.0, 2.5)
    cam.rotation_euler = (np.radians(70.0), 0.0, 0.0)
    clean_scene.camera = cam
    clean_scene.render.resolution_x, clean_scene.render.resolution_y = 80, 60
    clean_scene.render.resolution_percentage = 100
    return obj


@pytest.fixture
def fake_session():
    client = InProcessClient({"segment": label_segment})
    session = segment_query.SegmentSession(client_factory=lambda: client)
    segment_query.replace_session(session)
    yield session, client
    segment_query.replace_session(None)


def _int_attr(obj, name):
    out = np.empty(len(obj.data.vertices), np.int32)
    obj.data.attributes[name].data.foreach_get("value", out)
    return out


def _all_attributes(obj):
    return {k: v for k, (_, v) in object_subsets.read_point_attributes(obj.data).items()}


def _file_positions(obj):
    local = _all_attributes(obj)["position"].astype(np.float64)
    inv = np.linalg.inv(gaussian_object.file_to_local(obj))
    return local @ inv[:3, :3].T + inv[:3, 3]


def _project(obj, indices, scene):
    """Pixel of the mean of these Gaussians (file rows) in the scene camera's image."""
    from engine.cameras import project_points
    m = gaussian_object.file_to_world(obj)
    p = _file_positions(obj)[indices].mean(axis=0)
    viewmat, K, _, _ = camera_from_blender(scene, scene.camera, 80, 60)
    uv, _ = project_points((m[:3, :3] @ p + m[:3, 3])[None], viewmat, K)
    return uv[0]


def test_import_marks_the_object_as_holding_its_whole_file(scene_obj):
    n = gaussian_object.gaussian_count(scene_obj)
    np.testing.assert_array_equal(_int_attr(scene_obj, SOURCE_INDEX_ATTRIBUTE), np.arange(n))
    np.testing.assert_array_equal(gaussian_object.file_to_local(scene_obj), np.eye(4))
    np.testing.assert_allclose(gaussian_object.file_to_world(scene_obj), np.array(scene_obj.matrix_world))


def test_split_moves_every_attribute_of_every_gaussian_into_exactly_one_object(scene_obj):
    before = _all_attributes(scene_obj)
    world_before = _file_positions(scene_obj) @ np.array(scene_obj.matrix_world)[:3, :3].T \
        + np.array(scene_obj.matrix_world)[:3, 3]
    labels = _int_attr(scene_obj, "ply_label")
    mask = labels == 2
    segment = object_subsets.split_selected(scene_obj, mask, "box_segment")
    kept, moved = _all_attributes(scene_obj), _all_attributes(segment)
    assert set(kept) == set(moved) == set(before)
    src_kept, src_moved = kept[SOURCE_INDEX_ATTRIBUTE][:, 0], moved[SOURCE_INDEX_ATTRIBUTE][:, 0]
    assert np.array_equal(np.sort(np.concatenate([src_kept, src_moved])), np.arange(len(mask)))
    np.testing.assert_array_equal(src_moved, np.flatnonzero(mask))
    for name, values in before.items():
        if name in ("position", "segment"):
            continue
        np.testing.assert_array_equal(kept[name], values[src_kept], err_msg=name)
        np.testing.assert_array_equal(moved[name], values[src_moved], err_msg=name)
    np.testing.assert_array_equal(kept["position"], before["position"][src_kept])
    assert set(moved["segment"][:, 0]) == {1} and set(kept["segment"][:, 0]) == {0}
    # the segment's Gaussians stay where they were in the world; its origin is at their bottom centre
    m = gaussian_object.file_to_world(segment)
    world = _file_positions(segment) @ m[:3, :3].T + m[:3, 3]
    np.testing.assert_allclose(world, world_before[src_moved], atol=1e-5)
    origin = np.array(segment.matrix_world)[:3, 3]
    assert origin[2] == pytest.approx(world[:, 2].min(), abs=1e-5)
    assert origin[0] == pytest.approx((world[:, 0].min() + world[:, 0].max()) / 2, abs=1e-5)
    assert segment[FILE_TO_LOCAL_KEY] is not None and segment.name == "box_segment"
    # a second split of the remainder gets the next id
    again = object_subsets.split_selected(scene_obj, _int_attr(scene_obj, "ply_label") == 1, "ball")
    assert set(_int_attr(again, "segment")) == {2}


def test_segments_export_their_gaussians_in_the_file_frame(scene_obj, labelled_ply, tmp_path):
    source = read_structured(read_header(labelled_ply))
    segment = object_subsets.split_selected(scene_obj, _int_attr(scene_obj, "ply_label") == 3, "blue")
    for obj in (segment, scene_obj):
        out = gaussian_object.export_ply(obj, tmp_path / f"{obj.name}.ply")
        rows = read_structured(read_header(out))
        expected = source[_int_attr(obj, SOURCE_INDEX_ATTRIBUTE)]
        assert rows.dtype == expected.dtype
        for name in rows.dtype.names:
            if name in "xyz":
                np.testing.assert_allclose(rows[name], expected[name], atol=2e-6)
            else:
                assert rows[name].tobytes() == expected[name].tobytes(), name
    # the remainder was not moved: it stays bit for bit
    rows = read_structured(read_header(tmp_path / f"{scene_obj.name}.ply"))
    assert rows.tobytes() == source[_int_attr(scene_obj, SOURCE_INDEX_ATTRIBUTE)].tobytes()


def test_a_moved_segment_exports_moved(scene_obj, labelled_ply, tmp_path):
    segment = object_subsets.split_selected(scene_obj, _int_attr(scene_obj, "ply_label") == 1, "red")
    segment.location.z += 1.0   # Blender up = file −y
    bpy.context.view_layer.update()
    rows = read_structured(read_header(gaussian_object.export_ply(segment, tmp_path / "moved.ply")))
    expected = read_structured(read_header(labelled_ply))[_int_attr(segment, SOURCE_INDEX_ATTRIBUTE)]
    np.testing.assert_allclose(rows["y"], expected["y"] - 1.0, atol=1e-5)
    np.testing.assert_allclose(rows["x"], expected["x"], atol=1e-5)


def test_apply_is_one_undo_step(scene_obj):
    labels = _int_attr(scene_obj, "ply_label")
    object_subsets.write_selection(scene_obj, labels == 1)
    before = _all_attributes(scene_obj)
    bpy.ops.ed.undo_push(message="start")
    bpy.ops.ed.undo_push(message="selected")
    assert bpy.ops.gaussians.segment_apply(name="red") == {"FINISHED"}
    assert bpy.data.objects["red"] and len(bpy.data.objects[scene_obj.name].data.vertices) == (labels != 1).sum()
    bpy.ops.ed.undo()
    assert "red" not in bpy.data.objects
    restored = _all_attributes(bpy.data.objects["prims"])
    assert set(restored) == set(before)
    for name, values in before.items():
        np.testing.assert_array_equal(restored[name], values, err_msg=name)


def test_a_failed_apply_leaves_the_scene_as_it_was(scene_obj, monkeypatch):
    n = gaussian_object.gaussian_count(scene_obj)
    snapshot = datablock_snapshot()
    for mask, message in ((np.ones(n, bool), "every Gaussian"), (np.zeros(n, bool), "nothing"),
                          (np.ones(n - 1, bool), "values but the object has")):
        with pytest.raises(selection.SelectionError, match=message):
            object_subsets.split_selected(scene_obj, mask)
    assert datablock_snapshot() == snapshot
    # a failure half-way (the second mesh cannot be built) removes what was made and keeps the object
    real_build, calls = object_subsets.build_mesh, []

    def failing_build(*args):
        calls.append(args[0])
        if len(calls) == 2:
            raise MemoryError("simulated")
        return real_build(*args)

    monkeypatch.setattr(object_subsets, "build_mesh", failing_build)
    with pytest.raises(MemoryError):
        object_subsets.split_selected(scene_obj, np.arange(n) < 10)
    monkeypatch.undo()
    assert datablock_snapshot() == snapshot and gaussian_object.gaussian_count(scene_obj) == n
    object_subsets.write_selection(scene_obj, np.ones(n, bool))
    with pytest.raises(RuntimeError, match="nothing to split off"):   # reported as the operator's error
        bpy.ops.gaussians.segment_apply()
    assert datablock_snapshot() == snapshot and gaussian_object.gaussian_count(scene_obj) == n


def test_highlight_attribute_and_clear(scene_obj):
    n = gaussian_object.gaussian_count(scene_obj)
    assert not bpy.ops.gaussians.segment_apply.poll()   # nothing selected yet
    mask = np.arange(n) % 3 == 0
    assert object_subsets.write_selection(scene_obj, mask) == mask.sum()
    values = np.empty(n, np.float32)
    scene_obj.data.attributes[SELECTION_ATTRIBUTE].data.foreach_get("value", values)
    np.testing.assert_array_equal(values, mask.astype(np.float32))
    # the display's material tints by it
    from blender_addon.io import display_nodes
    material = bpy.data.materials[display_nodes.MATERIAL_NAME]
    assert any(getattr(n, "attribute_name", "") == SELECTION_ATTRIBUTE for n in material.node_tree.nodes)
    assert bpy.ops.gaussians.segment_clear() == {"FINISHED"}
    assert SELECTION_ATTRIBUTE not in scene_obj.data.attributes


def test_text_query_and_live_granularity_through_the_session(scene_obj, fake_session):
    session, client = fake_session
    scene = bpy.context.scene
    scene.gaussians_segment.text = "the green box"
    scene.gaussians_segment.granularity = 1.0
    assert bpy.ops.gaussians.segment_text() == {"FINISHED"}
    session.wait()
    labels = _int_attr(scene_obj, "ply_label")
    whole = object_subsets.selection_mask(scene_obj)
    np.testing.assert_array_equal(whole, labels == 2)
    request_type, params, arrays = client.requests[-1]
    assert request_type == "segment" and params["mode"] == "text" and params["granularity"] == 1.0
    assert arrays["indices"].dtype == np.int64 and arrays["file_to_world"].shape == (4, 4)
    scene.gaussians_segment.granularity = 0.2   # the slider re-sends the last query
    session.wait()
    assert client.requests[-1][1]["granularity"] == pytest.approx(0.2)
    part = object_subsets.selection_mask(scene_obj)
    assert 0 < part.sum() < whole.sum() and not (part & ~whole).any()
    assert "selected" in session.message and session.message_type == "INFO"


def test_session_sends_only_the_newest_of_queued_queries(scene_obj, fake_session):
    session, client = fake_session
    viewmat, K, w, h = camera_data.scene_camera_view(bpy.context.scene)
    q = segment_query.make_query(scene_obj, "text", viewmat, K, w, h, text="red")
    session.request(q, 1.0)
    for g in (0.1, 0.2, 0.3):   # the slider moves while the first answer is on its way
        session.request(q, g)
    session.wait()
    assert [r[1]["granularity"] for r in client.requests] == [1.0, pytest.approx(0.3)]


def test_click_on_empty_sky_is_a_clear_error_and_changes_nothing(scene_obj, fake_session):
    session, _ = fake_session
    viewmat, K, w, h = camera_data.scene_camera_view(bpy.context.scene)
    q = segment_query.make_query(scene_obj, "click", viewmat, K, w, h, point=(40, 1))
    snapshot = datablock_snapshot()
    session.request(q, 0.5)
    session.wait()
    assert session.message_type == "ERROR" and "nothing was selected at that point" in session.message
    assert object_subsets.selection_mask(scene_obj) is None and datablock_snapshot() == snapshot
    with pytest.raises(AnimateGaussiansError, match="outside"):
        segment_query.make_query(scene_obj, "click", viewmat, K, w, h, point=(500, 1))
    with pytest.raises(AnimateGaussiansError, match="empty"):
        segment_query.make_query(scene_obj, "text", viewmat, K, w, h, text="  ")


def test_render_of_split_objects_equals_the_unsplit_object(scene_obj, tmp_path):
    pytest.importorskip("torch")     # the render job runs in this process
    from PIL import Image

    from blender_addon.render import render_request
    from engine.render.job import handle_render
    from tests.motion_fixtures import QuietContext

    scene = bpy.context.scene
    scene.frame_start = scene.frame_end = 1

    def render(name):
        params, arrays = render_request.build_render_request(scene, tmp_path / name, (40, 30), "cpu", False)
        handle_render(QuietContext(), params, arrays)
        return np.asarray(Image.open(tmp_path / name / "frame_0001.png").convert("RGB"), np.float32), arrays

    whole, arrays = render("whole")
    assert arrays["object_matrices"].shape == (1, 1, 4, 4) and "indices_0" in arrays
    labels = _int_attr(scene_obj, "ply_label")
    object_subsets.split_selected(scene_obj, labels == 1, "red")
    object_subsets.split_selected(scene_obj, _int_attr(scene_obj, "ply_label") == 2, "green")
    split, arrays = render("split")
    assert arrays["object_matrices"].shape == (1, 3, 4, 4)
    assert sum(len(arrays[f"indices_{j}"]) for j in range(3)) == len(labels)
    assert whole.std() > 5
    assert np.abs(whole - split).max() <= 2.0   # the same Gaussians, the same place: the same picture


def test_viewport_projection_matches_the_camera_convention(scene_obj):
    scene = bpy.context.scene
    cam = scene.camera
    cam.data.shift_x, cam.data.lens = 0.1, 35.0
    bpy.context.view_layer.update()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    window = np.array(cam.calc_matrix_camera(depsgraph, x=80, y=60))
    view = np.array(cam.matrix_world.inverted())
    viewmat, K = opengl_view_to_opencv(view, window, 80, 60)
    viewmat_ref, K_ref, _, _ = camera_from_blender(scene, cam, 80, 60)
    np.testing.assert_allclose(viewmat, viewmat_ref, atol=1e-5)
    np.testing.assert_allclose(K, K_ref, atol=1e-3)
    cam.data.type = "ORTHO"
    bpy.context.view_layer.update()
    ortho = np.array(cam.calc_matrix_camera(bpy.context.evaluated_depsgraph_get(), x=80, y=60))
    with pytest.raises(CameraError, match="orthographic"):
        opengl_view_to_opencv(view, ortho, 80, 60)


def test_click_query_selects_the_clicked_object(scene_obj, fake_session):
    session, _ = fake_session
    scene = bpy.context.scene
    labels = _int_attr(scene_obj, "ply_label")
    viewmat, K, w, h = camera_data.scene_camera_view(scene)
    x, y = _project(scene_obj, np.flatnonzero(labels == 1), scene)
    query = segment_query.make_query(scene_obj, "click", viewmat, K, w, h, point=(x, y))
    session.request(query, 1.0)
    session.wait()
    np.testing.assert_array_equal(object_subsets.selection_mask(scene_obj), labels == 1)


def test_render_job_checks_the_subset_rows(labelled_ply):
    pytest.importorskip("torch")
    from engine.errors import InputFileError
    from engine.ply import read_gaussians
    from engine.render.job import RenderRequestError, select_rows

    g = read_gaussians(labelled_ply)
    rows = np.array([5, 2, 7])
    part = select_rows(g, rows, "seg")
    np.testing.assert_array_equal(part.means, g.means[rows])
    np.testing.assert_array_equal(part.sh_rest, g.sh_rest[rows])
    assert select_rows(g, np.arange(g.count), "whole") is g
    with pytest.raises(InputFileError, match="re-import|does not have"):
        select_rows(g, np.array([g.count]), "seg")
    with pytest.raises(RenderRequestError):
        select_rows(g, np.zeros((2, 2), np.int64), "seg")


def test_models_line_says_what_would_enable_text_and_sam_masks():
    line = segment_query.models_line({"models": {"used": [], "missing": {"sam": "SAM-quality masks",
                                                                         "clip": "text selection"}}})
    assert line == ("Used: no model (offline region growing). Install SAM weights for SAM-quality masks; "
                    "CLIP weights for text selection.")
    assert segment_query.models_line({}) == ""
