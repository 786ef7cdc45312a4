"""PLY sequences: a folder or numbered pattern of .ply frames imports as one animated object whose positions at
frame t are file t's; an animated object (keys, dynamic, rig) exports as one .ply per frame that re-imports."""

from __future__ import annotations

import numpy as np
import pytest
from blender_fixtures import addon, bpy, clean_scene, datablock_snapshot  # noqa: F401 (fixtures)
from splat_format_fixtures import random_gaussians

from blender_addon.io import gaussian_object, ply_sequence
from engine.errors import InputFileError, SplatFormatError
from engine.formats.sequence import frame_paths, is_sequence_spec, read_sequence, sequence_files
from engine.ply import read_gaussians, write_gaussians

pytestmark = pytest.mark.blender


def _write_frames(folder, count=3, n=200, seed=0, vary_count=False):
    folder.mkdir(parents=True, exist_ok=True)
    base = random_gaussians(n, 1, seed=seed)
    frames = []
    for t in range(count):
        g = random_gaussians(n - (t if vary_count else 0), 1, seed=seed)
        g.means = base.means[:g.count] + np.float32(0.3 * t) * np.array([1, 2, 3], np.float32)
        g.quats_wxyz = random_gaussians(g.count, 0, seed=seed + 10 + t).quats_wxyz
        write_gaussians(folder / f"frame_{t + 1:04d}.ply", g)
        frames.append(g)
    return frames


def _evaluated_positions(obj) -> np.ndarray:
    """Positions after the playback modifier at the current frame (what the viewport shows), file frame."""
    obj.modifiers["Gaussian Splats"].show_viewport = False     # read the points before the splat display
    mesh = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    out = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", out)
    return out.reshape(-1, 3)


def test_sequence_files_from_folder_and_patterns(tmp_path):
    _write_frames(tmp_path / "seq", count=3)
    (tmp_path / "seq" / "notes.txt").write_text("x")
    names = [p.name for p in sequence_files(tmp_path / "seq")]
    assert names == ["frame_0001.ply", "frame_0002.ply", "frame_0003.ply"]
    assert [p.name for p in sequence_files(tmp_path / "seq" / "frame_####.ply")] == names
    assert [p.name for p in sequence_files(tmp_path / "seq" / "frame_%04d.ply")] == names
    assert is_sequence_spec(tmp_path / "seq") and is_sequence_spec("a/frame_####.ply")
    assert not is_sequence_spec(tmp_path / "seq" / "frame_0001.ply")
    assert [p.name for p in frame_paths(tmp_path / "out" / "f_###.ply", [1, 12])] == ["f_001.ply", "f_012.ply"]
    with pytest.raises(InputFileError, match="no .ply frames"):
        sequence_files(tmp_path / "seq" / "other_####.ply")


def test_count_mismatch_is_one_clear_error(tmp_path, clean_scene):
    _write_frames(tmp_path / "seq", count=3, vary_count=True)
    with pytest.raises(SplatFormatError, match="frame_0002.ply has 199 Gaussians but frame_0001.ply has 200"):
        read_sequence(tmp_path / "seq")
    before = datablock_snapshot()
    with pytest.raises(SplatFormatError):
        ply_sequence.import_sequence(tmp_path / "seq")
    assert datablock_snapshot() == before


