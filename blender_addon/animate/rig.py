"""The non-rigid rig: an armature with one bone per motion handle, vertex groups holding the skinning weights,
an Armature modifier on the Gaussian object, and the bones' keys; plus reading it back for Render Splats.

Weights are kept sparse (motion_result.MAX_INFLUENCES per Gaussian, in steps of 1/WEIGHT_STEPS) so vertex groups
can be written in bulk (one add() per handle and weight value) and the same values go to the render, where
they are read back from hidden point attributes in bulk.
"""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from . import keyframes, motion_result

RIG_KEY = "gaussians_rig"                  # on the armature: the name of the Gaussian object it deforms
MODIFIER_NAME = "Gaussians Rig"
HANDLE_ATTRIBUTE = ".skin_handle_{}"       # hidden INT point attributes: the i-th handle of each Gaussian
WEIGHT_ATTRIBUTE = ".skin_weight_{}"       # hidden FLOAT point attributes: its weight


def bone_name(k: int) -> str:
    return f"handle_{k:03d}"


def rig_of(obj: bpy.types.Object) -> bpy.types.Object | None:
    """The armature of the object's Gaussians Rig modifier, when it is ours and enabled for rendering."""
    mod = obj.modifiers.get(MODIFIER_NAME)
    if mod is None or mod.type != "ARMATURE" or mod.object is None or not mod.show_render:
        return None
    return mod.object if mod.object.get(RIG_KEY) is not None else None


def remove_rig(obj: bpy.types.Object) -> None:
    """Take a previous rig off the object (its modifier, vertex groups, attributes and armature)."""
    mod = obj.modifiers.get(MODIFIER_NAME)
    if mod is not None:
        arm = mod.object
        obj.modifiers.remove(mod)
        if arm is not None and arm.get(RIG_KEY) is not None:
            if obj.parent == arm:
                world = obj.matrix_world.copy()
                obj.parent = None
                obj.matrix_world = world
            data = arm.data
            bpy.data.objects.remove(arm)
            if data.users == 0:
                bpy.data.armatures.remove(data)
    for group in [g for g in obj.vertex_groups if g.name.startswith("handle_")]:
        obj.vertex_groups.remove(group)
    for name in [a.name for a in obj.data.attributes if a.name.startswith(".skin_")]:
        obj.data.attributes.remove(obj.data.attributes[name])


def _write_vertex_groups(obj: bpy.types.Object, handles: np.ndarray, weights: np.ndarray, count: int) -> None:
    """One add() per (handle, weight value): weights are quantised, so that is at most WEIGHT_STEPS per handle."""
    rows = np.repeat(np.arange(len(handles)), handles.shape[1])
    h, w = handles.ravel(), weights.ravel()
    keep = w > 0
    rows, h, w = rows[keep], h[keep], w[keep]
    order = np.lexsort((w, h))
    rows, h, w = rows[order], h[order], w[order]
    cuts = np.flatnonzero(np.r_[True, (h[1:] != h[:-1]) | (w[1:] != w[:-1]), True])
    groups = [obj.vertex_groups.new(name=bone_name(k)) for k in range(count)]
    for start, stop in zip(cuts[:-1], cuts[1:]):
        groups[h[start]].add(rows[start:stop].tolist(), float(w[start]), "REPLACE")


def _write_skin_attributes(mesh: bpy.types.Mesh, handles: np.ndarray, weights: np.ndarray) -> None:
    for i in range(handles.shape[1]):
        mesh.attributes.new(HANDLE_ATTRIBUTE.format(i), "INT", "POINT").data.foreach_set(
            "value", np.ascontiguousarray(handles[:, i], np.int32))
        mesh.attributes.new(WEIGHT_ATTRIBUTE.format(i), "FLOAT", "POINT").data.foreach_set(
            "value", np.ascontiguousarray(weights[:, i], np.float32))


def skinning(obj: bpy.types.Object) -> tuple[np.ndarray, np.ndarray] | None:
    """(handles (N, M) int32, weights (N, M) float32) as the rig stored them, or None without a rig."""
    mesh = obj.data
    n = len(mesh.vertices)
    handles, weights = [], []
    i = 0
    while (h := mesh.attributes.get(HANDLE_ATTRIBUTE.format(i))) is not None:
        hb, wb = np.empty(n, np.int32), np.empty(n, np.float32)
        h.data.foreach_get("value", hb)
        mesh.attributes[WEIGHT_ATTRIBUTE.format(i)].data.foreach_get("value", wb)
        handles.append(hb)
        weights.append(wb)
        i += 1
    if not handles:
        return None
    return np.stack(handles, axis=1), np.stack(weights, axis=1)


