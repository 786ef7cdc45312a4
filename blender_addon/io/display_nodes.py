"""The viewport/render display of Gaussian objects: one shared Geometry Nodes group and one material per .blend.

Splats are instanced spheres turned by each Gaussian's quaternion and scaled by exp(scale); a points-only mode
(Cycles/EEVEE point spheres) keeps multi-million scenes interactive. Colour and alpha come from the raw
attributes in the shader (0.5 + C0·f_dc, sigmoid(opacity)), so nothing is stored twice.
"""

from __future__ import annotations

import bpy

from engine.ply import SH_C0

from .. import compat
from .gaussian_layout import SELECTION_ATTRIBUTE

# Versioned names: a later add-on version with a different tree makes its own group instead of reusing ours.
NODE_GROUP_NAME = "Gaussian Splats v1"
MATERIAL_NAME = "Gaussian Splat v1"
MODIFIER_NAME = "Gaussian Splats"

INPUT_POINTS_ONLY = "Points Only"
INPUT_SCALE = "Scale Multiplier"
INPUT_MAX_SIZE = "Max Size"
INPUT_MIN_OPACITY = "Min Opacity"

# Selected Gaussians (point attribute `selection` = 1) are drawn this much towards this colour.
HIGHLIGHT_COLOR = (1.0, 0.45, 0.0)
HIGHLIGHT_STRENGTH = 0.6

DEFAULT_SCALE_MULTIPLIER = 2.0   # a sphere of radius 2σ covers ~95% of a Gaussian's footprint
DEFAULT_MIN_OPACITY = 0.02
_ICO_SUBDIVISIONS = 1            # 42 vertices: enough for a blob, cheap for millions of instances
# Alpha falls off towards a sphere's silhouette like a Gaussian seen through it: exp(−k (1 − cos²θ)) with
# k = R²/(2σ²) = 2 for the default radius R = 2σ.
_EDGE_FALLOFF = 2.0


def _link(tree, out_socket, in_socket) -> None:
    tree.links.new(out_socket, in_socket)


def _math(tree, operation: str, a=None, b=None, location=(0, 0)):
    node = tree.nodes.new("ShaderNodeMath")
    node.operation = operation
    node.location = location
    for i, value in enumerate((a, b)):
        if value is None:
            continue
        if isinstance(value, (int, float)):
            node.inputs[i].default_value = float(value)
        else:
            _link(tree, value, node.inputs[i])
    return node.outputs[0]


def _named_attribute(tree, name: str, data_type: str, location=(0, 0)):
    node = tree.nodes.new("GeometryNodeInputNamedAttribute")
    node.data_type = data_type
    node.inputs["Name"].default_value = name
    node.location = location
    return node.outputs["Attribute"]


def _exp_vector(tree, vector_socket, x: int):
    """Component-wise exp of a vector socket (Vector Math has no exp)."""
    sep = tree.nodes.new("ShaderNodeSeparateXYZ")
    sep.location = (x, -200)
    _link(tree, vector_socket, sep.inputs[0])
    comb = tree.nodes.new("ShaderNodeCombineXYZ")
    comb.location = (x + 400, -200)
    for i in range(3):
        _link(tree, _math(tree, "EXPONENT", sep.outputs[i], location=(x + 200, -120 - 80 * i)), comb.inputs[i])
    return comb.outputs[0]


