"""Export of Gaussian objects back to .ply (bpy module): bit-exact round trips of every layout, and edits
(transform, deleted points) written."""

from __future__ import annotations

import numpy as np
import pytest
from bad_ply_files import valid_vertices
from blender_fixtures import addon, bpy, clean_scene, datablock_snapshot  # noqa: F401 (fixtures)
from mathutils import Matrix

from blender_addon.io import gaussian_object
from engine.errors import AnimateGaussiansError
from engine.gaussian_transform import quat_multiply, quat_from_matrix, sh_basis
from engine.ply import read_header, read_structured, write_ply

pytestmark = pytest.mark.blender


def _assert_same_file(a, b):
    ha, hb = read_header(a), read_header(b)
    assert hb.fmt == ha.fmt
    assert hb.properties == ha.properties
    ra, rb = read_structured(ha), read_structured(hb)
    assert ra.dtype == rb.dtype
    assert ra.tobytes() == rb.tobytes()   # every value, bit for bit


def _with_extras(n: int, sh_degree: int) -> np.ndarray:
    v = valid_vertices(n, sh_degree)
    rng = np.random.default_rng(sh_degree)
    extras = [("label", "<i4", rng.integers(-1000, 1000, n)), ("confidence", "<f4", rng.normal(size=n)),
              ("flags", "u1", rng.integers(0, 256, n)), ("ident", "<u4", rng.integers(0, 2**32, n, dtype=np.uint64)),
              ("weight", "<f8", rng.normal(size=n)), ("tiny", "<i2", rng.integers(-3000, 3000, n))]
    out = np.empty(n, dtype=v.dtype.descr + [(name, t) for name, t, _ in extras])
    for name in v.dtype.names:
        out[name] = v[name]
    for name, _, values in extras:
        out[name] = values
    return out


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian"])
@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_round_trip_is_bit_exact(clean_scene, tmp_path, fmt, sh_degree):
    source = tmp_path / "in.ply"
    write_ply(source, _with_extras(40, sh_degree), fmt=fmt, comments=["trainer: test"])
    bpy.ops.gaussians.import_ply(filepath=str(source))
    out = tmp_path / "out.ply"
    assert bpy.ops.gaussians.export_ply(filepath=str(out)) == {"FINISHED"}
    _assert_same_file(source, out)
    assert read_header(out).comments == ["trainer: test"]


def test_real_capture_round_trip(clean_scene, real_ply, tmp_path):
    gaussian_object.import_ply(real_ply)
    out = tmp_path / "real.ply"
    bpy.ops.gaussians.export_ply(filepath=str(out))
    _assert_same_file(real_ply, out)


def test_moved_object_exports_transformed_gaussians(clean_scene, primitives_ply, tmp_path):
    obj = gaussian_object.import_ply(primitives_ply)
    turn = Matrix.Rotation(0.7, 4, "Z") @ Matrix.Rotation(0.3, 4, "X")
    obj.matrix_world = Matrix.Translation((0.5, -1.0, 2.0)) @ turn @ Matrix.Scale(1.5, 4) @ obj.matrix_world
    out = tmp_path / "moved.ply"
    gaussian_object.export_ply(obj, out)
    before = read_structured(read_header(primitives_ply))
    after = read_structured(read_header(out))
    # What the file frame sees: T = inverse(axis conversion) @ matrix_world.
    from blender_addon.io.gaussian_layout import AXIS_CONVERSION
    t = np.linalg.inv(AXIS_CONVERSION) @ np.array(obj.matrix_world, dtype=np.float64)
    p = np.stack([before[c] for c in "xyz"], 1).astype(np.float64)
    expected = p @ t[:3, :3].T + t[:3, 3]
    assert np.allclose(np.stack([after[c] for c in "xyz"], 1), expected, atol=1e-5)
    assert np.allclose(after["scale_0"], before["scale_0"] + np.log(1.5), atol=1e-5)
    rot = t[:3, :3] / 1.5
    q_before = np.stack([before[f"rot_{i}"] for i in range(4)], 1)
    q_after = np.stack([after[f"rot_{i}"] for i in range(4)], 1)
    assert np.allclose(q_after, quat_multiply(quat_from_matrix(rot), q_before), atol=1e-5)
    assert np.array_equal(after["opacity"], before["opacity"]) and np.array_equal(after["f_dc_0"], before["f_dc_0"])
    # SH turn with the Gaussian: the colour seen from R·d after equals the colour seen from d before.
    d = np.array([[0.3, -0.5, 0.81]]) / np.linalg.norm([0.3, -0.5, 0.81])

    def view_colour(rows, direction, i=0):
        k = 15
        c = np.array([[rows[f"f_rest_{ch * k + j}"][i] for ch in range(3)] for j in range(k)])
        basis = np.concatenate(sh_basis(direction, 3), axis=1)
        return basis @ c

    assert np.allclose(view_colour(after, d @ rot.T), view_colour(before, d), atol=1e-5)


def test_deleted_points_are_not_exported(clean_scene, primitives_ply, tmp_path):
    import bmesh

    obj = gaussian_object.import_ply(primitives_ply)
    n = len(obj.data.vertices)
    drop = set(range(0, n, 3))
    bm = bmesh.new()
    bm.from_mesh(obj.data)
    bm.verts.ensure_lookup_table()
    bmesh.ops.delete(bm, geom=[bm.verts[i] for i in sorted(drop)], context="VERTS")
    bm.to_mesh(obj.data)
    bm.free()
    out = tmp_path / "fewer.ply"
    gaussian_object.export_ply(obj, out)
    before = read_structured(read_header(primitives_ply))
    after = read_structured(read_header(out))
    keep = np.array([i for i in range(n) if i not in drop])
    assert len(after) == len(keep)
    assert after.tobytes() == before[keep].tobytes()


def test_export_needs_a_gaussian_object(clean_scene, tmp_path):
    mesh = bpy.data.meshes.new("plain")
    obj = bpy.data.objects.new("plain", mesh)
    bpy.context.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    with pytest.raises(RuntimeError, match="Gaussian object"):
        bpy.ops.gaussians.export_ply(filepath=str(tmp_path / "x.ply"))
    with pytest.raises(AnimateGaussiansError, match="not a Gaussian object"):
        gaussian_object.export_ply(obj, tmp_path / "x.ply")
    assert not (tmp_path / "x.ply").exists()


def test_failed_export_leaves_no_file(clean_scene, primitives_ply, tmp_path):
    obj = gaussian_object.import_ply(primitives_ply)
    obj.data.attributes.remove(obj.data.attributes["opacity"])
    before = datablock_snapshot()
    with pytest.raises(RuntimeError, match="attribute 'opacity'.*missing"):
        bpy.ops.gaussians.export_ply(filepath=str(tmp_path / "broken.ply"))
    assert list(tmp_path.iterdir()) == []
    assert datablock_snapshot() == before
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.gaussians.export_ply(filepath=str(tmp_path / "no_folder" / "x.ply"))
