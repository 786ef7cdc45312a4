"""Animate Gaussians: import, segment, animate and render 3D Gaussian Splatting scenes in Blender.

A package per stage (io, segment, animate, query4d, render) beside the engine's, with engine_link, ui and cli;
docs/architecture.md is the map. Modules that need bpy are imported in register(), so the pure ones
(gaussian_layout, selection, keyframes, ...) import without Blender.
"""

bl_info = {
    "name": "Animate Gaussians",
    "blender": (4, 2, 0),
    "category": "Import-Export",
    "description": "Import, segment, animate and render 3D Gaussian Splatting scenes",
}

_registered_modules: list = []


def _modules():
    from . import preferences
    from .animate import animate_ops
    from .io import import_export, sequence_ops
    from .query4d import query4d_ops
    from .render import render_splats, splat_render_engine
    from .segment import segment_ops, segment_panel, segment_train
    from .ui import advanced_settings, panels
    return [preferences, advanced_settings, import_export, sequence_ops, render_splats, segment_ops, segment_train,
            animate_ops, query4d_ops, panels, segment_panel, splat_render_engine]


def register() -> None:
    import bpy

    from . import compat
    compat.install_exit_cleanup()      # bpy 4.2 as a module would crash at exit otherwise
    modules = _modules()
    for module in modules:
        for cls in module.classes:
            bpy.utils.register_class(cls)
    from .animate import animate_ops
    from .io import import_export
    from .query4d import query4d_ops
    from .render import splat_render_engine
    from .segment import segment_ops
    from .ui import advanced_settings
    import_export.register_menus()
    splat_render_engine.register_panels()
    advanced_settings.register_properties()
    segment_ops.register_properties()
    animate_ops.register_properties()
    query4d_ops.register_properties()
    _registered_modules[:] = modules


def unregister() -> None:
    import bpy

    from .engine_link import engine_client, engine_preload
    from .io import import_export
    engine_preload.unregister()
    engine_client.shutdown_client()
    if _registered_modules:
        import_export.unregister_menus()
        from .animate import animate_ops
        from .query4d import query4d_ops
        from .render import splat_render_engine
        from .segment import segment_ops
        from .ui import advanced_settings
        splat_render_engine.unregister_panels()
        advanced_settings.unregister_properties()
        segment_ops.unregister_properties()
        animate_ops.unregister_properties()
        query4d_ops.unregister_properties()
    for module in reversed(_registered_modules):
        for cls in reversed(module.classes):
            bpy.utils.unregister_class(cls)
    _registered_modules.clear()


def is_registered() -> bool:
    return bool(_registered_modules)