def _build_node_group(material: bpy.types.Material) -> bpy.types.NodeTree:
    tree = bpy.data.node_groups.new(NODE_GROUP_NAME, "GeometryNodeTree")
    tree.is_modifier = True
    iface = tree.interface
    iface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    points_only = iface.new_socket(INPUT_POINTS_ONLY, in_out="INPUT", socket_type="NodeSocketBool")
    points_only.default_value = False
    points_only.description = "Show each Gaussian as a round point (fast for millions) instead of an oriented splat"
    scale = iface.new_socket(INPUT_SCALE, in_out="INPUT", socket_type="NodeSocketFloat")
    scale.default_value = DEFAULT_SCALE_MULTIPLIER
    scale.min_value = 0.0
    scale.description = "Splat radius in standard deviations of each Gaussian"
    max_size = iface.new_socket(INPUT_MAX_SIZE, in_out="INPUT", socket_type="NodeSocketFloat")
    max_size.default_value = 1.0
    max_size.min_value = 0.0
    max_size.description = "Largest splat radius shown (scene units of the file), so stray huge Gaussians do not hide the scene"
    min_opacity = iface.new_socket(INPUT_MIN_OPACITY, in_out="INPUT", socket_type="NodeSocketFloat")
    min_opacity.default_value = DEFAULT_MIN_OPACITY
    min_opacity.min_value = 0.0
    min_opacity.max_value = 1.0
    min_opacity.description = "Hide Gaussians more transparent than this"
    iface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")

    nodes = tree.nodes
    group_in = nodes.new("NodeGroupInput")
    group_in.location = (-1400, 0)
    group_out = nodes.new("NodeGroupOutput")
    group_out.location = (1400, 0)

    # Drop what the display does not read (SH, extras) first: the nodes below copy every attribute they pass
    # on, and for a million Gaussians that copy costs more than everything else.
    geometry = group_in.outputs["Geometry"]
    for i, pattern in enumerate(("sh_*", "ply_*")):
        remove = nodes.new("GeometryNodeRemoveAttribute")
        remove.location = (-1200 + 200 * i, 700)
        if "Pattern Mode" not in remove.inputs:   # Blender < 4.2 has no wildcards: keep everything
            nodes.remove(remove)
            continue
        remove.inputs["Pattern Mode"].default_value = "Wildcard"
        remove.inputs["Name"].default_value = pattern
        _link(tree, geometry, remove.inputs["Geometry"])
        geometry = remove.outputs["Geometry"]

    # Visible: sigmoid(opacity) > min opacity, i.e. opacity logit > logit(min opacity).
    opacity = _named_attribute(tree, "opacity", "FLOAT", (-1200, 400))
    odds = _math(tree, "DIVIDE", group_in.outputs[INPUT_MIN_OPACITY],
                 _math(tree, "SUBTRACT", 1.0, group_in.outputs[INPUT_MIN_OPACITY], location=(-1200, 250)),
                 location=(-1000, 250))
    visible = _math(tree, "GREATER_THAN", opacity, _math(tree, "LOGARITHM", odds, 2.718281828459045,
                                                         location=(-800, 250)), location=(-600, 350))

    # Size: exp(log scale) · multiplier, each axis clamped to Max Size.
    sigma = _exp_vector(tree, _named_attribute(tree, "scale", "FLOAT_VECTOR", (-1200, -200)), -1000)
    scaled = nodes.new("ShaderNodeVectorMath")
    scaled.operation = "SCALE"
    scaled.location = (-400, -200)
    _link(tree, sigma, scaled.inputs[0])
    _link(tree, group_in.outputs[INPUT_SCALE], scaled.inputs["Scale"])
    clamped = nodes.new("ShaderNodeVectorMath")
    clamped.operation = "MINIMUM"
    clamped.location = (-200, -200)
    _link(tree, scaled.outputs[0], clamped.inputs[0])
    as_vector = nodes.new("ShaderNodeCombineXYZ")
    as_vector.location = (-400, -400)
    for i in range(3):
        _link(tree, group_in.outputs[INPUT_MAX_SIZE], as_vector.inputs[i])
    _link(tree, as_vector.outputs[0], clamped.inputs[1])

    # Rotation: 3DGS stores quaternions unnormalised; normalise before use (an unnormalised one would scale).
    to_quat = nodes.new("FunctionNodeRotationToQuaternion")
    to_quat.location = (-1000, -700)
    _link(tree, _named_attribute(tree, "rotation", "QUATERNION", (-1200, -700)), to_quat.inputs[0])
    w, x, y, z = (to_quat.outputs[c] for c in "WXYZ")
    norm2 = _math(tree, "ADD", _math(tree, "ADD", _math(tree, "MULTIPLY", w, w), _math(tree, "MULTIPLY", x, x)),
                  _math(tree, "ADD", _math(tree, "MULTIPLY", y, y), _math(tree, "MULTIPLY", z, z)),
                  location=(-600, -700))
    inv_norm = _math(tree, "INVERSE_SQRT", _math(tree, "MAXIMUM", norm2, 1e-20), location=(-400, -700))
    from_quat = nodes.new("FunctionNodeQuaternionToRotation")
    from_quat.location = (-200, -700)
    for i, comp in enumerate((w, x, y, z)):
        _link(tree, _math(tree, "MULTIPLY", comp, inv_norm, location=(-300, -600 - 60 * i)), from_quat.inputs[i])

    # Splat mode: a low-poly sphere per Gaussian.
    ico = nodes.new("GeometryNodeMeshIcoSphere")
    ico.location = (0, -400)
    ico.inputs["Radius"].default_value = 1.0
    ico.inputs["Subdivisions"].default_value = _ICO_SUBDIVISIONS
    smooth = nodes.new("GeometryNodeSetShadeSmooth")
    smooth.location = (200, -400)
    _link(tree, ico.outputs["Mesh"], smooth.inputs["Geometry"])
    instance = nodes.new("GeometryNodeInstanceOnPoints")
    instance.location = (400, 0)
    _link(tree, geometry, instance.inputs["Points"])
    _link(tree, visible, instance.inputs["Selection"])
    _link(tree, smooth.outputs[0], instance.inputs["Instance"])
    _link(tree, from_quat.outputs[0], instance.inputs["Rotation"])
    _link(tree, clamped.outputs[0], instance.inputs["Scale"])

    # Points mode: one round point per Gaussian, radius = mean clamped axis size.
    mean_size = _math(tree, "DIVIDE", None, 3.0, location=(0, 200))
    length_sum = nodes.new("ShaderNodeVectorMath")
    length_sum.operation = "DOT_PRODUCT"
    length_sum.location = (-100, 300)
    _link(tree, clamped.outputs[0], length_sum.inputs[0])
    length_sum.inputs[1].default_value = (1.0, 1.0, 1.0)
    _link(tree, length_sum.outputs["Value"], mean_size.node.inputs[0])
    to_points = nodes.new("GeometryNodeMeshToPoints")
    to_points.location = (400, 300)
    _link(tree, geometry, to_points.inputs["Mesh"])
    _link(tree, visible, to_points.inputs["Selection"])
    _link(tree, mean_size, to_points.inputs["Radius"])

    switch = nodes.new("GeometryNodeSwitch")
    switch.input_type = "GEOMETRY"
    switch.location = (800, 0)
    _link(tree, group_in.outputs[INPUT_POINTS_ONLY], switch.inputs["Switch"])
    _link(tree, instance.outputs[0], switch.inputs["False"])
    _link(tree, to_points.outputs[0], switch.inputs["True"])
    set_material = nodes.new("GeometryNodeSetMaterial")
    set_material.location = (1100, 0)
    set_material.inputs["Material"].default_value = material
    _link(tree, switch.outputs[0], set_material.inputs["Geometry"])
    _link(tree, set_material.outputs[0], group_out.inputs[0])
    return tree


