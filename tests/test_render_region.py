"""The pure parts of the Gaussian Splats render engine (no bpy): the render border as Blender truncates it, the
cameras that draw exactly a border or a reduced viewport, the view matrices of a viewport, the pass/texture layout
and when the viewport asks for a frame."""

from __future__ import annotations

import numpy as np
import pytest

from blender_addon.render.render_region import (PixelRect, ViewportSchedule, border_rect, cropped_intrinsics,
                                                pass_pixels, scaled_camera, scaled_view_camera)
from engine.cameras import project_points
from engine.errors import CameraError

K = np.array([[60.0, 0.0, 50.0], [0.0, 55.0, 26.0], [0.0, 0.0, 1.0]])
VIEWMAT = np.eye(4)
POINTS = np.array([[0.1, -0.2, 3.0], [-0.5, 0.3, 5.0], [0.7, 0.1, 2.0]])


def test_border_rect_truncates_as_blender_does():
    # 100 × 50 with a border 0.25–0.75 × 0.1–0.6: Blender renders 50 × 25 pixels (checked in bpy: 1250 pixels)
    assert border_rect(100, 50, (0.25, 0.75, 0.1, 0.6)) == PixelRect(25, 5, 50, 25)
    assert border_rect(48, 32, (0.2, 0.7, 0.1, 0.6)) == PixelRect(9, 3, 24, 16)
    assert border_rect(48, 32, None) == PixelRect(0, 0, 48, 32)
    assert border_rect(48, 32, (0.5, 0.5, 0.5, 0.5)).width == 1   # a collapsed border still has a pixel
    assert PixelRect(9, 3, 24, 16).top(32) == 13


def test_cropped_intrinsics_draw_the_same_pixels_as_the_full_image():
    rect = PixelRect(x=20, y=10, width=40, height=30)   # rows 52-40 = 12 .. 42 of a 52-high image, from the top
    full_uv, _ = project_points(POINTS, VIEWMAT, K)
    crop_uv, _ = project_points(POINTS, VIEWMAT, cropped_intrinsics(K, rect, full_height=52))
    np.testing.assert_allclose(crop_uv, full_uv - [20.0, 12.0])


def test_scaled_camera_draws_the_same_view_with_fewer_pixels():
    K2, w, h = scaled_camera(K, 100, 52, 0.5)
    assert (w, h) == (50, 26)
    full_uv, _ = project_points(POINTS, VIEWMAT, K)
    half_uv, _ = project_points(POINTS, VIEWMAT, K2)
    np.testing.assert_allclose(half_uv, full_uv * 0.5)
    _, w, h = scaled_camera(K, 101, 53, 0.25)
    assert (w, h) == (25, 13)


def _perspective(fx_ndc: float, fy_ndc: float, near: float = 0.1, far: float = 100.0, shift=(0.0, 0.0)):
    P = np.zeros((4, 4))
    P[0, 0], P[1, 1] = fx_ndc, fy_ndc
    P[0, 2], P[1, 2] = shift
    P[2, 2], P[2, 3] = -(far + near) / (far - near), -2 * far * near / (far - near)
    P[3, 2] = -1.0
    return P


def test_viewport_camera_from_view_and_window_matrices():
    view = np.eye(4)
    view[:3, 3] = (0.0, 0.0, -5.0)          # the eye 5 units back along +z, looking down −z
    (viewmat, K_v, near, far), w, h = scaled_view_camera(view, _perspective(2.0, 3.0), 200, 100, 0.1, 50.0)
    assert (w, h, near, far) == (200, 100, 0.1, 50.0)
    np.testing.assert_allclose(K_v, [[200.0, 0.0, 100.0], [0.0, 150.0, 50.0], [0.0, 0.0, 1.0]])
    # the world origin is 5 units in front of the camera (OpenCV z forward), at the image centre
    uv, z = project_points(np.zeros((1, 3)), viewmat, K_v)
    np.testing.assert_allclose(z, [5.0])
    np.testing.assert_allclose(uv, [[100.0, 50.0]])
    # the view's +x is the image's right, its +y (up) the image's top (smaller v)
    uv, _ = project_points(np.array([[1.0, 1.0, 0.0]]), viewmat, K_v)
    assert uv[0, 0] > 100.0 and uv[0, 1] < 50.0
    (_, K_q, _, _), w, h = scaled_view_camera(view, _perspective(2.0, 3.0), 200, 100, 0.1, 50.0, scale=0.25)
    assert (w, h) == (50, 25)
    np.testing.assert_allclose(K_q[:2], K_v[:2] / 4)


def test_an_orthographic_viewport_is_a_camera_error():
    ortho = np.diag([0.2, 0.4, -0.02, 1.0])
    with pytest.raises(CameraError, match="orthographic"):
        scaled_view_camera(np.eye(4), ortho, 200, 100, 0.1, 50.0)


def test_pass_pixels_layout_is_flat_rows_from_the_bottom_channels_interleaved():
    image = np.zeros((2, 3, 4), np.float64)
    image[0, 0] = (1, 2, 3, 4)      # row 0 = the bottom row in Blender's order
    image[1, 2] = (5, 6, 7, 8)
    flat = pass_pixels(image)
    assert flat.dtype == np.float32 and flat.shape == (24,)
    np.testing.assert_array_equal(flat[:4], [1, 2, 3, 4])
    np.testing.assert_array_equal(flat[-4:], [5, 6, 7, 8])
    depth = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.shares_memory(pass_pixels(depth), depth)   # already float32 and contiguous: no copy
    np.testing.assert_array_equal(pass_pixels(depth), np.arange(6))
    with pytest.raises(ValueError):
        pass_pixels(np.zeros((2, 3, 2)))


def test_viewport_schedule_reduced_while_navigating_full_when_still():
    s = ViewportSchedule(navigate_scale=0.5, still_after=0.25)
    assert s.request("a", now=0.0) == 0.5            # a new view: a fast, reduced frame first
    assert s.request("b", now=0.05) is None          # one request in flight at a time
    assert s.wants_redraw(0.05)
    s.landed()                                       # the frame of "a" at 0.5 is shown; the view is "b" now
    assert s.request("b", now=0.1) == 0.5            # still navigating: reduced
    s.landed()
    assert s.request("b", now=0.2) is None           # shown already at this scale
    assert s.wants_redraw(0.2)                       # ... but the full-size frame is due once still
    assert s.request("b", now=0.4) == 1.0
    s.landed()
    assert not s.wants_redraw(0.5)
    assert s.request("b", now=0.6) is None           # nothing changed: no request
    assert s.request("c", now=0.7) == 0.5            # the view moved again


def test_viewport_schedule_does_not_retry_a_failed_view_until_it_changes():
    s = ViewportSchedule()
    assert s.request("a", now=0.0) is not None
    s.failed()
    assert s.request("a", now=1.0) is None
    assert not s.wants_redraw(1.0)
    assert s.request("b", now=1.1) is not None
