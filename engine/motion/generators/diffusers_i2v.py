"""Local image-to-video through diffusers: the engine's first frame (and the artist's end pose as last frame, where
the model takes one) + an "object + action" prompt -> a motion video in the camera's pixels.

Models are profiles in presets/models/*.json (pipeline class, hub id, size, dtype, resolution, frames, steps,
guidance, how the last frame is passed, prompt template); each is registered in the model registry on import.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from ...errors import CancelledError
from ...models.registry import OFFLINE_ENV, ModelEntry, ModelUnavailableError, fetch, is_available, register
from ...render.video import to_uint8
from ..model_profiles import (DEFAULT_24GB_MODEL, PROFILES_DIR, load_profiles,  # noqa: F401 (re-exported)
                              resolve_model_id)
from ..video_framing import from_model_video, plan_framing, resample_frames, to_model_frame
from .base import GeneratedMotion, GeneratorError, MotionRequest, Progress

DEFAULT_FIRST_LAST = "wan2.1-flf2v-14b-720p"
DEFAULT_FIRST_ONLY = "wan2.1-i2v-14b-480p"
_LOADED: dict[tuple[str, str], Any] = {}   # (profile id, device) -> pipeline: load once per engine process


def register_profiles(profiles: dict[str, dict]) -> None:
    for profile in profiles.values():
        register(ModelEntry(id=profile["id"], kind="image_to_video", source="hf", location=profile["hub_id"],
                            size_bytes=int(profile["size_bytes"]), licence=profile["licence"],
                            description=profile["label"]))


PROFILES = load_profiles()
register_profiles(PROFILES)


def choose_profile(options: dict, has_last_frame: bool) -> dict:
    """options["model"] names a profile; without it, Wan FLF2V when there is an end pose, else Wan I2V."""
    name = options.get("model") or (DEFAULT_FIRST_LAST if has_last_frame else DEFAULT_FIRST_ONLY)
    return PROFILES[resolve_model_id(str(name), PROFILES, error=GeneratorError)]


def model_shape(profile: dict, options: dict) -> tuple[int, int, int]:
    """(width, height, frames) the model runs at: the profile's, or the options', rounded to what it accepts."""
    multiple, step = int(profile.get("size_multiple", 16)), int(profile.get("frame_step", 1))
    width = int(options.get("model_width") or profile["width"])
    height = int(options.get("model_height") or profile["height"])
    frames = int(options.get("model_frames") or profile["frames"])
    width, height = max(multiple, width // multiple * multiple), max(multiple, height // multiple * multiple)
    frames = max(1, (frames - 1) // step * step + 1)   # 4k+1 / 8k+1 frame counts
    return width, height, frames


def prompt_text(profile: dict, prompt: str) -> str:
    template = profile.get("prompt_template") or "{prompt}"
    return template.format(prompt=prompt.strip().rstrip("."))


def call_arguments(profile: dict, first: Any, last: Any | None, prompt: str, width: int, height: int, frames: int,
                   steps: int, guidance: float, generator: Any) -> dict:
    """The keyword arguments of the profile's pipeline call (first/last frame as PIL images)."""
    kwargs: dict[str, Any] = {"height": height, "width": width, "num_frames": frames, "num_inference_steps": steps,
                              "generator": generator, "output_type": "np"}
    pipeline = profile["pipeline"]
    if pipeline == "StableVideoDiffusionPipeline":
        kwargs.update(image=first, max_guidance_scale=guidance, fps=int(profile.get("fps", 7)))
    else:
        kwargs.update(prompt=prompt_text(profile, prompt), guidance_scale=guidance)
        if profile.get("negative_prompt"):
            kwargs["negative_prompt"] = profile["negative_prompt"]
        argument = profile.get("last_frame_argument")
        if argument == "conditions":
            from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition
            conditions = [LTXVideoCondition(image=first, frame_index=0)]
            if last is not None:
                conditions.append(LTXVideoCondition(image=last, frame_index=frames - 1))
            kwargs["conditions"] = conditions
        else:
            kwargs["image"] = first
            if argument and last is not None:
                kwargs[argument] = last
    kwargs.update(profile.get("call_options") or {})
    return kwargs


def load_pipeline(profile: dict, device: str, progress: Progress | None = None, offload: bool = False) -> Any:
    """The profile's pipeline from the model cache (downloaded on first use when allowed), on `device`."""
    key = (profile["id"], device)
    if key in _LOADED:
        return _LOADED[key]
    import diffusers
    import torch

    path = fetch(profile["id"], progress=progress)
    # One video model in memory at a time (they are tens of GB): free the previous one before loading this one,
    # so switching models (or first-frame ↔ first+last-frame) never holds two on the GPU; nor the render job's PNG
    # graphs (about 0.2 GB each).
    release_pipelines()
    from engine.render.png import release_graphs
    release_graphs()
    cls = getattr(diffusers, profile["pipeline"])
    dtype = getattr(torch, profile.get("dtype", "float32")) if device != "cpu" else torch.float32
    pipe = cls.from_pretrained(str(path), torch_dtype=dtype)
    if offload and device.startswith("cuda"):
        pipe.enable_model_cpu_offload()   # for GPUs smaller than the model; slower
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    _LOADED[key] = pipe
    return pipe


