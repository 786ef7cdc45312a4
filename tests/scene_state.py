"""A complete fingerprint of the open .blend for tests that must prove "the scene is exactly as it was" (after an
undo, after an engine fault): objects, meshes with every attribute's values, node groups, actions with their
keys, markers, the frame range. Equal fingerprints mean equal scenes for everything the add-on touches."""

from __future__ import annotations

import hashlib

import bpy
import numpy as np

_FOREACH = {"FLOAT": ("value", np.float32, 1), "INT": ("value", np.int32, 1), "INT8": ("value", np.int8, 1),
            "BOOLEAN": ("value", bool, 1), "FLOAT_VECTOR": ("vector", np.float32, 3),
            "FLOAT2": ("vector", np.float32, 2), "FLOAT_COLOR": ("color", np.float32, 4),
            "BYTE_COLOR": ("color", np.float32, 4), "QUATERNION": ("value", np.float32, 4),
            "FLOAT4X4": ("value", np.float32, 16), "INT32_2D": ("value", np.int32, 2)}


def _digest(values: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(values).tobytes()).hexdigest()[:16]


def _attributes(mesh: bpy.types.Mesh) -> dict:
    out = {}
    for attr in mesh.attributes:
        prop, dtype, width = _FOREACH.get(attr.data_type, (None, None, 0))
        if prop is None:
            out[attr.name] = (attr.domain, attr.data_type)
            continue
        values = np.empty(len(attr.data) * width, dtype)
        attr.data.foreach_get(prop, values)
        out[attr.name] = (attr.domain, attr.data_type, len(attr.data), _digest(values))
    return out


def _rounded(matrix) -> tuple:
    return tuple(round(v, 5) for row in matrix for v in row)


def _fcurves(action: bpy.types.Action) -> list:
    curves = getattr(action, "fcurves", None)
    if curves is None or len(curves) == 0:   # Blender 5 layered actions keep curves in channelbags
        curves = [fc for layer in getattr(action, "layers", []) for strip in layer.strips
                  for bag in strip.channelbags for fc in bag.fcurves]
    out = []
    for fc in curves:
        co = np.empty(2 * len(fc.keyframe_points), np.float32)
        fc.keyframe_points.foreach_get("co", co)
        out.append((fc.data_path, fc.array_index, len(fc.keyframe_points), _digest(co)))
    return sorted(out)


def _object(obj: bpy.types.Object) -> tuple:
    action = obj.animation_data.action.name if obj.animation_data and obj.animation_data.action else None
    return (obj.type, obj.data.name if obj.data else None, obj.parent.name if obj.parent else None,
            _rounded(obj.matrix_world), obj.rotation_mode, action, obj.hide_viewport, obj.hide_render,
            tuple((m.name, m.type, getattr(getattr(m, "node_group", None), "name", None)) for m in obj.modifiers),
            tuple(g.name for g in obj.vertex_groups),
            tuple(sorted((k, repr(obj[k])) for k in obj.keys() if not k.startswith("_"))),
            tuple(c.name for c in obj.users_collection))


def scene_state() -> dict:
    """Everything the add-on may change, as comparable plain values."""
    scenes = {s.name: (s.frame_start, s.frame_end, s.frame_current, s.camera.name if s.camera else None,
                       sorted((m.name, m.frame) for m in s.timeline_markers)) for s in bpy.data.scenes}
    return {
        "scenes": scenes,
        "objects": {o.name: _object(o) for o in bpy.data.objects},
        "meshes": {m.name: (len(m.vertices), len(m.edges), len(m.polygons), _attributes(m)) for m in bpy.data.meshes},
        "node_groups": {g.name: (len(g.nodes), len(g.links), sorted(n.bl_idname for n in g.nodes))
                        for g in bpy.data.node_groups},
        "actions": {a.name: _fcurves(a) for a in bpy.data.actions},
        "armatures": {a.name: sorted(b.name for b in a.bones) for a in bpy.data.armatures},
        "collections": {c.name: sorted(o.name for o in c.objects) for c in bpy.data.collections},
        "materials": sorted(m.name for m in bpy.data.materials),
        "cameras": sorted(c.name for c in bpy.data.cameras),
        "images": sorted(i.name for i in bpy.data.images),
    }


def differences(before: dict, after: dict) -> list[str]:
    """Readable differences between two scene_state() fingerprints (empty when equal)."""
    out = []
    for kind in sorted(set(before) | set(after)):
        b, a = before.get(kind), after.get(kind)
        if b == a:
            continue
        if isinstance(b, dict) and isinstance(a, dict):
            for name in sorted(set(b) | set(a)):
                if b.get(name) != a.get(name):
                    out.append(f"{kind}[{name!r}]: {b.get(name)!r} -> {a.get(name)!r}")
        else:
            out.append(f"{kind}: {b!r} -> {a!r}")
    return out
