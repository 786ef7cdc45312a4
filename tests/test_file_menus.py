"""File > Import and File > Export list every reader and writer the add-on registers, by operator id."""

from __future__ import annotations

import pytest

from blender_fixtures import addon, bpy  # noqa: F401 (fixtures)

pytestmark = pytest.mark.blender


class _Layout:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []

    def operator(self, idname: str, text: str = "") -> None:
        self.entries.append((idname, text))


class _Menu:
    def __init__(self) -> None:
        self.layout = _Layout()


def _draw(menu_function) -> dict[str, str]:
    menu = _Menu()
    menu_function(menu, None)
    return dict(menu.layout.entries)


def test_import_menu_lists_every_reader_and_each_is_registered(addon):
    from blender_addon.io import import_export

    entries = _draw(import_export._menu_import)
    assert set(entries) == {"gaussians.import_ply", "gaussians.import_ply_sequence", "gaussians.import_dynamic"}
    assert entries["gaussians.import_dynamic"] == "Dynamic Gaussians (.npz)"
    exports = _draw(import_export._menu_export)
    assert {"gaussians.export_ply", "gaussians.export_ply_sequence"} <= set(exports)
    for idname in [*entries, *exports]:
        category, name = idname.split(".")
        getattr(getattr(bpy.ops, category), name).get_rna_type()   # raises KeyError when not registered
