"""The 3D viewport's view as a camera in the engine's convention (engine/cameras.py: OpenCV viewmat, K in pixels
of the region, origin top-left), so a click or a box in the viewport can be sent to the engine."""

from __future__ import annotations

import numpy as np

from engine.cameras import BLENDER_TO_OPENCV_CAMERA
from engine.errors import CameraError


def opengl_view_to_opencv(view_matrix: np.ndarray, window_matrix: np.ndarray, width: int, height: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(viewmat, K) of a view given as Blender's OpenGL view matrix (world -> eye, looking down −z, y up) and
    perspective projection (eye -> clip) drawn into a width × height region.

    With NDC x = P00·x/−z + P02·z/−z and pixel u = (ndc_x + 1)·W/2 (v from the top: (1 − ndc_y)·H/2):
    fx = P00·W/2, cx = (1 − P02)·W/2, fy = P11·H/2, cy = (1 + P12)·H/2 in OpenCV's camera (y down, z forward).
    """
    P = np.asarray(window_matrix, dtype=np.float64).reshape(4, 4)
    if abs(P[3, 3]) > 1e-9 or abs(P[3, 2] + 1.0) > 1e-6:
        raise CameraError("the viewport is orthographic; a click needs a perspective view",
                          hint="switch the viewport to perspective (View > Perspective/Orthographic, numpad 5)")
    if width <= 0 or height <= 0:
        raise CameraError(f"invalid viewport size {width}×{height}")
    viewmat = BLENDER_TO_OPENCV_CAMERA @ np.asarray(view_matrix, dtype=np.float64).reshape(4, 4)
    K = np.array([[P[0, 0] * width / 2, 0.0, (1.0 - P[0, 2]) * width / 2],
                  [0.0, P[1, 1] * height / 2, (1.0 + P[1, 2]) * height / 2],
                  [0.0, 0.0, 1.0]])
    return viewmat, K


def region_camera(region, region_3d) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(viewmat, K, width, height) of a 3D viewport region as drawn now (camera view, zoom and pan included)."""
    if region is None or region_3d is None:
        raise CameraError("no 3D viewport to take the view from", hint="run this from a 3D Viewport")
    width, height = int(region.width), int(region.height)
    viewmat, K = opengl_view_to_opencv(np.array(region_3d.view_matrix), np.array(region_3d.window_matrix),
                                       width, height)
    return viewmat, K, width, height


def window_region_at(area, mouse_x: int, mouse_y: int):
    """The area's main (WINDOW) region under the window coordinates, or None (e.g. over the sidebar)."""
    for region in area.regions:
        if region.type == "WINDOW" and region.x <= mouse_x < region.x + region.width \
                and region.y <= mouse_y < region.y + region.height:
            return region
    return None


def region_pixel(mouse_x: int, mouse_y: int, region) -> tuple[float, float]:
    """Window coordinates (origin bottom-left, as events give them) -> the region's image pixels (origin
    top-left, pixel centres at +0.5)."""
    column, row_from_bottom = mouse_x - region.x, mouse_y - region.y
    return float(column) + 0.5, float(region.height - row_from_bottom) - 0.5
