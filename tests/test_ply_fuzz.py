"""Property-based fuzzing of the PLY reader: any bytes either parse or raise our own error, never anything else
and never hang."""

from __future__ import annotations


import numpy as np
from bad_ply_files import valid_vertices
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blender_addon.io.gaussian_layout import attribute_specs, read_dtypes
from engine.errors import InputFileError, PlyFormatError
from engine.ply import read_groups, read_header, read_structured, write_ply


def _valid_bytes(fmt: str, sh_degree: int) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.ply"
        write_ply(path, valid_vertices(6, sh_degree), fmt=fmt)
        return path.read_bytes()


VALID = [_valid_bytes(fmt, d) for fmt in ("binary_little_endian", "binary_big_endian") for d in (0, 3)]


def _parse(data: bytes, tmp_path_factory) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.ply"   # one file, rewritten: examples are many and small
    path.write_bytes(data)
    try:
        header = read_header(path)
        specs = attribute_specs(header.properties)
        groups = read_groups(header, {s.name: s.properties for s in specs}, dtype=read_dtypes(specs))
        rows = read_structured(header)
        assert all(len(g) == header.vertex_count for g in groups.values())
        assert len(rows) == header.vertex_count
    except (PlyFormatError, InputFileError):
        pass


_SETTINGS = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])


@_SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes(tmp_path_factory, data):
    _parse(data, tmp_path_factory)


@_SETTINGS
@given(st.binary(max_size=512))
def test_random_bytes_after_ply_magic(tmp_path_factory, data):
    _parse(b"ply\nformat binary_little_endian 1.0\n" + data, tmp_path_factory)


@st.composite
def mutated_valid_file(draw):
    data = bytearray(draw(st.sampled_from(VALID)))
    header_end = data.find(b"end_header\n") + len(b"end_header\n")
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "header_word"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        else:  # damage the header's words: counts, types, names
            pos = draw(st.integers(0, max(0, min(header_end, len(data)) - 1)))
            data[pos:pos + 1] = draw(st.sampled_from([b"9", b" ", b"\n", b"x", b"list ", b"double", b"0", b"-"]))
    return bytes(data)


@_SETTINGS
@given(mutated_valid_file())
def test_mutated_valid_files(tmp_path_factory, data):
    _parse(data, tmp_path_factory)


def test_unmutated_valid_files_parse(tmp_path_factory):
    for data in VALID:
        path = tmp_path_factory.mktemp("ok") / "v.ply"
        path.write_bytes(data)
        header = read_header(path)
        assert header.vertex_count == 6
        assert np.isfinite(read_structured(header)["x"]).all()