def release_pipelines() -> None:
    """Drop the loaded pipelines and give their memory back (GPU cache included)."""
    if not _LOADED:
        return
    _LOADED.clear()
    import gc

    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


class DiffusersI2VGenerator:
    """The `diffusers` generator. `pipeline` (with `profile`) injects a ready pipeline: tests use tiny random ones."""

    name = "diffusers"

    def __init__(self, pipeline: Any = None, profile: dict | None = None) -> None:
        self.pipeline = pipeline
        self.profile = profile

    def available(self) -> tuple[bool, str]:
        try:
            import diffusers  # noqa: F401
        except ImportError:
            return False, "install diffusers in the engine environment (pip install diffusers)"
        if self.pipeline is not None:
            return True, ""
        if any(is_available(pid) for pid in PROFILES) or os.environ.get(OFFLINE_ENV, "") in ("", "0"):
            return True, ""   # weights present, or fetched on first use (with progress)
        return False, ("no image-to-video weights on this machine and downloads are off: set "
                       "ANIMATE_GAUSSIANS_MODEL_<ID> to a local copy; see docs/motion.md")

    def generate(self, request: MotionRequest, progress: Progress, check_cancelled: Callable[[], None]
                 ) -> GeneratedMotion:
        import torch
        from PIL import Image

        options = request.options
        if request.first_frame is None:
            raise GeneratorError("the diffusers generator needs the first frame rendered from the camera")
        profile = self.profile or choose_profile(options, request.last_frame is not None)
        wants_last = profile.get("conditioning") == "first_last"
        if wants_last and request.last_frame is None and profile.get("last_frame_argument") != "conditions":
            raise GeneratorError(f"{profile['label']} needs a last frame",
                                 hint="pose the segment at the end frame first, or choose a first-frame model "
                                      f"(e.g. {DEFAULT_FIRST_ONLY})")
        width, height, frames = model_shape(profile, options)
        framing = plan_framing(request.height, request.width, height, width)
        first = Image.fromarray(to_model_frame(request.first_frame, framing))
        last = (Image.fromarray(to_model_frame(request.last_frame, framing))
                if wants_last and request.last_frame is not None else None)

        device = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        pipe = self.pipeline
        if pipe is None:
            try:
                pipe = load_pipeline(profile, device, progress, offload=bool(options.get("offload")))
            except ModelUnavailableError:
                raise
            except Exception as exc:  # noqa: BLE001 - from_pretrained raises many types for a broken snapshot
                raise GeneratorError(f"cannot load {profile['label']}: {exc}",
                                     hint="delete its folder in the model cache to download it again") from exc
        steps = int(options.get("steps") or profile["steps"])
        guidance = float(options.get("guidance", profile["guidance"]))
        generator = torch.Generator("cpu").manual_seed(int(options.get("seed", 0)))
        kwargs = call_arguments(profile, first, last, request.prompt, width, height, frames, steps, guidance,
                                generator)
        kwargs.update(options.get("call_options") or {})   # expert overrides of the pipeline's own arguments

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict) -> dict:
            progress(0.05 + 0.9 * (step + 1) / steps, f"{profile['label']}: step {step + 1} of {steps}")
            check_cancelled()
            return tensors

        progress(0.05, f"{profile['label']}: generating {frames} frames at {width}x{height}")
        check_cancelled()
        try:
            output = pipe(**kwargs, callback_on_step_end=on_step_end)
        except CancelledError:
            raise
        except torch.cuda.OutOfMemoryError as exc:
            raise GeneratorError(f"{profile['label']} ran out of GPU memory at {width}x{height}, {frames} frames",
                                 hint="turn on Offload (Animate ▸ Advanced; batch --offload), or choose a smaller "
                                      f"model such as {DEFAULT_24GB_MODEL} (batch --model ltx)") from exc
        clip = np.asarray(output.frames[0])
        if clip.dtype != np.uint8:
            clip = to_uint8(clip)
        video = resample_frames(from_model_video(clip, framing), request.frames)
        progress(1.0, f"{profile['label']}: video ready")
        return GeneratedMotion(video=video, fps=request.fps,
                               info={"generator": self.name, "model": profile["id"], "hub_id": profile["hub_id"],
                                     "last_frame_used": last is not None, "model_size": [width, height],
                                     "model_frames": frames, "steps": steps, "guidance": guidance,
                                     "prompt": kwargs.get("prompt", "")})
