"""blender_addon/compat.py on each Blender version of `make test` (bpy 4.2 LTS, 5.0, 5.3): which API path each
takes, and that setting, reading and drawing a Geometry Nodes modifier input works through it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from blender_fixtures import addon, bpy, clean_scene  # noqa: F401 (fixtures)

from blender_addon import compat
from blender_addon.io import display_nodes
from blender_addon.io.gaussian_object import import_ply

pytestmark = pytest.mark.blender

# The path each tested version takes (a new version fails here until someone looks at what it changed).
EXPECTED_RNA_INPUTS = {(4, 2): False, (4, 5): False, (5, 0): False, (5, 3): True}


def test_each_version_takes_its_path():
    version = tuple(bpy.app.version[:2])
    if version not in EXPECTED_RNA_INPUTS:
        pytest.fail(f"Blender {bpy.app.version_string} is not a tested version: add it to EXPECTED_RNA_INPUTS")
    assert compat.modifier_inputs_are_rna() is EXPECTED_RNA_INPUTS[version]


class _RecordingLayout:
    def __init__(self):
        self.calls = []

    def prop(self, data, prop, text=""):
        self.calls.append((data, prop, text))


def test_display_inputs_set_read_and_draw(clean_scene, primitives_ply):  # noqa: F811
    obj = import_ply(primitives_ply, bpy.context)
    mod = display_nodes.display_modifier(obj)
    display_nodes.set_display_input(obj, display_nodes.INPUT_SCALE, 2.5)
    display_nodes.set_display_input(obj, display_nodes.INPUT_POINTS_ONLY, True)
    assert display_nodes.get_display_input(obj, display_nodes.INPUT_SCALE) == pytest.approx(2.5)
    assert bool(display_nodes.get_display_input(obj, display_nodes.INPUT_POINTS_ONLY)) is True

    identifier = display_nodes.input_identifier(obj, display_nodes.INPUT_SCALE)
    layout = _RecordingLayout()
    compat.draw_modifier_input(layout, mod, identifier, "Scale")
    (data, prop, text), = layout.calls
    assert text == "Scale"
    # What the panel draws is the value just set (the property path resolves on this version's API).
    value = data.path_resolve(prop) if prop.startswith("[") else getattr(data, prop)
    assert value == pytest.approx(2.5)

    # (test_blender_import holds the evaluated display to these inputs on each version)


def test_unknown_input_is_a_key_error(clean_scene, primitives_ply):  # noqa: F811
    obj = import_ply(primitives_ply, bpy.context)
    with pytest.raises(KeyError):
        compat.get_modifier_input(display_nodes.display_modifier(obj), "Socket_999")


def test_a_process_that_leaves_the_addon_registered_exits_cleanly(tmp_path):
    """bpy 4.2 crashed (SIGSEGV, 139) and 4.5 hung at exit with classes still registered; register() installs
    the cleanup there."""
    root = Path(__file__).resolve().parents[1]
    code = (f"import sys; sys.path.insert(0, {str(root)!r}); import bpy, blender_addon; "
            "blender_addon.register(); print('registered', blender_addon.is_registered())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "registered True" in done.stdout
    assert compat.install_exit_cleanup() is (tuple(bpy.app.version) < compat.MODULE_EXITS_CLEANLY)
