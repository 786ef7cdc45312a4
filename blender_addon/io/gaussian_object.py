"""Gaussian objects in Blender: build one from a .ply in bulk, and read one back into a .ply's vertex array.

A Gaussian object is a mesh of loose vertices holding the file's raw values (file frame) as point attributes,
with the axis conversion as its matrix_world. Everything here is bulk foreach_set/foreach_get, no per-Gaussian
Python. The file is parsed and validated completely before any datablock is made.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from engine.errors import AnimateGaussiansError, InputFileError, PlyFormatError
from engine.formats import FRAMES, PLY
from engine.ply import write_ply

from . import display_nodes, heap_reuse
from .gaussian_layout import (AXIS_CONVERSION, FILE_TO_LOCAL_KEY, HASH_KEY, LAYOUT_KEY, SEGMENT_ATTRIBUTE,
                              SOURCE_INDEX_ATTRIBUTE, SOURCE_KEY, AttributeSpec, Layout, attribute_specs, from_buffer,
                              is_identity, layout_from_json, layout_to_json, relative_transform, sh_attribute_names,
                              to_buffer)
from .splat_import import FORMAT_KEY, ParsedPly, object_name, parse_any

DEFAULT_POINTS_ONLY_THRESHOLD = 500_000
# Splats larger than this fraction of the scene's extent are clamped in the display (stray huge Gaussians).
_MAX_SIZE_FRACTION = 0.05


class NotGaussianObjectError(AnimateGaussiansError):
    """The object is not an imported Gaussian object."""

    hint = "select an object imported with File > Import > Gaussian Splats"


def _remove_datablocks(created: list) -> None:
    for block in reversed(created):
        try:
            if isinstance(block, bpy.types.Object):
                bpy.data.objects.remove(block)
            elif isinstance(block, bpy.types.Mesh):
                bpy.data.meshes.remove(block)
            elif isinstance(block, bpy.types.NodeTree):
                bpy.data.node_groups.remove(block)
            elif isinstance(block, bpy.types.Material):
                bpy.data.materials.remove(block)
        except ReferenceError:   # already freed with its owner
            pass


def build_object(parsed: ParsedPly, name: str, collection: bpy.types.Collection, convert_axes: bool = True,
                 points_only: bool | None = None,
                 points_only_threshold: int = DEFAULT_POINTS_ONLY_THRESHOLD,
                 file_frame: np.ndarray | None = None) -> bpy.types.Object:
    """Make the Gaussian object from a parsed file; consumes parsed.groups (each freed after its copy into
    Blender, so peak memory stays near one copy of the data). On failure nothing is left behind.
    `file_frame` (4×4, file frame -> INRIA frame) is folded into the axis conversion (e.g. .spz's RUB)."""
    created: list = []
    n = parsed.count
    try:
        mesh = bpy.data.meshes.new(name)
        created.append(mesh)
        mesh.vertices.add(n)
        attributes = mesh.attributes
        for spec in parsed.specs:
            buffer = to_buffer(spec, parsed.groups.pop(spec.name))
            attr = attributes["position"] if spec.is_builtin else attributes.new(spec.name, spec.data_type, "POINT")
            attr.data.foreach_set(spec.foreach_key, buffer)
            del buffer
        attributes.new(SEGMENT_ATTRIBUTE, "INT", "POINT")   # zero-initialised: no segment yet
        # Row of each Gaussian in the file: segments and deletions keep it, so the engine reads the right subset.
        attributes.new(SOURCE_INDEX_ATTRIBUTE, "INT", "POINT").data.foreach_set("value", np.arange(n, dtype=np.int32))
        mesh.update()

        obj = bpy.data.objects.new(name, mesh)
        created.append(obj)
        axis = (AXIS_CONVERSION @ (np.eye(4) if file_frame is None else file_frame)) if convert_axes else np.eye(4)
        obj.matrix_world = Matrix(axis.tolist())
        obj[LAYOUT_KEY] = layout_to_json(parsed.header, axis)
        obj[SOURCE_KEY] = str(Path(parsed.header.path).resolve())
        obj[HASH_KEY] = parsed.source_hash
        obj[FILE_TO_LOCAL_KEY] = np.eye(4).reshape(-1).tolist()
        if points_only is None:
            points_only = n > points_only_threshold
        display_nodes.add_display_modifier(obj, points_only, parsed.display_extent * _MAX_SIZE_FRACTION, created)
        collection.objects.link(obj)
    except Exception:
        _remove_datablocks(created)
        raise
    return obj


def import_ply(path: str | os.PathLike, context: bpy.types.Context | None = None, convert_axes: bool = True,
               points_only: bool | None = None,
               points_only_threshold: int = DEFAULT_POINTS_ONLY_THRESHOLD) -> bpy.types.Object:
    """Import a splat file (3DGS .ply, compressed .ply, .splat, .spz, SOG; see splat_import) as a Gaussian
    object named after the file, linked to the active collection, made active and selected."""
    context = context or bpy.context
    heap_reuse.reuse_freed_buffers()   # before the parse buffers exist, so Blender's arrays can take their place
    parsed, fmt, frame = parse_any(path)
    obj = build_object(parsed, object_name(path), context.collection, convert_axes=convert_axes,
                       points_only=points_only, points_only_threshold=points_only_threshold, file_frame=frame)
    obj[FORMAT_KEY] = fmt
    make_active(context.view_layer, obj)
    return obj


def make_active(view_layer: bpy.types.ViewLayer, obj: bpy.types.Object) -> None:
    """Select `obj` alone and make it the active object: what an import or a split leaves for the next tool."""
    for other in view_layer.objects.selected:
        other.select_set(False)
    obj.select_set(True)
    view_layer.objects.active = obj


def is_gaussian_object(obj: bpy.types.Object | None) -> bool:
    return obj is not None and obj.type == "MESH" and LAYOUT_KEY in obj


def object_layout(obj: bpy.types.Object) -> Layout:
    if not is_gaussian_object(obj):
        raise NotGaussianObjectError(f"{obj.name if obj else 'nothing'} is not a Gaussian object")
    return layout_from_json(obj[LAYOUT_KEY])


def gaussian_count(obj: bpy.types.Object) -> int:
    return len(obj.data.vertices)


def file_to_local(obj: bpy.types.Object) -> np.ndarray:
    """(4, 4) from the source file's frame to the values the mesh holds: identity for an imported object, a
    translation for a segment (its origin at the segment's bottom centre). Objects from before subsets: identity."""
    value = obj.get(FILE_TO_LOCAL_KEY)
    return np.eye(4) if value is None else np.array(value, dtype=np.float64).reshape(4, 4)


def file_to_world(obj: bpy.types.Object, matrix_world=None) -> np.ndarray:
    """(4, 4) from the source file's frame to Blender world: matrix_world @ file_to_local (what the engine gets).
    `matrix_world` overrides the object's own (e.g. an evaluated one, per frame)."""
    world = np.array(obj.matrix_world if matrix_world is None else matrix_world, dtype=np.float64)
    return world @ file_to_local(obj)


def source_indices(obj: bpy.types.Object) -> np.ndarray | None:
    """The rows of the source .ply the object's Gaussians are (int64, mesh order), or None for an object made
    before subsets existed (then it holds the whole file)."""
    attr = obj.data.attributes.get(SOURCE_INDEX_ATTRIBUTE)
    if attr is None or attr.domain != "POINT" or attr.data_type != "INT":
        return None
    if obj.mode == "EDIT":
        obj.update_from_editmode()
    out = np.empty(len(obj.data.vertices), dtype=np.int32)
    attr.data.foreach_get("value", out)
    return out.astype(np.int64)


def _read_attribute(mesh: bpy.types.Mesh, spec: AttributeSpec, n: int) -> np.ndarray:
    attr = mesh.attributes.get(spec.name)
    if attr is None or attr.domain != "POINT" or attr.data_type != spec.data_type:
        found = "missing" if attr is None else f"{attr.data_type} on {attr.domain}"
        raise PlyFormatError(f"attribute {spec.name!r} of {mesh.name} is {found}, expected {spec.data_type} "
                             "on points", hint="restore the attribute, or re-import the .ply")
    buffer = np.empty(n * spec.components, dtype=spec.buffer_dtype)
    attr.data.foreach_get(spec.foreach_key, buffer)
    return buffer


def apply_transform(columns: dict[str, np.ndarray], layout: Layout, matrix: np.ndarray) -> None:
    """Transform the Gaussians in `columns` (file property name -> values) by `matrix` in place:
    positions, rotations, log-scales and SH (see engine.gaussian_transform)."""
    from engine.gaussian_transform import transform_gaussian_arrays

    n = len(columns["x"])
    k = (layout.sh_degree + 1) ** 2 - 1
    means = np.stack([columns[c] for c in ("x", "y", "z")], axis=1).astype(np.float32)
    quats = np.stack([columns[f"rot_{i}"] for i in range(4)], axis=1).astype(np.float32)
    scales = np.stack([columns[f"scale_{i}"] for i in range(3)], axis=1).astype(np.float32)
    rest = np.stack([columns[f"f_rest_{i}"] for i in range(3 * k)], axis=1).astype(np.float32) if k \
        else np.zeros((n, 0), np.float32)
    sh_rest = rest.reshape(n, 3, k).transpose(0, 2, 1)   # channel-major file order -> (N, K, RGB)
    means, quats, scales, sh_rest = transform_gaussian_arrays(means, quats, scales, sh_rest, matrix)
    for i, c in enumerate("xyz"):
        columns[c] = means[:, i]
    for i in range(4):
        columns[f"rot_{i}"] = quats[:, i]
    for i in range(3):
        columns[f"scale_{i}"] = scales[:, i]
    for c in range(3):
        for j in range(k):
            columns[f"f_rest_{c * k + j}"] = sh_rest[:, j, c]


def _undo_file_to_local(columns: dict[str, np.ndarray], layout: Layout, local: np.ndarray) -> None:
    """Local values -> file frame. A pure translation (what segmentation writes) moves the positions only, in
    float64, so every other value stays bit for bit; anything else goes through apply_transform."""
    if np.allclose(local[:3, :3], np.eye(3), rtol=0.0, atol=1e-12) and np.allclose(local[3], [0, 0, 0, 1]):
        for i, c in enumerate("xyz"):
            columns[c] = (columns[c].astype(np.float64) - local[i, 3]).astype(columns[c].dtype)
    else:
        apply_transform(columns, layout, np.linalg.inv(local))


def object_to_vertices(obj: bpy.types.Object, axis_conversion: np.ndarray | None = None) -> tuple[np.ndarray, Layout]:
    """The object's Gaussians as a structured vertex array in its file layout, edits and transform included.
    `axis_conversion` (default: the import's) is the target frame -> Blender world, for another format's frame."""
    layout = object_layout(obj)
    if obj.mode == "EDIT":
        obj.update_from_editmode()
    mesh = obj.data
    n = len(mesh.vertices)
    if n == 0:
        raise PlyFormatError(f"{obj.name} has no Gaussians left to export", hint="undo the deletion")
    codes = layout.codes
    columns: dict[str, np.ndarray] = {}
    for spec in attribute_specs(layout.properties):
        columns.update(from_buffer(spec, _read_attribute(mesh, spec, n), codes))
    local = file_to_local(obj)
    if not is_identity(local):   # a segment holds its values relative to its origin: back to the file frame
        _undo_file_to_local(columns, layout, local)
    matrix = relative_transform(layout.axis_conversion if axis_conversion is None else axis_conversion,
                                file_to_world(obj))
    if not is_identity(matrix):
        apply_transform(columns, layout, matrix)
    vertices = np.empty(n, dtype=layout.structured_dtype())
    for name, _ in layout.properties:
        vertices[name] = columns.pop(name)
    return vertices, layout


def _format_frame(fmt: str) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = FRAMES[fmt]
    return out


def target_axis_conversion(obj: bpy.types.Object, fmt: str) -> np.ndarray:
    """(4, 4) from the target format's frame to Blender world, for this object."""
    source = str(obj.get(FORMAT_KEY, PLY))
    layout = object_layout(obj)
    return layout.axis_conversion @ np.linalg.inv(_format_frame(source)) @ _format_frame(fmt)


def export_ply(obj: bpy.types.Object, path: str | os.PathLike) -> Path:
    """Write the object back to a 3DGS .ply in its original layout (byte order, property types, comments)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputFileError(f"cannot write {path}: folder {path.parent} does not exist")
    vertices, layout = object_to_vertices(obj)
    write_ply(path, vertices, fmt=layout.fmt, comments=layout.comments)
    return path


def sh_attributes(obj: bpy.types.Object) -> list[str]:
    """Names of the object's SH attributes sh_1..sh_K (for callers that need per-coefficient access)."""
    return sh_attribute_names(object_layout(obj).sh_degree)
