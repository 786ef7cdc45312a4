"""How the properties of a 3DGS .ply map onto Blender mesh attributes and back, in pure numpy (no bpy).

Import and export both follow `attribute_specs`, so a file read and written again keeps every value bit-exact.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from engine.errors import PlyFormatError
from engine.ply import PlyHeader, REQUIRED_PROPERTIES, sh_degree_from_rest_count

# The file (3DGS/COLMAP) frame is y down, z forward; Blender is z up. An imported object's matrix_world is this
# matrix, so world = AXIS_CONVERSION @ local gives Blender (x, y, z) = (x_c, z_c, −y_c): a quarter turn about
# x that takes −y (COLMAP "up") to +z and +z (forward) to +y. Blender stores it as Euler angles (matrix_world
# then differs from it by float32 rounding, ~1e-7); export treats such a difference as "not moved", so an unmoved
# object exports its raw values bit for bit. Import can skip it (identity) to keep the file frame as is.
AXIS_CONVERSION = np.array([[1.0, 0.0, 0.0, 0.0],
                            [0.0, 0.0, 1.0, 0.0],
                            [0.0, -1.0, 0.0, 0.0],
                            [0.0, 0.0, 0.0, 1.0]])

# Custom properties of an imported object (the engine and the exporter read them).
LAYOUT_KEY = "gaussians_ply_layout"     # JSON: the file's layout, see layout_to_json
SOURCE_KEY = "gaussians_source"         # absolute path of the imported .ply
HASH_KEY = "gaussians_source_hash"      # source_hash() of that file
SEGMENT_ATTRIBUTE = "segment"
# Object subsets (segments): which Gaussians of the source .ply a mesh holds, and where its origin is.
SOURCE_INDEX_ATTRIBUTE = "source_index"          # int point attribute: row of each Gaussian in the source .ply
FILE_TO_LOCAL_KEY = "gaussians_file_to_local"    # 16 floats, row-major 4x4: file frame -> the mesh's local values
SELECTION_ATTRIBUTE = "selection"                # float point attribute in [0, 1]: the segmentation highlight
# Properties that are not part of the 3DGS model (normals, a trainer's extras) keep their own attribute, named
# with this prefix so they cannot collide with Blender's own attributes (position, radius, id, ...).
EXTRA_PREFIX = "ply_"
_MAX_ATTRIBUTE_NAME = 63

LAYOUT_VERSION = 1


@dataclass(frozen=True)
class AttributeSpec:
    """One Blender point attribute and the PLY properties it holds, in component order.

    `encoding` says how file values become the attribute's buffer: "float" (cast to float32; exact for the
    float32 properties of an INRIA file), "int" (cast to int32; exact for 8/16/32-bit signed and 8/16-bit
    unsigned), "bits" (the bytes reinterpreted as int32 words: uint32 into INT, float64 into INT32_2D).
    """

    name: str
    data_type: str                 # Blender attribute type: FLOAT, FLOAT_VECTOR, QUATERNION, INT, INT32_2D
    properties: tuple[str, ...]
    encoding: str                  # "float", "int" or "bits"

    @property
    def buffer_dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self.data_type in ("FLOAT", "FLOAT_VECTOR", "QUATERNION") \
            else np.dtype(np.int32)

    @property
    def components(self) -> int:
        return {"FLOAT": 1, "INT": 1, "INT32_2D": 2, "FLOAT_VECTOR": 3, "QUATERNION": 4}[self.data_type]

    @property
    def foreach_key(self) -> str:
        """The name of the value in attribute.data for foreach_get/foreach_set."""
        return "vector" if self.data_type == "FLOAT_VECTOR" else "value"

    @property
    def is_builtin(self) -> bool:
        return self.name == "position"


def sh_attribute_names(sh_degree: int) -> list[str]:
    return [f"sh_{k}" for k in range(1, (sh_degree + 1) ** 2)]


def _core_specs(sh_degree: int) -> list[AttributeSpec]:
    k_total = (sh_degree + 1) ** 2 - 1
    specs = [AttributeSpec("position", "FLOAT_VECTOR", ("x", "y", "z"), "float"),
             AttributeSpec("f_dc", "FLOAT_VECTOR", ("f_dc_0", "f_dc_1", "f_dc_2"), "float")]
    # f_rest is channel-major in the file (all K coefficients of R, then G, then B): coefficient k's RGB.
    for k in range(1, k_total + 1):
        specs.append(AttributeSpec(f"sh_{k}", "FLOAT_VECTOR",
                                   (f"f_rest_{k - 1}", f"f_rest_{k_total + k - 1}", f"f_rest_{2 * k_total + k - 1}"),
                                   "float"))
    specs += [AttributeSpec("opacity", "FLOAT", ("opacity",), "float"),
              AttributeSpec("scale", "FLOAT_VECTOR", ("scale_0", "scale_1", "scale_2"), "float"),
              AttributeSpec("rotation", "QUATERNION", ("rot_0", "rot_1", "rot_2", "rot_3"), "float")]
    return specs


def _extra_spec(name: str, code: str) -> AttributeSpec:
    attr = EXTRA_PREFIX + name
    if len(attr.encode("utf-8")) > _MAX_ATTRIBUTE_NAME:
        raise PlyFormatError(f"property name {name!r} is too long to keep as a Blender attribute "
                             f"(at most {_MAX_ATTRIBUTE_NAME - len(EXTRA_PREFIX)} bytes)",
                             hint="rename the property in the file")
    if code == "f4":
        return AttributeSpec(attr, "FLOAT", (name,), "float")
    if code == "f8":
        return AttributeSpec(attr, "INT32_2D", (name,), "bits")
    if code == "u4":
        return AttributeSpec(attr, "INT", (name,), "bits")
    if code in ("i1", "u1", "i2", "u2", "i4"):
        return AttributeSpec(attr, "INT", (name,), "int")
    raise PlyFormatError(f"property {name!r} has unsupported type {code!r}")


def attribute_specs(properties: Sequence[tuple[str, str]]) -> list[AttributeSpec]:
    """The attributes that hold a file with these (name, numpy type code) properties: the 3DGS ones first,
    then one per other property in file order. Raises PlyFormatError when 3DGS properties are missing."""
    names = [n for n, _ in properties]
    missing = [n for n in REQUIRED_PROPERTIES if n not in names]
    if missing:
        raise PlyFormatError(f"missing 3DGS properties: {', '.join(missing)}")
    rest = [n for n in names if n.startswith("f_rest_")]
    degree = sh_degree_from_rest_count(len(rest))
    specs = _core_specs(degree)
    used = {p for s in specs for p in s.properties}
    unknown_rest = [n for n in rest if n not in used]
    if unknown_rest:
        raise PlyFormatError(f"f_rest properties are not numbered 0..{len(rest) - 1} ({unknown_rest[0]!r})")
    specs += [_extra_spec(name, code) for name, code in properties if name not in used]
    taken = [s.name for s in specs]
    if SEGMENT_ATTRIBUTE in taken or len(set(taken)) != len(taken):
        raise PlyFormatError("two properties map to the same Blender attribute")
    return specs


def read_dtypes(specs: Sequence[AttributeSpec]) -> dict[str, np.dtype | None]:
    """Per-attribute dtype to ask engine.ply.read_groups for (None: keep the file type, for "bits")."""
    return {s.name: (None if s.encoding == "bits" else s.buffer_dtype) for s in specs}


def to_buffer(spec: AttributeSpec, group: np.ndarray) -> np.ndarray:
    """A group read by read_groups (N, len(properties)) -> the flat contiguous buffer for foreach_set."""
    if spec.encoding == "bits":
        group = np.ascontiguousarray(group).view(np.int32)
    elif group.dtype != spec.buffer_dtype:
        group = group.astype(spec.buffer_dtype)
    return np.ascontiguousarray(group).reshape(-1)


def from_buffer(spec: AttributeSpec, buffer: np.ndarray, codes: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The reverse of to_buffer: a flat attribute buffer -> {property name: (N,) values in its file type}."""
    if spec.encoding == "bits":
        (name,) = spec.properties
        return {name: np.ascontiguousarray(buffer).view(np.dtype(codes[name]))}
    rows = buffer.reshape(-1, len(spec.properties)) if spec.components > 1 else buffer.reshape(-1, 1)
    return {name: rows[:, j].astype(np.dtype(codes[name])) for j, name in enumerate(spec.properties)}


