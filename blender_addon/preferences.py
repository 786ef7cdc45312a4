"""Add-on preferences: the engine interpreter, where it runs, and when the display switches to points only."""

from __future__ import annotations

from dataclasses import dataclass

import bpy

from .engine_link.engine_watchdog import DEFAULT_STALL_TIMEOUT_S
from .io.gaussian_object import DEFAULT_POINTS_ONLY_THRESHOLD

ADDON_ID = __package__


@dataclass
class Settings:
    """The preferences as plain values; defaults when the add-on is not registered through Blender
    (batch runs with the bpy module, tests)."""

    engine_python: str = ""
    device: str = "AUTO"
    points_only_threshold: int = DEFAULT_POINTS_ONLY_THRESHOLD
    stall_timeout: float = DEFAULT_STALL_TIMEOUT_S
    start_engine_on_import: bool = True


class GaussiansPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    engine_python: bpy.props.StringProperty(
        name="Engine Python",
        description="Python interpreter of the engine environment (torch, gsplat); empty: find it automatically",
        subtype="FILE_PATH",
        default="",
    )
    device: bpy.props.EnumProperty(
        name="Device",
        description="Where the engine runs",
        items=[("AUTO", "Auto", "CUDA when available, else CPU"),
               ("CPU", "CPU", "Always the CPU (slow; small scenes and previews)"),
               ("CUDA", "CUDA", "An NVIDIA GPU")],
        default="AUTO",
    )
    points_only_threshold: bpy.props.IntProperty(
        name="Points-Only Above",
        description="Imports with more Gaussians than this start in the fast points-only display",
        default=DEFAULT_POINTS_ONLY_THRESHOLD,
        min=0,
    )
    stall_timeout: bpy.props.FloatProperty(
        name="Hung After",
        description="Seconds the engine may go without progress on a request before it counts as hung: it is then "
                    "stopped, the request fails with a clear error and the scene is unchanged (0: never). "
                    "$ANIMATE_GAUSSIANS_STALL_TIMEOUT overrides it",
        default=DEFAULT_STALL_TIMEOUT_S,
        min=0.0,
        unit="TIME_ABSOLUTE",
    )
    start_engine_on_import: bpy.props.BoolProperty(
        name="Start Engine on Import",
        description="Start the engine right after a splat import in the UI and load the scene into it, so the "
                    "first render, segment or query does not wait for torch, the GPU and the file",
        default=True,
    )
    # Hosted video API keys live in the add-on preferences (never in a .blend); they travel to the engine in the
    # request options only. Empty: the engine reads $RUNWAY_API_KEY / $KLING_ACCESS_KEY + $KLING_SECRET_KEY.
    runway_api_key: bpy.props.StringProperty(
        name="Runway API Key",
        description="Key for Runway's image-to-video API (empty: use $RUNWAY_API_KEY)",
        subtype="PASSWORD",
        default="",
    )
    kling_access_key: bpy.props.StringProperty(
        name="Kling Access Key",
        description="Access key for Kling's API (empty: use $KLING_ACCESS_KEY)",
        subtype="PASSWORD",
        default="",
    )
    kling_secret_key: bpy.props.StringProperty(
        name="Kling Secret Key",
        description="Secret key for Kling's API (empty: use $KLING_SECRET_KEY)",
        subtype="PASSWORD",
        default="",
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "engine_python")
        layout.prop(self, "device")
        layout.prop(self, "points_only_threshold")
        layout.prop(self, "stall_timeout")
        layout.prop(self, "start_engine_on_import")
        box = layout.box()
        box.label(text="Hosted video generators (keys are not saved in .blend files)")
        box.prop(self, "runway_api_key")
        box.prop(self, "kling_access_key")
        box.prop(self, "kling_secret_key")


def settings(context: bpy.types.Context | None = None) -> Settings:
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    if addon is None or addon.preferences is None:
        return Settings()
    prefs = addon.preferences
    return Settings(engine_python=bpy.path.abspath(prefs.engine_python) if prefs.engine_python else "",
                    device=prefs.device, points_only_threshold=prefs.points_only_threshold,
                    stall_timeout=prefs.stall_timeout, start_engine_on_import=prefs.start_engine_on_import)


classes = (GaussiansPreferences,)


def generator_credentials(generator: str, context: bpy.types.Context | None = None) -> dict:
    """The API keys a hosted generator needs, from the preferences, as request options ({} when unset: the
    engine then reads its environment variables). Never store the result anywhere."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    prefs = addon.preferences if addon is not None else None
    if prefs is None:
        return {}
    if generator == "runway" and prefs.runway_api_key:
        return {"api_key": prefs.runway_api_key}
    if generator == "kling" and prefs.kling_access_key and prefs.kling_secret_key:
        return {"access_key": prefs.kling_access_key, "secret_key": prefs.kling_secret_key}
    return {}
