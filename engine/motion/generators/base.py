"""The interface every motion generator implements, and what it is given and gives back.

A generator turns a request (prompt, the segment, the camera, first and optionally last frame) into either
a motion video (frames the lifting stage turns into 3D) or, for procedural presets, the 3D motion itself.
Coordinates are the scene's file frame (the .ply's own), cameras follow engine/cameras.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from ...errors import AnimateGaussiansError


class GeneratorError(AnimateGaussiansError):
    """A motion generator could not produce a motion."""

    hint = "try another generator (--generator preset works offline)"


@dataclass
class MotionRequest:
    prompt: str                              # "object + action", e.g. "the mug slides to the right"
    frames: int                              # number of frames of motion (the first is the rest pose)
    fps: float
    segment_means: np.ndarray                # (N, 3) the segment's Gaussian centres, file frame, rest pose
    scene_means: np.ndarray                  # (M, 3) the rest of the scene (what the segment rests on), file frame
    up: np.ndarray                           # (3,) the scene's up direction in the file frame (unit)
    viewmat: np.ndarray                      # (4, 4) the camera at the start frame (file frame → OpenCV)
    K: np.ndarray                            # (3, 3)
    width: int
    height: int
    first_frame: np.ndarray | None = None    # (H, W, 3) uint8, rendered by the engine from the camera
    last_frame: np.ndarray | None = None     # (H, W, 3) uint8, the end pose the artist set (optional)
    video_path: str | None = None            # for the `video` generator
    options: dict = field(default_factory=dict)   # generator-specific (model profile, seed, api settings ...)


@dataclass
class GeneratedMotion:
    """What a generator gives back: a video to lift, or (presets) the motion itself."""

    video: np.ndarray | None = None          # (F, H, W, 3) uint8, first frame = the camera's view at the start
    fps: float = 24.0
    transforms: np.ndarray | None = None     # (F, 4, 4) rigid motion of the segment in the file frame:
                                             # x_f = transforms[f] @ x_rest (transforms[0] = identity)
    info: dict = field(default_factory=dict) # what was used: preset name, model id, API task id ...


Progress = Callable[[float, str], None]


class MotionGenerator(Protocol):
    name: str

    def available(self) -> tuple[bool, str]:
        """Whether it can run here, and if not, what the user has to do."""

    def generate(self, request: MotionRequest, progress: Progress, check_cancelled: Callable[[], None]
                 ) -> GeneratedMotion:
        """Make the motion; call progress(fraction, stage) and check_cancelled() between steps."""