def layout_to_json(header: PlyHeader, axis_conversion: np.ndarray) -> str:
    """Everything export needs to write the same layout: property names and types in file order, byte order,
    comments, SH degree, source path, and the axis conversion the object got at import."""
    return json.dumps({
        "version": LAYOUT_VERSION,
        "format": header.fmt,
        "properties": [[n, c] for n, c in header.properties],
        "comments": list(header.comments),
        "sh_degree": header.sh_degree,
        "source": str(Path(header.path).resolve()),
        "axis_conversion": np.asarray(axis_conversion, dtype=np.float64).reshape(-1).tolist(),
    })


@dataclass
class Layout:
    fmt: str
    properties: list[tuple[str, str]]
    comments: list[str]
    sh_degree: int
    source: str
    axis_conversion: np.ndarray     # (4, 4)

    @property
    def codes(self) -> dict[str, str]:
        return dict(self.properties)

    def structured_dtype(self) -> np.dtype:
        """Native-order structured dtype in file property order (write_ply applies the byte order)."""
        return np.dtype([(n, c) for n, c in self.properties])


def layout_from_json(text: str) -> Layout:
    data = json.loads(text)
    if data.get("version") != LAYOUT_VERSION:
        raise PlyFormatError(f"unknown Gaussian layout version {data.get('version')!r}",
                             hint="re-import the .ply with this version of the add-on")
    return Layout(fmt=data["format"], properties=[(n, c) for n, c in data["properties"]],
                  comments=list(data["comments"]), sh_degree=int(data["sh_degree"]), source=data["source"],
                  axis_conversion=np.array(data["axis_conversion"], dtype=np.float64).reshape(4, 4))


def source_hash(path: str | os.PathLike, data_offset: int) -> str:
    """A cheap content key of a .ply: sha1 of its header bytes, size and mtime (no full read of the data)."""
    path = Path(path)
    stat = path.stat()
    with open(path, "rb") as fh:
        head = fh.read(data_offset)
    digest = hashlib.sha1(head)
    digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def relative_transform(axis_conversion: np.ndarray, matrix_world: np.ndarray) -> np.ndarray:
    """T mapping the mesh's raw (file-frame) values to what export must write: inverse(import conversion)
    applied after the object's current transform. Identity when the object was not moved."""
    a = np.asarray(axis_conversion, dtype=np.float64).reshape(4, 4)
    return np.linalg.inv(a) @ np.asarray(matrix_world, dtype=np.float64).reshape(4, 4)


def is_identity(matrix: np.ndarray, tolerance: float = 1e-6) -> bool:
    return bool(np.allclose(matrix, np.eye(4), rtol=0.0, atol=tolerance))
