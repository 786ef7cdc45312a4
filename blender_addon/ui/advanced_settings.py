"""The "Advanced" boxes of the Animate and Segment panels: the engine's generator, depth and SAM options and the
fallbacks to refuse, as scene properties; and the request options they make (the batch's --model, --steps, ...).
The Animate box is drawn here, the Segment one by segment/segment_panel.py (it holds the Train Features button).

Defaults fit a 24 GB GPU: LTX-Video (first + last frame) without offloading, Depth Anything V2 Small, SAM as
found on this machine.
"""

from __future__ import annotations

import bpy

from engine.motion.depth_models import DEFAULT_DEPTH_MODEL, DEPTH_MODELS
from engine.motion.lift_settings import SMOOTHNESS_MAX, lifting_options
from engine.motion.model_profiles import DEFAULT_24GB_MODEL, load_profiles

SAM_MODELS = ("vit_b", "vit_l", "vit_h")


def _model_items(self, context):
    profiles = load_profiles()
    items = [(pid, p.get("label", pid), p.get("notes", "")) for pid, p in profiles.items()]
    # Blender keeps enum item strings only while referenced: keep them on the function.
    _model_items.items = items
    return items


def _default_model_index() -> int:
    ids = list(load_profiles())
    return ids.index(DEFAULT_24GB_MODEL) if DEFAULT_24GB_MODEL in ids else 0


class GaussiansAdvancedSettings(bpy.types.PropertyGroup):
    show_animate: bpy.props.BoolProperty(name="Advanced", default=False)
    model: bpy.props.EnumProperty(name="Video Model", items=_model_items, default=_default_model_index(),
                                  description="The image-to-video model of the Diffusers generator "
                                              "(LTX-Video runs on a 24 GB GPU; the Wan 14B models need ~80 GB "
                                              "or Offload)")
    steps: bpy.props.IntProperty(name="Steps", default=0, min=0, max=500,
                                 description="Denoising steps (0: the model's own)")
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0, description="Random seed of the generator")
    offload: bpy.props.BoolProperty(name="Offload", default=False,
                                    description="Keep the model in CPU memory and move each part to the GPU when "
                                                "it runs (slower; for GPUs smaller than the model)")
    depth_model: bpy.props.EnumProperty(
        name="Depth Model", default=DEFAULT_DEPTH_MODEL,
        items=[(k, k, f"{v.loader}, {v.output}") for k, v in DEPTH_MODELS.items()],
        description="The monocular depth model that lifts the video to 3D")
    require_depth: bpy.props.BoolProperty(
        name="Require Depth", default=False,
        description="Fail when the depth model is missing instead of lifting the motion from colour alone")
    lift_effort: bpy.props.EnumProperty(
        name="Lift Effort", default="DEFAULT",
        items=[("FAST", "Fast", "Fewer solver steps: about a third less time, the same accuracy on clean videos"),
               ("DEFAULT", "Default", "The engine's own step counts"),
               ("THOROUGH", "Thorough", "More solver steps, for hard videos: several times the time")],
        description="How many solver steps lifting the video's motion to 3D may take")
    lift_smoothness: bpy.props.FloatProperty(
        name="Smoothness", default=1.0, min=0.0, max=SMOOTHNESS_MAX, soft_max=10.0,
        description="How strongly the lifted motion is held to a steady path (1: the default; 0: follow every "
                    "frame of the video; higher: steadier, for a shaky video)")
    show_segment: bpy.props.BoolProperty(name="Advanced", default=False)
    sam_model: bpy.props.EnumProperty(
        name="SAM Model", default="auto",
        items=[("auto", "Auto", "The largest SAM checkpoint on this machine")] +
              [(v, v, f"SAM {v}") for v in SAM_MODELS])
    require_sam: bpy.props.BoolProperty(
        name="Require SAM", default=False,
        description="Fail when SAM is missing instead of selecting by region growing")
    render_frames: bpy.props.EnumProperty(
        name="Frames", default="png",
        items=[("png", "PNG", "frame_####.png, 8-bit (RGBA with a transparent film)"),
               ("none", "None", "No frame files: the MP4 only")],
        description="The frame files Render Splats writes")
    render_video: bpy.props.BoolProperty(name="MP4", default=True, description="Render Splats writes render.mp4")


def advanced(scene: bpy.types.Scene) -> GaussiansAdvancedSettings:
    return scene.gaussians_advanced


def animate_options(adv: GaussiansAdvancedSettings, generator: str) -> tuple[dict, list[str]]:
    """(the animate request's generator options, the fallback codes it refuses)."""
    options: dict = {"seed": int(adv.seed), "depth_model": adv.depth_model}
    if generator == "diffusers":
        options.update(model=adv.model, offload=bool(adv.offload))
        if adv.steps > 0:
            options["steps"] = int(adv.steps)
    lifting = lifting_options(adv.lift_effort.lower(), float(adv.lift_smoothness))
    if lifting:
        options["lifting"] = lifting
    return options, (["no_depth"] if adv.require_depth else [])


def segment_options(adv: GaussiansAdvancedSettings) -> dict:
    """Extra params of the segment request (the SAM checkpoint, refused fallbacks)."""
    options: dict = {}
    if adv.sam_model != "auto":
        options["sam_variant"] = adv.sam_model
    if adv.require_sam:
        options["require"] = ["region_growing"]
    return options


def collapsible_box(layout, adv, prop: str):
    box = layout.box()
    shown = getattr(adv, prop)
    box.prop(adv, prop, icon="TRIA_DOWN" if shown else "TRIA_RIGHT", emboss=False)
    return box if shown else None


def draw_animate(layout, scene: bpy.types.Scene, generator: str) -> None:
    adv = advanced(scene)
    box = collapsible_box(layout, adv, "show_animate")
    if box is None:
        return
    box.use_property_split = True
    if generator == "DIFFUSERS":
        box.prop(adv, "model")
        box.prop(adv, "steps")
        box.prop(adv, "offload")
    box.prop(adv, "seed")
    box.prop(adv, "depth_model")
    box.prop(adv, "require_depth")
    box.prop(adv, "lift_effort")
    box.prop(adv, "lift_smoothness")
    box.label(text="Defaults fit a 24 GB GPU", icon="INFO")


def register_properties() -> None:
    bpy.types.Scene.gaussians_advanced = bpy.props.PointerProperty(type=GaussiansAdvancedSettings)


def unregister_properties() -> None:
    del bpy.types.Scene.gaussians_advanced


classes = (GaussiansAdvancedSettings,)