def build_rig(obj: bpy.types.Object, handle_rest: np.ndarray, weights: np.ndarray, file_to_local: np.ndarray,
              matrix_world: np.ndarray | None = None) -> bpy.types.Object:
    """An armature at the object's transform with a bone at each handle (file frame), vertex groups of the
    sparse weights, and an Armature modifier first in the object's stack; the object becomes its child."""
    context = bpy.context
    remove_rig(obj)
    L = np.asarray(file_to_local, np.float64)
    heads = np.asarray(handle_rest, np.float64) @ L[:3, :3].T + L[:3, 3]
    handles, sparse = motion_result.sparse_weights(weights)
    extent = float(np.ptp(heads, axis=0).max()) if len(heads) > 1 else 0.0
    length = max(0.1 * extent, 1e-3)

    data = bpy.data.armatures.new(f"{obj.name}_rig")
    arm = bpy.data.objects.new(f"{obj.name}_rig", data)
    arm[RIG_KEY] = obj.name
    for collection in obj.users_collection:
        collection.objects.link(arm)
    arm.matrix_world = Matrix((np.array(obj.matrix_world) if matrix_world is None else matrix_world).tolist())
    view_layer = context.view_layer
    previous_active = view_layer.objects.active
    if context.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        for k, head in enumerate(heads):
            bone = data.edit_bones.new(bone_name(k))
            bone.head = head.tolist()
            bone.tail = (head + (0.0, length, 0.0)).tolist()
            bone.roll = 0.0
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = previous_active
    for pose_bone in arm.pose.bones:
        pose_bone.rotation_mode = "QUATERNION"

    _write_vertex_groups(obj, handles, sparse, len(heads))
    _write_skin_attributes(obj.data, handles, sparse)
    mod = obj.modifiers.new(MODIFIER_NAME, "ARMATURE")
    mod.object = arm
    mod.use_vertex_groups = True
    mod.use_bone_envelopes = False
    mod.use_deform_preserve_volume = False
    obj.modifiers.move(len(obj.modifiers) - 1, 0)    # deform the points before the display turns them to splats
    if obj.parent is None:
        world = obj.matrix_world.copy()
        obj.parent = arm
        obj.matrix_parent_inverse = arm.matrix_world.inverted()
        obj.matrix_world = world
    return arm


def rest_matrices(arm: bpy.types.Object) -> np.ndarray:
    """Rest matrices (K, 4, 4) of the rig's bones in armature space, in handle order."""
    bones = arm.data.bones
    return np.array([np.array(bones[bone_name(k)].matrix_local) for k in range(len(bones))])


def write_bone_motion(arm: bpy.types.Object, handle_transforms: np.ndarray, file_to_local: np.ndarray,
                      times: np.ndarray, tol_loc: float, tol_quat: float) -> int:
    """Reduced Bézier location/quaternion keys on each bone that reproduce the file-frame handle transforms
    (F, K, 4, 4); returns the key count."""
    location, quat = motion_result.bone_pose_motion(handle_transforms, rest_matrices(arm), file_to_local)
    container = keyframes.channel_container(arm)
    total = 0
    for k in range(location.shape[1]):
        name = bone_name(k)
        base = f'pose.bones["{name}"].'
        loc_keys = keyframes.reduce_keys(times, location[:, k], tol_loc)
        rot_keys = keyframes.reduce_keys(times, quat[:, k], tol_quat)
        keyframes.write_keys(container, base + "location", loc_keys, name)
        keyframes.write_keys(container, base + "rotation_quaternion", rot_keys, name)
        total += 3 * loc_keys.count + 4 * rot_keys.count
    return total


def handle_transforms_now(obj: bpy.types.Object, arm: bpy.types.Object, depsgraph, file_to_world: np.ndarray
                          ) -> np.ndarray:
    """The rig's current pose as file-frame handle transforms (K, 4, 4) of `obj` (whose file_to_world, as
    evaluated now, is given): what the Armature modifier does to it, for the engine to apply."""
    arm_eval = arm.evaluated_get(depsgraph)
    rest = rest_matrices(arm_eval)
    pose = np.array([np.array(arm_eval.pose.bones[bone_name(k)].matrix) for k in range(len(rest))])
    deform = pose @ np.linalg.inv(rest)
    return motion_result.handle_transforms_from_pose(deform, np.array(arm_eval.matrix_world), file_to_world)
