"""The `preset` generator: procedural motion from presets/motion/ (data), offline and instant.

It gives the 3D motion itself (no video): matched from the prompt, scaled to the segment, resting on what
is below it, eased into the artist's end pose when one is set.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..presets import PRESET_DIR, load_presets, motion_from_prompt
from .base import GeneratedMotion, MotionRequest, Progress


class PresetGenerator:
    name = "preset"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def generate(self, request: MotionRequest, progress: Progress, check_cancelled: Callable[[], None]
                 ) -> GeneratedMotion:
        progress(0.1, "matching a motion preset")
        end = request.options.get("end_transform")
        transforms, info = motion_from_prompt(request.prompt, request.segment_means, request.scene_means,
                                              request.up, request.viewmat, request.frames, request.options,
                                              end_transform=None if end is None else np.asarray(end),
                                              presets=load_presets(request.options.get("preset_dir") or PRESET_DIR))
        progress(1.0, "preset motion ready")
        return GeneratedMotion(video=None, fps=request.fps, transforms=transforms, info=info)

