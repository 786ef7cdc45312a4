"""The PLY reader on good and broken files, and the pure attribute mapping of the add-on (no bpy)."""

from __future__ import annotations

import numpy as np
import pytest
from bad_ply_files import BAD_CASES, make_bad_file, valid_vertices

from blender_addon.io.gaussian_layout import (AXIS_CONVERSION, attribute_specs, from_buffer, layout_from_json,
                                              layout_to_json, read_dtypes, relative_transform, is_identity, to_buffer)
from engine import ply
from engine.errors import PlyFormatError
from engine.ply import read_groups, read_header, read_structured, write_ply


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_raises_named_error(case, tmp_path):
    path = make_bad_file(case, tmp_path)
    _, error_type, pattern = BAD_CASES[case]
    with pytest.raises(error_type, match=pattern):
        header = read_header(path)
        read_groups(header, {s.name: s.properties for s in attribute_specs(header.properties)})


def _mixed_file(path, fmt="binary_little_endian", sh_degree=2, n=50):
    v = valid_vertices(n, sh_degree)
    rng = np.random.default_rng(3)
    extras = [("label", "<i4", rng.integers(-5, 5, n)), ("flags", "u1", rng.integers(0, 255, n)),
              ("big", "<u4", rng.integers(0, 2**32 - 1, n, dtype=np.uint64)),
              ("weight", "<f8", rng.normal(size=n)), ("conf", "<f4", rng.normal(size=n)),
              ("short", "<i2", rng.integers(-30000, 30000, n))]
    dtype = v.dtype.descr + [(name, t) for name, t, _ in extras]
    out = np.empty(n, dtype=dtype)
    for name in v.dtype.names:
        out[name] = v[name]
    for name, _, values in extras:
        out[name] = values
    write_ply(path, out, fmt=fmt, comments=["made by a test"])
    return out


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian"])
def test_groups_and_buffers_round_trip_every_property(tmp_path, fmt):
    path = tmp_path / "mixed.ply"
    original = _mixed_file(path, fmt)
    header = read_header(path)
    assert header.fmt == fmt and header.sh_degree == 2
    specs = attribute_specs(header.properties)
    groups = read_groups(header, {s.name: s.properties for s in specs}, dtype=read_dtypes(specs))
    codes = dict(header.properties)
    columns = {}
    for spec in specs:
        buffer = to_buffer(spec, groups[spec.name])
        assert buffer.dtype == spec.buffer_dtype and buffer.flags.c_contiguous
        assert buffer.size == header.vertex_count * spec.components
        columns.update(from_buffer(spec, buffer, codes))
    assert set(columns) == set(original.dtype.names)
    for name in original.dtype.names:
        assert columns[name].dtype == np.dtype(codes[name])
        assert np.array_equal(columns[name], original[name]), name
    assert np.array_equal(read_structured(header), original.astype(read_structured(header).dtype))


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("layout", ["inria", "shuffled", "double_x"])
def test_groups_match_the_file_whatever_the_property_order_and_types(tmp_path, monkeypatch, layout, threads):
    """Groups whose properties sit side by side move as one item per row; shuffled or mixed-type ones column by
    column: every layout gives the file's values, read in one go or in spans on threads."""
    monkeypatch.setattr(ply, "_read_threads", lambda count: threads)
    v = valid_vertices(40_000, 1)   # several 2 MB chunks
    names = list(v.dtype.names)
    if layout == "shuffled":   # y before x, rotation reversed: not side by side in group order
        names[0], names[1] = names[1], names[0]
        rot = [n for n in names if n.startswith("rot_")]
        names = [n for n in names if not n.startswith("rot_")] + rot[::-1]
    descr = [(n, "<f8" if layout == "double_x" and n == "x" else "<f4") for n in names]
    out = np.empty(len(v), dtype=descr)
    for n in names:
        out[n] = v[n]
    path = tmp_path / "layout.ply"
    write_ply(path, out, fmt="binary_little_endian")
    header = read_header(path)
    specs = attribute_specs(header.properties)
    groups = read_groups(header, {s.name: s.properties for s in specs}, dtype=read_dtypes(specs))
    for spec in specs:
        expected = np.stack([out[n].astype(np.float32) for n in spec.properties], axis=1)
        assert np.array_equal(groups[spec.name], expected), spec.name


