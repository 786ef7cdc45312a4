"""Fixtures of the tests that run the add-on in the bpy module: register it once, a clean scene per test, and a
snapshot of the .blend's datablocks to prove a failed operation left the scene as it was."""

from __future__ import annotations

import pytest

bpy = pytest.importorskip("bpy")

from blender_addon import compat  # noqa: E402

compat.install_exit_cleanup()   # the test process exits like Blender does (bpy 4.2 would crash at exit otherwise)


@pytest.fixture(scope="session")
def addon():
    import blender_addon

    # Each test module imports this fixture, so pytest may set it up once per module: register only once.
    registered_here = not blender_addon.is_registered()
    if registered_here:
        blender_addon.register()
    yield blender_addon
    if registered_here:
        blender_addon.unregister()


@pytest.fixture
def clean_scene(addon):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


def datablock_snapshot() -> dict[str, list[str]]:
    return {kind: sorted(b.name for b in getattr(bpy.data, kind))
            for kind in ("objects", "meshes", "node_groups", "materials", "collections", "cameras", "images")}
