"""Broken .ply files for the error tests of the reader, the import operator and the batch CLI: each case
writes its file and says which error must name which problem."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from engine.errors import InputFileError, PlyFormatError
from engine.ply import gaussians_to_structured, write_ply
from engine.synthetic_scene import make_random_gaussians


def valid_vertices(n: int = 20, sh_degree: int = 1) -> np.ndarray:
    return gaussians_to_structured(make_random_gaussians(n, sh_degree=sh_degree, seed=1))


def _write_valid(path: Path) -> Path:
    write_ply(path, valid_vertices())
    return path


def _truncated(path: Path) -> None:
    data = _write_valid(path).read_bytes()
    path.write_bytes(data[: len(data) - 100])


def _ascii(path: Path) -> None:
    path.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                    "property float z\nend_header\n0 0 0\n")


def _mesh(path: Path) -> None:
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
              "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n")
    body = np.zeros(9, "<f4").tobytes() + bytes([3]) + np.arange(3, dtype="<i4").tobytes()
    path.write_bytes(header.encode() + body)


def _missing(path: Path) -> None:
    v = valid_vertices()
    names = [n for n in v.dtype.names if n != "opacity"]
    write_ply(path, np.ascontiguousarray(v[names]).astype([(n, "<f4") for n in names]))


def _nan(path: Path) -> None:
    v = valid_vertices()
    v["scale_1"][7] = np.nan
    write_ply(path, v)


def _inf(path: Path) -> None:
    v = valid_vertices()
    v["x"][3] = np.inf
    write_ply(path, v)


def _zero(path: Path) -> None:
    write_ply(path, valid_vertices()[:0])


def _overpromise(path: Path) -> None:
    data = _write_valid(path).read_bytes()
    path.write_bytes(data.replace(b"element vertex 20\n", b"element vertex 25\n", 1))


def _not_ply(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)


def _nonexistent(path: Path) -> None:
    pass   # nothing written


# name -> (writer, error type, regex the message must match)
BAD_CASES: dict[str, tuple[Callable[[Path], None], type, str]] = {
    "truncated": (_truncated, PlyFormatError, r"truncated"),
    "ascii": (_ascii, PlyFormatError, r"ASCII PLY"),
    "mesh": (_mesh, PlyFormatError, r"not a 3D Gaussian Splatting PLY"),
    "missing_property": (_missing, PlyFormatError, r"missing 3DGS properties: opacity"),
    "nan": (_nan, PlyFormatError, r"'scale_1' of Gaussian 7 is NaN or infinite"),
    "inf": (_inf, PlyFormatError, r"'x' of Gaussian 3 is NaN or infinite"),
    "zero_vertices": (_zero, PlyFormatError, r"no Gaussians"),
    "header_overpromises": (_overpromise, PlyFormatError, r"truncated: the header declares 25 Gaussians"),
    "not_ply": (_not_ply, PlyFormatError, r"not a PLY file"),
    "nonexistent": (_nonexistent, InputFileError, r"not found|does not exist"),
}


def make_bad_file(case: str, folder: Path) -> Path:
    path = folder / f"{case}.ply"
    BAD_CASES[case][0](path)
    return path
