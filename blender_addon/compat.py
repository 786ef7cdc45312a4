"""What differs between the Blender versions the add-on supports (4.2 LTS – 5.3), in one place.

The rest of the add-on calls these helpers instead of testing `bpy.app.version` itself. Each difference is
detected from the API it concerns (not from a version number), so a point release that back-ports a change
takes the right path; tests/test_compat.py pins which path each tested version takes.
"""

from __future__ import annotations

import atexit
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


# --------------------------------------------------------------------------------------- exit of the bpy module

def _exit_like_blender() -> None:
    """bpy.utils._on_exit of Blender 5.0, for the older modules: disable the add-ons, then unregister the startup modules
    (bl_ui, bl_operators, ...) in reverse order of loading."""
    import sys

    import addon_utils
    addon_utils.disable_all()
    package = sys.modules.get(__package__ or "")
    if package is not None and package.is_registered():   # registered directly (batch, scripts), not enabled
        package.unregister()
    for name in reversed(getattr(bpy.utils, "_global_loaded_modules", [])):
        module = sys.modules.get(name) if isinstance(name, str) else name
        unregister = getattr(module, "unregister", None)
        if unregister is not None:
            try:
                unregister()
            except Exception as error:     # keep going: every class left registered is a crash at exit
                print(f"Animate Gaussians: at exit, {getattr(module, '__name__', module)}.unregister: {error}",
                      file=sys.stderr)


MODULE_EXITS_CLEANLY = (5, 0, 0)    # the first bpy module whose exit unregisters everything itself (tested)


@functools.lru_cache(maxsize=1)
def install_exit_cleanup() -> bool:
    """Unregister the Python classes when a process that imported the bpy module exits, where bpy does not.

    Blender 5.0's exit (WM_exit_ex) calls bpy.utils._on_exit, which disables every add-on and unregisters the
    startup modules before Blender frees its types. The bpy module before 5.0 does not: classes still
    registered at exit (ours, Blender's default add-ons such as io_anim_bvh, its UI panels such as
    OUTLINER_PT_filter) are freed by C++ static destructors after Python has finalised, and bpy_class_free →
    PyGILState_Ensure on the dead interpreter is a SIGSEGV on 4.2 (exit 139, nothing printed) and a hang on
    4.5. An atexit hook registered after `import bpy` runs before bpy's own, while Python is alive. Only for
    the module (no binary path): the Blender binary exits through its own path. True when installed."""
    if tuple(bpy.app.version) >= MODULE_EXITS_CLEANLY or bpy.app.binary_path:
        return False
    atexit.register(_exit_like_blender)
    return True