def test_three_frame_sequence_imports_as_animated_object(clean_scene, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    frames = _write_frames(tmp_path / "seq", count=3)
    scene = clean_scene
    obj, notes = ply_sequence.import_sequence(tmp_path / "seq", frame_start=1)
    assert notes == []
    assert obj.name == "seq" and (scene.frame_start, scene.frame_end) == (1, 3)
    for t, g in enumerate(frames):
        scene.frame_set(1 + t)
        np.testing.assert_allclose(_evaluated_positions(obj), g.means, atol=1e-6)
    # the base object keeps frame 1's SH
    assert obj.data.attributes.get("sh_3") is not None


def test_animated_segment_exports_as_sequence_that_reimports(clean_scene, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    g = random_gaussians(150, 1, seed=3)
    write_gaussians(tmp_path / "still.ply", g)
    obj = gaussian_object.import_ply(tmp_path / "still.ply")
    scene = clean_scene
    scene.frame_start, scene.frame_end = 1, 3
    for frame, z in ((1, 0.0), (3, 2.0)):
        obj.location = (0.0, 0.0, z)
        obj.keyframe_insert("location", frame=frame)
    paths = ply_sequence.export_sequence(obj, tmp_path / "out" / "frame_####.ply")
    assert [p.name for p in paths] == ["frame_0001.ply", "frame_0002.ply", "frame_0003.ply"]
    # world z up by the keyed amount is file-frame y down by it (the axis conversion)
    for frame, path in zip((1, 2, 3), paths):
        scene.frame_set(frame)
        written = read_gaussians(path)
        expected = g.means.astype(np.float64) - np.array([0.0, obj.location.z, 0.0])
        np.testing.assert_allclose(written.means, expected, atol=1e-5)
        np.testing.assert_allclose(written.sh_rest, g.sh_rest, atol=1e-5)   # translation keeps SH
    again, _ = ply_sequence.import_sequence(tmp_path / "out" / "frame_####.ply", frame_start=1)
    for frame, path in zip((1, 2, 3), paths):
        scene.frame_set(frame)
        np.testing.assert_allclose(_evaluated_positions(again), read_gaussians(path).means, atol=1e-6)


def test_dynamic_object_exports_its_timesteps(clean_scene, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    frames = _write_frames(tmp_path / "seq", count=3, seed=4)
    obj, _ = ply_sequence.import_sequence(tmp_path / "seq", frame_start=1)
    paths = ply_sequence.export_sequence(obj, str(tmp_path / "out") + "/")
    for g, path in zip(frames, paths):
        written = read_gaussians(path)
        np.testing.assert_allclose(written.means, g.means, atol=1e-5)
        dots = np.abs(np.sum(written.quats_wxyz * g.quats_wxyz, axis=1))
        assert dots.min() > 1 - 1e-5


def test_rigged_object_exports_what_the_armature_deforms(clean_scene, tmp_path):
    from blender_addon.animate import rig
    from blender_addon.io.gaussian_layout import AXIS_CONVERSION

    g = random_gaussians(120, 0, seed=5)
    write_gaussians(tmp_path / "still.ply", g)
    obj = gaussian_object.import_ply(tmp_path / "still.ply")
    weights = np.zeros((g.count, 2), np.float32)
    weights[:60, 0] = 1.0
    weights[60:, 1] = 0.7
    weights[60:, 0] = 0.3
    arm = rig.build_rig(obj, np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), weights, np.eye(4))
    bone = arm.pose.bones[rig.bone_name(0)]
    scene = clean_scene
    scene.frame_start, scene.frame_end = 1, 2
    bone.location = (0.0, 0.0, 0.0)
    bone.keyframe_insert("location", frame=1)
    bone.location = (0.2, 0.5, -0.3)
    bone.keyframe_insert("location", frame=2)
    paths = ply_sequence.export_sequence(obj, tmp_path / "rig" / "f_##.ply")
    obj.modifiers["Gaussian Splats"].show_viewport = False
    moved = 0.0
    for frame, path in zip((1, 2), paths):
        scene.frame_set(frame)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        mesh = obj.evaluated_get(depsgraph).data
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        world = co.reshape(-1, 3) @ np.array(obj.matrix_world)[:3, :3].T + np.array(obj.matrix_world)[:3, 3]
        expected = (world - AXIS_CONVERSION[:3, 3]) @ np.linalg.inv(AXIS_CONVERSION[:3, :3]).T
        written = read_gaussians(path).means
        np.testing.assert_allclose(written, expected, atol=1e-4)
        moved = max(moved, float(np.abs(written - g.means).max()))
    assert moved > 0.1     # the rig did move them


def test_sequence_operators_round_trip(clean_scene, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    frames = _write_frames(tmp_path / "seq", count=3, seed=7)
    assert bpy.ops.gaussians.import_ply_sequence(filepath=str(tmp_path / "seq" / "frame_0002.ply"),
                                                 frame_start=1) == {"FINISHED"}
    obj = bpy.context.view_layer.objects.active
    assert obj.name == "seq"
    assert bpy.ops.gaussians.export_ply_sequence(filepath=str(tmp_path / "out" / "x.ply")) == {"FINISHED"}
    written = sorted((tmp_path / "out").glob("x_*.ply"))
    assert [p.name for p in written] == ["x_0001.ply", "x_0002.ply", "x_0003.ply"]
    for g, path in zip(frames, written):
        np.testing.assert_allclose(read_gaussians(path).means, g.means, atol=1e-5)