def _attribute_sum(tree, name: str, output: str, x: int, y: int):
    """The attribute read both from the geometry (points mode) and the instancer (splat mode); the one that
    does not exist reads as zero, so their sum is the value in either mode."""
    total = []
    for i, kind in enumerate(("GEOMETRY", "INSTANCER")):
        node = tree.nodes.new("ShaderNodeAttribute")
        node.attribute_type = kind
        node.attribute_name = name
        node.location = (x, y - 180 * i)
        total.append(node.outputs[output])
    return total


def _build_material() -> bpy.types.Material:
    mat = bpy.data.materials.new(MATERIAL_NAME)
    if mat.node_tree is None:      # Blender < 5.0 creates materials without nodes
        mat.use_nodes = True
    tree = mat.node_tree
    tree.nodes.clear()
    out = tree.nodes.new("ShaderNodeOutputMaterial")
    out.location = (1200, 0)

    # Colour = 0.5 + C0·f_dc (degree-0 SH), the radiance 3DGS shows; emitted so it is not lit a second time.
    dc_geo, dc_inst = _attribute_sum(tree, "f_dc", "Vector", -1000, 200)
    dc = tree.nodes.new("ShaderNodeVectorMath")
    dc.operation = "ADD"
    _link(tree, dc_geo, dc.inputs[0])
    _link(tree, dc_inst, dc.inputs[1])
    colour = tree.nodes.new("ShaderNodeVectorMath")
    colour.operation = "MULTIPLY_ADD"
    colour.location = (-600, 200)
    _link(tree, dc.outputs[0], colour.inputs[0])
    colour.inputs[1].default_value = (SH_C0, SH_C0, SH_C0)
    colour.inputs[2].default_value = (0.5, 0.5, 0.5)
    # Segmentation highlight: colour pulled towards HIGHLIGHT_COLOR by the `selection` attribute (0 without it).
    sel_geo, sel_inst = _attribute_sum(tree, SELECTION_ATTRIBUTE, "Fac", -1000, 600)
    weight = _math(tree, "MULTIPLY", _math(tree, "ADD", sel_geo, sel_inst, location=(-800, 600)),
                   HIGHLIGHT_STRENGTH, location=(-600, 600))
    towards = tree.nodes.new("ShaderNodeVectorMath")
    towards.operation = "SUBTRACT"
    towards.location = (-400, 400)
    towards.inputs[0].default_value = HIGHLIGHT_COLOR
    _link(tree, colour.outputs[0], towards.inputs[1])
    tinted = tree.nodes.new("ShaderNodeVectorMath")
    tinted.operation = "MULTIPLY_ADD"
    tinted.location = (-200, 400)
    _link(tree, towards.outputs[0], tinted.inputs[0])
    _link(tree, weight, tinted.inputs[1])
    _link(tree, colour.outputs[0], tinted.inputs[2])
    emission = tree.nodes.new("ShaderNodeEmission")
    emission.location = (600, 200)
    emission.inputs["Strength"].default_value = 1.0
    _link(tree, tinted.outputs[0], emission.inputs["Color"])

    # Alpha = sigmoid(opacity) · exp(−k(1 − cos²)) on front faces only (a ray crosses each sphere once).
    op_geo, op_inst = _attribute_sum(tree, "opacity", "Fac", -1000, -300)
    logit = _math(tree, "ADD", op_geo, op_inst, location=(-800, -300))
    sigmoid = _math(tree, "DIVIDE", 1.0, _math(tree, "ADD", 1.0, _math(tree, "EXPONENT", _math(
        tree, "MULTIPLY", logit, -1.0, location=(-600, -300)), location=(-400, -300)), location=(-200, -300)),
        location=(0, -300))
    geometry = tree.nodes.new("ShaderNodeNewGeometry")
    geometry.location = (-1000, -700)
    cos = tree.nodes.new("ShaderNodeVectorMath")
    cos.operation = "DOT_PRODUCT"
    cos.location = (-800, -700)
    _link(tree, geometry.outputs["Normal"], cos.inputs[0])
    _link(tree, geometry.outputs["Incoming"], cos.inputs[1])
    cos2 = _math(tree, "MULTIPLY", cos.outputs["Value"], cos.outputs["Value"], location=(-600, -700))
    falloff = _math(tree, "EXPONENT", _math(tree, "MULTIPLY", _math(tree, "SUBTRACT", 1.0, cos2, location=(
        -400, -700)), -_EDGE_FALLOFF, location=(-200, -700)), location=(0, -700))
    front = _math(tree, "SUBTRACT", 1.0, geometry.outputs["Backfacing"], location=(0, -900))
    alpha = _math(tree, "MULTIPLY", _math(tree, "MULTIPLY", sigmoid, falloff, location=(200, -500)), front,
                  location=(400, -500))
    transparent = tree.nodes.new("ShaderNodeBsdfTransparent")
    transparent.location = (600, 0)
    mix = tree.nodes.new("ShaderNodeMixShader")
    mix.location = (900, 0)
    _link(tree, alpha, mix.inputs["Fac"])
    _link(tree, transparent.outputs[0], mix.inputs[1])
    _link(tree, emission.outputs[0], mix.inputs[2])
    _link(tree, mix.outputs[0], out.inputs["Surface"])
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = "BLENDED"
    mat.use_backface_culling = False
    mat.diffuse_color = (0.8, 0.8, 0.8, 1.0)
    return mat


