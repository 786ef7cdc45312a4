"""Gaussian objects as subsets of their .ply in Blender: the selection highlight, and splitting the selected
Gaussians off into a segment object. Bulk foreach_get/foreach_set only; the arithmetic is in selection.py."""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from ..io import gaussian_object
from ..io.gaussian_layout import (FILE_TO_LOCAL_KEY, SEGMENT_ATTRIBUTE, SELECTION_ATTRIBUTE, SOURCE_INDEX_ATTRIBUTE,
                                  SOURCE_KEY)
from . import selection

# Blender attribute type -> (foreach key, components, buffer dtype) for every type a point attribute may have.
_BUFFERS = {
    "FLOAT": ("value", 1, np.float32), "INT": ("value", 1, np.int32), "INT8": ("value", 1, np.int32),
    "BOOLEAN": ("value", 1, bool), "FLOAT_VECTOR": ("vector", 3, np.float32), "FLOAT2": ("vector", 2, np.float32),
    "INT32_2D": ("value", 2, np.int32), "INT16_2D": ("value", 2, np.int32), "QUATERNION": ("value", 4, np.float32),
    "FLOAT_COLOR": ("color", 4, np.float32), "BYTE_COLOR": ("color", 4, np.float32),
    "FLOAT4X4": ("value", 16, np.float32),
}


class SplitError(selection.SelectionError):
    """The object cannot be split as it is."""

    hint = "apply or remove what the message names, or re-import the .ply and segment it first"


def read_point_attributes(mesh: bpy.types.Mesh) -> dict[str, tuple[str, np.ndarray]]:
    """Every point attribute of the mesh (internal ones included): name -> (data type, (N, components))."""
    n = len(mesh.vertices)
    out = {}
    for attr in mesh.attributes:
        if attr.domain != "POINT":
            continue
        if attr.data_type not in _BUFFERS:
            raise SplitError(f"attribute {attr.name!r} of {mesh.name} has type {attr.data_type}, which a split "
                             "cannot carry over", hint=f"remove the attribute {attr.name!r} first")
        key, components, dtype = _BUFFERS[attr.data_type]
        buffer = np.empty(n * components, dtype=dtype)
        attr.data.foreach_get(key, buffer)
        out[attr.name] = (attr.data_type, buffer.reshape(n, components))
    return out


def build_mesh(name: str, attributes: dict[str, tuple[str, np.ndarray]], materials) -> bpy.types.Mesh:
    """A mesh of loose vertices holding these point attributes (as read by read_point_attributes)."""
    n = len(attributes["position"][1])
    mesh = bpy.data.meshes.new(name)
    try:
        mesh.vertices.add(n)
        for attr_name, (data_type, values) in attributes.items():
            attr = mesh.attributes.get(attr_name)   # position, and internal ones Blender made (.select_vert)
            if attr is None or attr.data_type != data_type or attr.domain != "POINT":
                attr = mesh.attributes.new(attr_name, data_type, "POINT")
            attr.data.foreach_set(_BUFFERS[data_type][0], np.ascontiguousarray(values).reshape(-1))
        for material in materials:
            mesh.materials.append(material)
        mesh.update()
    except Exception:
        bpy.data.meshes.remove(mesh)
        raise
    return mesh


def selection_mask(obj: bpy.types.Object) -> np.ndarray | None:
    """The object's current highlight as a bool mask, or None when it has none."""
    attr = obj.data.attributes.get(SELECTION_ATTRIBUTE)
    if attr is None or attr.domain != "POINT" or attr.data_type != "FLOAT":
        return None
    values = np.empty(len(obj.data.vertices), np.float32)
    attr.data.foreach_get("value", values)
    return values > 0.5


def write_selection(obj: bpy.types.Object, mask: np.ndarray) -> int:
    """Show `mask` as the highlight (point attribute `selection`); returns how many Gaussians it selects."""
    mesh = obj.data
    mask = selection.as_mask(mask, len(mesh.vertices))
    attr = mesh.attributes.get(SELECTION_ATTRIBUTE)
    if attr is not None and (attr.domain != "POINT" or attr.data_type != "FLOAT"):
        mesh.attributes.remove(attr)
        attr = None
    if attr is None:
        attr = mesh.attributes.new(SELECTION_ATTRIBUTE, "FLOAT", "POINT")
    attr.data.foreach_set("value", selection.highlight_values(mask))
    mesh.update()
    obj.update_tag()
    return int(mask.sum())


def clear_selection(obj: bpy.types.Object) -> bool:
    """Remove the highlight; False when there was none."""
    attr = obj.data.attributes.get(SELECTION_ATTRIBUTE)
    if attr is None:
        return False
    obj.data.attributes.remove(attr)
    obj.data.update()
    obj.update_tag()
    return True


