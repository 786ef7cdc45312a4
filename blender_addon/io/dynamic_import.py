"""Dynamic Gaussian sequences in Blender: a params.npz becomes a Gaussian object that plays on the timeline.

The object is an ordinary Gaussian object (frame 0 written as a .ply and imported, so export, segmentation and
Render Splats treat it as any other) plus per-timestep point attributes `dyn_pos_<t>` and `dyn_rot_<t>`; a
Geometry Nodes modifier ahead of the display picks the timestep from the scene frame and writes `position`
and `rotation` from them, so the viewport plays the sequence and the engine renders the frame's Gaussians
from the .npz. The 4D-query highlight (`q4d_*` attributes → `selection`) is a second small modifier.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np

from engine.atomic_files import atomic_write
from engine.dynamic import DynamicGaussians, read_dynamic
from engine.ply import gaussians_to_structured, write_ply
from engine.scene_cache import cache_dir, content_hash

from .. import compat
from . import gaussian_object
from .gaussian_layout import SELECTION_ATTRIBUTE

DYNAMIC_SOURCE_KEY = "gaussians_dynamic_source"        # absolute path of the params.npz
DYNAMIC_START_KEY = "gaussians_dynamic_frame_start"    # scene frame of timestep 0
DYNAMIC_STEPS_KEY = "gaussians_dynamic_timesteps"
POSITION_PREFIX = "dyn_pos_"
ROTATION_PREFIX = "dyn_rot_"
PLAYBACK_GROUP = "Gaussian Playback v1"
PLAYBACK_MODIFIER = "Gaussian Playback"
HIGHLIGHT_GROUP = "Gaussian 4D Highlight v1"
HIGHLIGHT_MODIFIER = "Gaussian 4D Highlight"
# Query answer per Gaussian: first/last scene frame it matches (−1: never) and its peak relevancy.
QUERY_START_ATTRIBUTE = "q4d_start"
QUERY_END_ATTRIBUTE = "q4d_end"
QUERY_PEAK_ATTRIBUTE = "q4d_peak"


def timestep_for_frame(obj: bpy.types.Object, frame: int) -> int:
    """The sequence timestep shown at a scene frame (held at the ends)."""
    start = int(obj.get(DYNAMIC_START_KEY, 0))
    steps = int(obj.get(DYNAMIC_STEPS_KEY, 1))
    return int(min(max(frame - start, 0), steps - 1))


def is_dynamic(obj: bpy.types.Object | None) -> bool:
    return obj is not None and DYNAMIC_SOURCE_KEY in obj


def _new(tree, kind: str, location, **props):
    node = tree.nodes.new(kind)
    node.location = location
    for k, v in props.items():
        setattr(node, k, v)
    return node


def _frame_socket(tree, start_socket, steps_socket, x: int):
    """clamp(frame − start, 0, steps − 1) as a float socket."""
    time = _new(tree, "GeometryNodeInputSceneTime", (x, 0))
    sub = _new(tree, "ShaderNodeMath", (x + 200, 0), operation="SUBTRACT")
    tree.links.new(time.outputs["Frame"], sub.inputs[0])
    tree.links.new(start_socket, sub.inputs[1])
    last = _new(tree, "ShaderNodeMath", (x + 200, -150), operation="SUBTRACT")
    tree.links.new(steps_socket, last.inputs[0])
    last.inputs[1].default_value = 1.0
    lo = _new(tree, "ShaderNodeMath", (x + 400, 0), operation="MAXIMUM")
    tree.links.new(sub.outputs[0], lo.inputs[0])
    lo.inputs[1].default_value = 0.0
    hi = _new(tree, "ShaderNodeMath", (x + 600, 0), operation="MINIMUM")
    tree.links.new(lo.outputs[0], hi.inputs[0])
    tree.links.new(last.outputs[0], hi.inputs[1])
    rounded = _new(tree, "ShaderNodeMath", (x + 800, 0), operation="ROUND")
    tree.links.new(hi.outputs[0], rounded.inputs[0])
    return rounded.outputs[0]


def _attribute_named(tree, prefix: str, number_socket, data_type: str, x: int, y: int):
    """Named Attribute whose name is prefix + str(int(number))."""
    to_text = _new(tree, "FunctionNodeValueToString", (x, y))
    tree.links.new(number_socket, to_text.inputs["Value"])
    to_text.inputs["Decimals"].default_value = 0
    prefix_node = _new(tree, "FunctionNodeInputString", (x, y + 120), string=prefix)
    join = _new(tree, "GeometryNodeStringJoin", (x + 200, y))
    # Multi-input: Blender joins the most recently linked string first, so link the number, then the prefix.
    tree.links.new(to_text.outputs["String"], join.inputs["Strings"])
    tree.links.new(prefix_node.outputs[0], join.inputs["Strings"])
    read = _new(tree, "GeometryNodeInputNamedAttribute", (x + 400, y), data_type=data_type)
    tree.links.new(join.outputs["String"], read.inputs["Name"])
    return read.outputs["Attribute"]


def _group(name: str, inputs: list[tuple[str, str, float]]) -> bpy.types.NodeTree:
    tree = bpy.data.node_groups.new(name, "GeometryNodeTree")
    tree.is_modifier = True
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    for socket_name, kind, default in inputs:
        s = tree.interface.new_socket(socket_name, in_out="INPUT", socket_type=kind)
        s.default_value = default
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    return tree


def ensure_playback_group() -> bpy.types.NodeTree:
    tree = bpy.data.node_groups.get(PLAYBACK_GROUP)
    if tree is not None:
        return tree
    tree = _group(PLAYBACK_GROUP, [("Start Frame", "NodeSocketInt", 1), ("Timesteps", "NodeSocketInt", 1)])
    gin = _new(tree, "NodeGroupInput", (-1200, 0))
    gout = _new(tree, "NodeGroupOutput", (1000, 0))
    step = _frame_socket(tree, gin.outputs["Start Frame"], gin.outputs["Timesteps"], -1000)
    position = _attribute_named(tree, POSITION_PREFIX, step, "FLOAT_VECTOR", -100, 200)
    rotation = _attribute_named(tree, ROTATION_PREFIX, step, "QUATERNION", -100, -300)
    set_pos = _new(tree, "GeometryNodeSetPosition", (500, 0))
    tree.links.new(gin.outputs["Geometry"], set_pos.inputs["Geometry"])
    tree.links.new(position, set_pos.inputs["Position"])
    store = _new(tree, "GeometryNodeStoreNamedAttribute", (750, 0), data_type="QUATERNION", domain="POINT")
    store.inputs["Name"].default_value = "rotation"
    tree.links.new(set_pos.outputs["Geometry"], store.inputs["Geometry"])
    tree.links.new(rotation, store.inputs["Value"])
    tree.links.new(store.outputs["Geometry"], gout.inputs["Geometry"])
    return tree


def ensure_highlight_group() -> bpy.types.NodeTree:
    """selection = peak where q4d_start ≤ frame ≤ q4d_end, else 0 (read by the display's highlight)."""
    tree = bpy.data.node_groups.get(HIGHLIGHT_GROUP)
    if tree is not None:
        return tree
    tree = _group(HIGHLIGHT_GROUP, [])
    gin = _new(tree, "NodeGroupInput", (-800, 0))
    gout = _new(tree, "NodeGroupOutput", (600, 0))
    time = _new(tree, "GeometryNodeInputSceneTime", (-800, -200))
    reads = {}
    for i, (name, kind) in enumerate(((QUERY_START_ATTRIBUTE, "INT"), (QUERY_END_ATTRIBUTE, "INT"),
                                      (QUERY_PEAK_ATTRIBUTE, "FLOAT"))):
        node = _new(tree, "GeometryNodeInputNamedAttribute", (-800, -350 - 150 * i), data_type=kind)
        node.inputs["Name"].default_value = name
        reads[name] = node.outputs["Attribute"]
    after_start = _new(tree, "ShaderNodeMath", (-500, -200), operation="GREATER_THAN")   # frame > start − 0.5
    tree.links.new(time.outputs["Frame"], after_start.inputs[0])
    start_minus = _new(tree, "ShaderNodeMath", (-650, -350), operation="SUBTRACT")
    tree.links.new(reads[QUERY_START_ATTRIBUTE], start_minus.inputs[0])
    start_minus.inputs[1].default_value = 0.5
    tree.links.new(start_minus.outputs[0], after_start.inputs[1])
    before_end = _new(tree, "ShaderNodeMath", (-500, -500), operation="LESS_THAN")       # frame < end + 0.5
    tree.links.new(time.outputs["Frame"], before_end.inputs[0])
    end_plus = _new(tree, "ShaderNodeMath", (-650, -500), operation="ADD")
    tree.links.new(reads[QUERY_END_ATTRIBUTE], end_plus.inputs[0])
    end_plus.inputs[1].default_value = 0.5
    tree.links.new(end_plus.outputs[0], before_end.inputs[1])
    both = _new(tree, "ShaderNodeMath", (-300, -300), operation="MULTIPLY")
    tree.links.new(after_start.outputs[0], both.inputs[0])
    tree.links.new(before_end.outputs[0], both.inputs[1])
    value = _new(tree, "ShaderNodeMath", (-100, -300), operation="MULTIPLY")
    tree.links.new(both.outputs[0], value.inputs[0])
    tree.links.new(reads[QUERY_PEAK_ATTRIBUTE], value.inputs[1])
    store = _new(tree, "GeometryNodeStoreNamedAttribute", (300, 0), data_type="FLOAT", domain="POINT")
    store.inputs["Name"].default_value = SELECTION_ATTRIBUTE
    tree.links.new(gin.outputs["Geometry"], store.inputs["Geometry"])
    tree.links.new(value.outputs[0], store.inputs["Value"])
    tree.links.new(store.outputs["Geometry"], gout.inputs["Geometry"])
    return tree


def _move_to_front(obj: bpy.types.Object, modifier: bpy.types.Modifier, index: int = 0) -> None:
    current = list(obj.modifiers).index(modifier)
    if current != index:
        obj.modifiers.move(current, index)


def _set_input(modifier: bpy.types.Modifier, name: str, value) -> None:
    for item in modifier.node_group.interface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.name == name:
            compat.set_modifier_input(modifier, item.identifier, value)
            return
    raise KeyError(name)


def _frame0_ply(path: Path, seq: DynamicGaussians, digest: str) -> Path:
    """Timestep 0 as a .ply in the engine cache (the object's base values and its source for the engine)."""
    target = cache_dir() / "dynamic" / f"{path.stem}_{digest[:16]}_t0.ply"
    if not target.exists():
        with atomic_write(target) as partial:
            write_ply(partial, gaussians_to_structured(seq.frame(0)))
    return target


def import_dynamic(path: str | os.PathLike, context: bpy.types.Context | None = None, frame_start: int | None = None,
                   set_frame_range: bool = True, points_only: bool | None = None,
                   base_ply: str | os.PathLike | None = None) -> bpy.types.Object:
    """Import a params.npz as an animated Gaussian object (named after the folder for 'params.npz', else the
    file stem). Timestep t shows at scene frame frame_start + t (default: the scene's start frame).
    `base_ply`: the object's base values and engine source instead of timestep 0 written out (a PLY
    sequence's first frame, with its SH)."""
    context = context or bpy.context
    path = Path(path).expanduser().resolve()
    seq = read_dynamic(path)                      # validates completely before anything is made
    ply = Path(base_ply) if base_ply is not None else _frame0_ply(path, seq, content_hash(path))
    scene = context.scene
    start = scene.frame_start if frame_start is None else int(frame_start)
    obj = gaussian_object.import_ply(ply, context, points_only=points_only)
    try:
        obj.name = obj.data.name = path.parent.name if path.stem == "params" else path.stem
        attrs = obj.data.attributes
        for t in range(seq.timesteps):
            attrs.new(f"{POSITION_PREFIX}{t}", "FLOAT_VECTOR", "POINT").data.foreach_set(
                "vector", np.ascontiguousarray(seq.means[t], np.float32).reshape(-1))
            attrs.new(f"{ROTATION_PREFIX}{t}", "QUATERNION", "POINT").data.foreach_set(
                "value", np.ascontiguousarray(seq.quats_at(t), np.float32).reshape(-1))
        obj[DYNAMIC_SOURCE_KEY] = str(path)
        obj[DYNAMIC_START_KEY] = start
        obj[DYNAMIC_STEPS_KEY] = seq.timesteps
        mod = obj.modifiers.new(PLAYBACK_MODIFIER, "NODES")
        mod.node_group = ensure_playback_group()
        _set_input(mod, "Start Frame", start)
        _set_input(mod, "Timesteps", seq.timesteps)
        _move_to_front(obj, mod)
        obj.data.update()
    except Exception:
        mesh = obj.data
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)
        raise
    if set_frame_range:
        scene.frame_start, scene.frame_end = start, start + seq.timesteps - 1
    return obj