def ensure_display(created: list | None = None) -> bpy.types.NodeTree:
    """The shared node group (and its material), built once per .blend and reused after.

    Datablocks made here are appended to `created`, so a caller that fails later can remove them again.
    """
    tree = bpy.data.node_groups.get(NODE_GROUP_NAME)
    if tree is not None:
        return tree
    material = bpy.data.materials.get(MATERIAL_NAME)
    if material is None:
        material = _build_material()
        if created is not None:
            created.append(material)
    tree = _build_node_group(material)
    if created is not None:
        created.append(tree)
    return tree


def _input_identifier(tree: bpy.types.NodeTree, name: str) -> str:
    for item in tree.interface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.name == name:
            return item.identifier
    raise KeyError(f"node group {tree.name!r} has no input {name!r}")


def add_display_modifier(obj: bpy.types.Object, points_only: bool, max_size: float,
                         created: list | None = None) -> bpy.types.Modifier:
    """Give `obj` the splat display (one Geometry Nodes modifier)."""
    tree = ensure_display(created)
    mod = obj.modifiers.new(MODIFIER_NAME, "NODES")
    mod.node_group = tree
    set_display_input(obj, INPUT_POINTS_ONLY, bool(points_only))
    set_display_input(obj, INPUT_MAX_SIZE, float(max_size))
    return mod


def display_modifier(obj: bpy.types.Object) -> bpy.types.Modifier | None:
    for mod in obj.modifiers:
        if mod.type == "NODES" and mod.node_group is not None and mod.node_group.name.startswith("Gaussian Splats"):
            return mod
    return None


def set_display_input(obj: bpy.types.Object, name: str, value) -> None:
    mod = display_modifier(obj)
    if mod is None:
        raise KeyError(f"{obj.name} has no Gaussian display modifier")
    compat.set_modifier_input(mod, _input_identifier(mod.node_group, name), value)
    obj.update_tag()


def get_display_input(obj: bpy.types.Object, name: str):
    mod = display_modifier(obj)
    if mod is None:
        raise KeyError(f"{obj.name} has no Gaussian display modifier")
    return compat.get_modifier_input(mod, _input_identifier(mod.node_group, name))


def input_identifier(obj: bpy.types.Object, name: str) -> str:
    """The modifier key of a display input (for layout.prop(modifier, f'["{id}"]') in panels)."""
    mod = display_modifier(obj)
    return _input_identifier(mod.node_group, name)