@pytest.mark.parametrize("bad_rows", [(12_000, 25_000), (25_000,), (29_999,)])
@pytest.mark.parametrize("layout", ["inria", "double_x"])
def test_a_nan_read_on_threads_names_the_first_bad_gaussian(tmp_path, monkeypatch, bad_rows, layout):
    """Three spans of 10,000 rows: whichever spans meet a NaN, the error names the first one in the file."""
    monkeypatch.setattr(ply, "_read_threads", lambda count: 3)
    v = valid_vertices(30_000, 1)
    out = v.astype([(n, "<f8" if layout == "double_x" and n == "x" else "<f4") for n in v.dtype.names])
    for row in bad_rows:
        out["y"][row] = np.nan
    path = tmp_path / "nan.ply"
    write_ply(path, out, fmt="binary_little_endian")
    header = read_header(path)
    with pytest.raises(PlyFormatError, match=f"'y' of Gaussian {bad_rows[0]:,} is NaN"):
        read_groups(header, {s.name: s.properties for s in attribute_specs(header.properties)})


def test_big_files_are_read_on_the_cores_there_are(monkeypatch):
    monkeypatch.setattr(ply.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert ply._read_threads(1_000) == 1
    assert ply._read_threads(1_000_000) == 2
    monkeypatch.setattr(ply.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert ply._read_threads(250_000) == 2
    assert ply._read_threads(10_000_000) == ply._READ_THREADS


def test_sh_attributes_gather_channel_major_rest():
    names = [(n, "f4") for n in valid_vertices(2, 3).dtype.names]
    specs = {s.name: s for s in attribute_specs(names)}
    assert [f"sh_{k}" for k in range(1, 16)] == [n for n in specs if n.startswith("sh_")]
    assert specs["sh_1"].properties == ("f_rest_0", "f_rest_15", "f_rest_30")
    assert specs["sh_15"].properties == ("f_rest_14", "f_rest_29", "f_rest_44")
    assert specs["rotation"].data_type == "QUATERNION"
    assert specs["ply_nx"].data_type == "FLOAT"
    assert specs["position"].properties == ("x", "y", "z")


def test_sh_degree_zero_has_no_sh_attributes():
    names = [(n, "f4") for n in valid_vertices(2, 0).dtype.names]
    assert not [s for s in attribute_specs(names) if s.name.startswith("sh_")]


def test_axis_conversion_maps_colmap_to_blender_z_up():
    p = np.array([1.0, 2.0, 3.0, 1.0])
    assert np.array_equal(AXIS_CONVERSION @ p, [1.0, 3.0, -2.0, 1.0])   # (x, z, -y)
    assert np.array_equal(AXIS_CONVERSION[:3, :3] @ AXIS_CONVERSION[:3, :3].T, np.eye(3))
    assert np.linalg.det(AXIS_CONVERSION[:3, :3]) == 1.0
    assert is_identity(relative_transform(AXIS_CONVERSION, AXIS_CONVERSION))
    assert not is_identity(relative_transform(AXIS_CONVERSION, np.eye(4)))


def test_layout_json_round_trip(tmp_path):
    path = tmp_path / "mixed.ply"
    _mixed_file(path, "binary_big_endian")
    header = read_header(path)
    layout = layout_from_json(layout_to_json(header, AXIS_CONVERSION))
    assert layout.fmt == "binary_big_endian"
    assert layout.properties == header.properties
    assert layout.comments == ["made by a test"]
    assert layout.sh_degree == 2
    assert np.array_equal(layout.axis_conversion, AXIS_CONVERSION)