def set_query_highlight(obj: bpy.types.Object, first_frame: np.ndarray, last_frame: np.ndarray,
                        peak: np.ndarray) -> None:
    """Store a query's answer on the object (per Gaussian, mesh order) and show it while scrubbing."""
    n = len(obj.data.vertices)
    for name, kind, key, values in ((QUERY_START_ATTRIBUTE, "INT", "value", first_frame),
                                    (QUERY_END_ATTRIBUTE, "INT", "value", last_frame),
                                    (QUERY_PEAK_ATTRIBUTE, "FLOAT", "value", peak)):
        values = np.asarray(values)
        if values.shape != (n,):
            raise ValueError(f"{name}: {values.shape} values for {n} Gaussians")
        attr = obj.data.attributes.get(name) or obj.data.attributes.new(name, kind, "POINT")
        attr.data.foreach_set(key, values.astype(np.int32 if kind == "INT" else np.float32))
    mod = obj.modifiers.get(HIGHLIGHT_MODIFIER)
    if mod is None:
        mod = obj.modifiers.new(HIGHLIGHT_MODIFIER, "NODES")
        mod.node_group = ensure_highlight_group()
        _move_to_front(obj, mod, 1 if obj.modifiers.get(PLAYBACK_MODIFIER) else 0)
    obj.data.update()


def clear_query_highlight(obj: bpy.types.Object) -> None:
    mod = obj.modifiers.get(HIGHLIGHT_MODIFIER)
    if mod is not None:
        obj.modifiers.remove(mod)
    for name in (QUERY_START_ATTRIBUTE, QUERY_END_ATTRIBUTE, QUERY_PEAK_ATTRIBUTE):
        attr = obj.data.attributes.get(name)
        if attr is not None:
            obj.data.attributes.remove(attr)
    obj.data.update()
