"""Which pixels the Gaussian Splats render engine draws and the camera that draws exactly them: the render border,
a reduced viewport resolution, the viewport's view matrices, the layout Blender's passes and textures take, and
when the viewport asks for a new frame. numpy only, no bpy: tested as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .viewport_camera import opengl_view_to_opencv


@dataclass(frozen=True)
class PixelRect:
    """A rectangle of the full render, x from the left, y from the bottom (Blender's disprect)."""

    x: int
    y: int
    width: int
    height: int

    def top(self, full_height: int) -> int:
        """The rectangle's first row counted from the top (the engine's image rows)."""
        return full_height - (self.y + self.height)


def border_rect(width: int, height: int, border: tuple[float, float, float, float] | None) -> PixelRect:
    """The part of a width × height render Blender asks for: all of it, or the render border (min_x, max_x,
    min_y, max_y in 0..1) as Blender truncates it (float32 products, render_init_from_main)."""
    if border is None:
        return PixelRect(0, 0, int(width), int(height))
    min_x, max_x, min_y, max_y = (np.float32(b) for b in border)
    x0, x1 = int(min_x * np.float32(width)), int(max_x * np.float32(width))
    y0, y1 = int(min_y * np.float32(height)), int(max_y * np.float32(height))
    return PixelRect(x0, y0, max(1, x1 - x0), max(1, y1 - y0))


def cropped_intrinsics(K: np.ndarray, rect: PixelRect, full_height: int) -> np.ndarray:
    """K of the full image moved so that pixel (0, 0) is the rectangle's top-left pixel: the engine then draws
    only the rectangle, pixel for pixel the same as in the full image."""
    out = np.array(K, dtype=np.float64)
    out[0, 2] -= rect.x
    out[1, 2] -= rect.top(full_height)
    return out


def scaled_camera(K: np.ndarray, width: int, height: int, scale: float) -> tuple[np.ndarray, int, int]:
    """(K, width, height) of the same view drawn with `scale` times fewer pixels per side (viewport navigation)."""
    w, h = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
    sx, sy = w / width, h / height
    out = np.array(K, dtype=np.float64)
    out[0] *= sx
    out[1] *= sy
    return out, w, h


def scaled_view_camera(view_matrix, window_matrix, width: int, height: int, clip_start: float, clip_end: float,
                    scale: float = 1.0) -> tuple[tuple[np.ndarray, np.ndarray, float, float], int, int]:
    """((viewmat, K, near, far), width, height) of a 3D viewport region drawn at `scale` of its size.
    Raises CameraError for an orthographic view (the engine's camera is a pinhole)."""
    viewmat, K = opengl_view_to_opencv(np.asarray(view_matrix), np.asarray(window_matrix), width, height)
    K, w, h = scaled_camera(K, width, height, scale)
    return (viewmat, K, float(clip_start), float(clip_end)), w, h


def pass_pixels(image: np.ndarray) -> np.ndarray:
    """A (H, W, C) bottom-up image as RenderPass.rect and gpu.types.Buffer take it: flat float32, row after
    row from the bottom, channels interleaved (no copy when it already is)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, C) image with 1, 3 or 4 channels, got {image.shape}")
    return np.ascontiguousarray(image, dtype=np.float32).reshape(-1)


@dataclass
class ViewportSchedule:
    """When the viewport asks the engine for a frame and at which scale: one request in flight at a time,
    `navigate_scale` of the size while the view or scene keeps changing, full size once it has been still for
    `still_after` seconds. Keys are anything comparable that names what the view shows."""

    navigate_scale: float = 0.5
    still_after: float = 0.25
    _key: object = None
    _changed_at: float = -math.inf
    _in_flight: tuple | None = None
    _shown: tuple | None = None

    def scale_for(self, key, now: float) -> float:
        if key != self._key:
            self._key, self._changed_at = key, now
        return self.navigate_scale if now - self._changed_at < self.still_after else 1.0

    def request(self, key, now: float) -> float | None:
        """The scale to render `key` at now, or None (one is in flight, or what is shown is already it)."""
        scale = self.scale_for(key, now)
        if self._in_flight is not None or self._shown in ((key, scale), (key, 1.0)):
            return None
        self._in_flight = (key, scale)
        return scale

    def landed(self) -> None:
        """The request in flight answered: its frame is what is shown now."""
        self._shown, self._in_flight = self._in_flight, None

    def failed(self) -> None:
        """The request in flight failed: not asked again until the view changes (the error is shown)."""
        if self._in_flight is not None:
            self._shown = (self._in_flight[0], 1.0)
        self._in_flight = None

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    def wants_redraw(self, now: float) -> bool:
        """A redraw later would ask for something new: a request is in flight, or the view shown is reduced or
        stale and the full-size one is due (after `still_after`)."""
        if self._in_flight is not None:
            return True
        return self._shown != (self._key, 1.0)
