"""Animate Gaussians: import, segment, animate and render 3D Gaussian Splatting scenes in Blender.

Modules that need bpy are imported in register(), so the pure ones (gaussian_layout) import without Blender.
"""

bl_info = {
    "name": "Animate Gaussians",
    "blender": (4, 2, 0),
    "category": "Import-Export",
    "description": "Import, segment, animate and render 3D Gaussian Splatting scenes",
}

_registered_modules: list = []


def _modules():
    from . import import_export, panels, preferences, render_splats
    return [preferences, import_export, render_splats, panels]


def register() -> None:
    import bpy

    modules = _modules()
    for module in modules:
        for cls in module.classes:
            bpy.utils.register_class(cls)
    from . import import_export
    import_export.register_menus()
    _registered_modules[:] = modules


def unregister() -> None:
    import bpy

    from . import engine_client, import_export
    engine_client.shutdown_client()
    if _registered_modules:
        import_export.unregister_menus()
    for module in reversed(_registered_modules):
        for cls in reversed(module.classes):
            bpy.utils.unregister_class(cls)
    _registered_modules.clear()


def is_registered() -> bool:
    return bool(_registered_modules)