def _same_source_objects(obj: bpy.types.Object) -> list[bpy.types.Object]:
    source = obj.get(SOURCE_KEY)
    return [o for o in bpy.data.objects if o.type == "MESH" and o.get(SOURCE_KEY) == source]


def _segment_ids(objects: list[bpy.types.Object]):
    for o in objects:
        attr = o.data.attributes.get(SEGMENT_ATTRIBUTE)
        if attr is not None and attr.data_type == "INT" and attr.domain == "POINT":
            ids = np.empty(len(o.data.vertices), np.int32)
            attr.data.foreach_get("value", ids)
            yield ids


def _check_object(obj: bpy.types.Object) -> None:
    gaussian_object.object_layout(obj)   # raises NotGaussianObjectError
    if obj.mode != "OBJECT":
        raise SplitError(f"{obj.name} is in {obj.mode.title()} Mode", hint="switch to Object Mode first")
    mesh = obj.data
    if len(mesh.edges) or len(mesh.polygons):
        raise SplitError(f"{obj.name} has edges or faces; a Gaussian object is loose points only")
    if mesh.shape_keys is not None:
        raise SplitError(f"{obj.name} has shape keys, which a split cannot carry over")
    if len(obj.vertex_groups):
        raise SplitError(f"{obj.name} has vertex groups (rigged?), which a split cannot carry over",
                         hint="segment before rigging, or remove the vertex groups")


def split_selected(obj: bpy.types.Object, mask: np.ndarray, name: str = "segment") -> bpy.types.Object:
    """Move the Gaussians where `mask` is True into a new object `name` (every attribute, a new `segment` id,
    the same source .ply, origin at their bottom centre) and remove them from `obj`. Their place in the world
    does not change. Everything is built before the scene is touched, so a failure leaves it as it was."""
    _check_object(obj)
    mesh = obj.data
    mask = selection.as_mask(mask, len(mesh.vertices))
    selection.check_splittable(mask)
    attributes = read_point_attributes(mesh)
    attributes.pop(SELECTION_ATTRIBUTE, None)   # the highlight has done its work
    n = len(mesh.vertices)
    if SOURCE_INDEX_ATTRIBUTE not in attributes:   # an object from before subsets holds its whole file
        attributes[SOURCE_INDEX_ATTRIBUTE] = ("INT", np.arange(n, dtype=np.int32)[:, None])
    if SEGMENT_ATTRIBUTE not in attributes:
        attributes[SEGMENT_ATTRIBUTE] = ("INT", np.zeros((n, 1), np.int32))
    segment_id = selection.next_segment_id(_segment_ids(_same_source_objects(obj)))

    types = {k: t for k, (t, _) in attributes.items()}
    kept, moved = selection.split_buffers({k: v for k, (_, v) in attributes.items()}, mask)
    file_to_local, matrix_world, positions = selection.segment_frame(
        moved["position"], gaussian_object.file_to_local(obj), gaussian_object.file_to_world(obj))
    moved["position"] = positions
    moved[SEGMENT_ATTRIBUTE] = np.full_like(moved[SEGMENT_ATTRIBUTE], segment_id)

    materials = list(mesh.materials)
    created: list = []
    try:
        kept_mesh = build_mesh(mesh.name, {k: (types[k], v) for k, v in kept.items()}, materials)
        created.append(kept_mesh)
        segment_mesh = build_mesh(name, {k: (types[k], v) for k, v in moved.items()}, materials)
        created.append(segment_mesh)
        segment = obj.copy()   # modifiers (display), custom properties (layout, source), parent, visibility
        created.append(segment)
        segment.data = segment_mesh
        segment.animation_data_clear()   # its local frame differs from obj's: obj's keys would misplace it
        segment.name = name
        segment[FILE_TO_LOCAL_KEY] = file_to_local.reshape(-1).tolist()
        segment.matrix_world = Matrix(matrix_world.tolist())
        for collection in obj.users_collection:
            collection.objects.link(segment)
    except Exception:
        for block in reversed(created):
            try:
                if isinstance(block, bpy.types.Object):
                    bpy.data.objects.remove(block)
                else:
                    bpy.data.meshes.remove(block)
            except ReferenceError:
                pass
        raise
    # The swap: nothing below can fail on valid data.
    old_name = mesh.name
    obj.data = kept_mesh
    if mesh.users == 0:
        bpy.data.meshes.remove(mesh)
        kept_mesh.name = old_name
    obj.update_tag()
    return segment
