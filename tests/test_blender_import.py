"""Import of 3DGS .ply files into Blender (bpy module): every attribute, the axis conversion, the display, and
broken files leaving the scene untouched."""

from __future__ import annotations

import numpy as np
import pytest
from bad_ply_files import BAD_CASES, make_bad_file
from blender_fixtures import addon, bpy, clean_scene, datablock_snapshot  # noqa: F401 (fixtures)

from blender_addon.io import display_nodes, gaussian_object
from blender_addon.io.gaussian_layout import AXIS_CONVERSION, HASH_KEY, LAYOUT_KEY, SOURCE_KEY, layout_from_json
from engine.ply import read_header, read_structured

pytestmark = pytest.mark.blender


def _attr(mesh, name, key, width, dtype=np.float32):
    out = np.empty(len(mesh.vertices) * width, dtype)
    mesh.attributes[name].data.foreach_get(key, out)
    return out.reshape(-1, width) if width > 1 else out


def test_import_keeps_every_attribute(clean_scene, primitives_ply, primitives_scene):
    result = bpy.ops.gaussians.import_ply(filepath=str(primitives_ply))
    assert result == {"FINISHED"}
    obj = bpy.context.active_object
    assert obj.name == "primitives" and obj.select_get()
    mesh = obj.data
    g = primitives_scene.gaussians
    rows = read_structured(read_header(primitives_ply))
    assert len(mesh.vertices) == g.count
    assert np.array_equal(_attr(mesh, "position", "vector", 3), g.means)
    assert np.array_equal(_attr(mesh, "f_dc", "vector", 3), g.sh_dc)
    for k in range(1, 16):
        assert np.array_equal(_attr(mesh, f"sh_{k}", "vector", 3), g.sh_rest[:, k - 1, :]), k
    assert np.array_equal(_attr(mesh, "opacity", "value", 1), g.opacity_logit)
    assert np.array_equal(_attr(mesh, "scale", "vector", 3), g.log_scales)
    assert np.array_equal(_attr(mesh, "rotation", "value", 4), g.quats_wxyz)
    assert np.array_equal(_attr(mesh, "ply_nx", "value", 1), rows["nx"])
    assert not _attr(mesh, "segment", "value", 1, np.int32).any()
    # Blender keeps transforms as Euler angles: the quarter turn comes back with float32 rounding (7.5e-8).
    assert np.allclose(np.array(obj.matrix_world), AXIS_CONVERSION, rtol=0, atol=1e-6)
    layout = layout_from_json(obj[LAYOUT_KEY])
    assert layout.sh_degree == 3 and layout.fmt == "binary_little_endian"
    assert obj[SOURCE_KEY] == str(primitives_ply.resolve()) and len(obj[HASH_KEY]) == 40


def test_world_positions_are_blender_z_up(clean_scene, primitives_ply, primitives_scene):
    obj = gaussian_object.import_ply(primitives_ply)
    red = primitives_scene.object("red_sphere")
    centre = np.array(obj.matrix_world) @ np.append(red.center, 1.0)
    # The sphere rests on the ground (file y = 0, "up" = -y): in Blender it is above z = 0, at y = file z.
    assert np.allclose(centre[:3], [red.center[0], red.center[2], -red.center[1]])
    assert centre[2] > 0


def test_import_without_axis_conversion(clean_scene, primitives_ply):
    obj = gaussian_object.import_ply(primitives_ply, convert_axes=False)
    assert np.array_equal(np.array(obj.matrix_world), np.eye(4))


def _evaluated_counts(obj):
    """(splat instances, points in the evaluated point cloud or None) of the object's display."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    depsgraph.update()
    splats, points = 0, None
    for inst in depsgraph.object_instances:
        if not (inst.is_instance and inst.parent and inst.parent.original == obj):
            continue
        if inst.object.type == "MESH":
            splats += 1
        elif inst.object.type == "POINTCLOUD":
            points = len(inst.object.data.points)
    return splats, points


def test_display_splats_and_points_only(clean_scene, primitives_ply, primitives_scene):
    obj = gaussian_object.import_ply(primitives_ply)
    assert display_nodes.get_display_input(obj, display_nodes.INPUT_POINTS_ONLY) is False
    instances, _ = _evaluated_counts(obj)
    assert instances == primitives_scene.gaussians.count   # all are opaque: one splat each
    display_nodes.set_display_input(obj, display_nodes.INPUT_POINTS_ONLY, True)
    instances, points = _evaluated_counts(obj)
    assert instances == 0 and points == primitives_scene.gaussians.count


def test_display_hides_transparent_gaussians(clean_scene, tmp_path, primitives_scene):
    from engine.ply import write_gaussians
    g = primitives_scene.gaussians
    g.opacity_logit = g.opacity_logit.copy()
    g.opacity_logit[:100] = -10.0   # sigmoid ≈ 5e-5, below the default minimum opacity
    path = tmp_path / "faint.ply"
    write_gaussians(path, g)
    obj = gaussian_object.import_ply(path)
    instances, _ = _evaluated_counts(obj)
    assert instances == g.count - 100


def test_points_only_above_threshold_and_node_group_shared(clean_scene, primitives_ply):
    first = gaussian_object.import_ply(primitives_ply, points_only_threshold=10)
    second = gaussian_object.import_ply(primitives_ply, points_only_threshold=10 ** 9)
    assert display_nodes.get_display_input(first, display_nodes.INPUT_POINTS_ONLY) is True
    assert display_nodes.get_display_input(second, display_nodes.INPUT_POINTS_ONLY) is False
    assert [g.name for g in bpy.data.node_groups] == [display_nodes.NODE_GROUP_NAME]
    assert [m.name for m in bpy.data.materials] == [display_nodes.MATERIAL_NAME]


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_operator_reports_and_leaves_scene(clean_scene, tmp_path, case):
    path = make_bad_file(case, tmp_path)
    before = datablock_snapshot()
    # An ERROR report makes bpy.ops raise RuntimeError carrying the report's text; the operator returned CANCELLED.
    with pytest.raises(RuntimeError, match=BAD_CASES[case][2]):
        bpy.ops.gaussians.import_ply(filepath=str(path))
    assert datablock_snapshot() == before


def test_failure_after_building_removes_everything(clean_scene, primitives_ply, monkeypatch):
    before = datablock_snapshot()

    def broken(*args, **kwargs):
        display_nodes.ensure_display(kwargs.get("created", args[3] if len(args) > 3 else None))
        raise MemoryError("out of memory while building the display")

    monkeypatch.setattr(display_nodes, "add_display_modifier", broken)
    with pytest.raises(MemoryError):
        gaussian_object.import_ply(primitives_ply)
    assert datablock_snapshot() == before


def test_render_still_shows_the_coloured_primitives(clean_scene, primitives_ply, tmp_path):
    from PIL import Image

    from blender_addon.render.render_still import render_still

    obj = gaussian_object.import_ply(primitives_ply)
    path = render_still(bpy.context.scene, tmp_path / "still.png", (160, 120), obj=obj, samples=2)
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    assert ((r > 150) & (g < 90) & (b < 90)).sum() > 10, "no red sphere"
    assert ((g > 120) & (r < 100) & (b < 100)).sum() > 10, "no green box"
    assert ((b > 150) & (r < 100)).sum() > 5, "no blue sphere"
    assert ((abs(r - g) < 25) & (r > 90)).sum() > 200, "no grey ground"
