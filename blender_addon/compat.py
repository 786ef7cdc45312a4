"""What differs between the Blender versions the add-on supports (4.2 LTS – 5.3), in one place.

The rest of the add-on calls these helpers instead of testing `bpy.app.version` itself. Each difference is
detected from the API it concerns (not from a version number), so a point release that back-ports a change
takes the right path; tests/test_compat.py pins which path each tested version takes.
"""

from __future__ import annotations

import functools

import bpy


@functools.lru_cache(maxsize=1)
def modifier_inputs_are_rna() -> bool:
    """Blender 5.3 (NodesModifier.properties) exposes Geometry Nodes modifier inputs as RNA properties
    (`mod.properties.inputs.<identifier>.value`); up to 5.0 they are ID properties (`mod[identifier]`), and
    5.3 refuses those with "id properties not supported for this type"."""
    return "properties" in bpy.types.NodesModifier.bl_rna.properties.keys()


def _rna_input(mod: bpy.types.Modifier, identifier: str):
    socket = getattr(mod.properties.inputs, identifier, None)
    if socket is None:
        raise KeyError(f"modifier {mod.name!r} has no input {identifier!r}")
    return socket


def set_modifier_input(mod: bpy.types.Modifier, identifier: str, value) -> None:
    """Set a Geometry Nodes modifier input (by its interface socket identifier, e.g. "Socket_2")."""
    if modifier_inputs_are_rna():
        _rna_input(mod, identifier).value = value
    else:
        mod[identifier] = value


def get_modifier_input(mod: bpy.types.Modifier, identifier: str):
    if modifier_inputs_are_rna():
        return _rna_input(mod, identifier).value
    return mod[identifier]


def draw_modifier_input(layout, mod: bpy.types.Modifier, identifier: str, text: str) -> None:
    """A panel row editing a modifier input, like the modifier's own panel does."""
    if modifier_inputs_are_rna():
        layout.prop(_rna_input(mod, identifier), "value", text=text)
    else:
        layout.prop(mod, f'["{identifier}"]', text=text)
