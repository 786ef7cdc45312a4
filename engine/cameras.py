"""The one camera convention of the engine, and the conversion from Blender's camera to it. numpy only.

Convention (what every engine function takes): OpenCV pinhole. `viewmat` (4, 4) maps Blender world
coordinates to camera coordinates with x right, y down, z forward (depth = z). `K` (3, 3) is in pixels:
u = fx·x/z + cx, v = fy·y/z + cy, where the image spans [0, W] × [0, H] and pixel (i, j) has its centre
at (j + 0.5, i + 0.5) — gsplat's convention. A centred camera has cx = W/2, cy = H/2.
"""

from __future__ import annotations

import numpy as np

from .errors import CameraError

# Blender's camera looks down its local −z with y up; OpenCV looks down +z with y down.
BLENDER_TO_OPENCV_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])

SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")


def _sensor_fit(sensor_fit: str, size_x: float, size_y: float) -> str:
    if sensor_fit == "AUTO":
        return "HORIZONTAL" if size_x >= size_y else "VERTICAL"
    return sensor_fit


def blender_intrinsics(lens_mm: float, sensor_width: float, sensor_height: float, sensor_fit: str,
                       shift_x: float, shift_y: float, res_x: int, res_y: int,
                       pixel_aspect_x: float = 1.0, pixel_aspect_y: float = 1.0) -> np.ndarray:
    """K (3, 3) of a Blender perspective camera, following BKE_camera_params_compute_viewplane.

    Sensor fit picks which sensor dimension spans which image axis; shift moves the frame in units of the
    fitted dimension; a non-square pixel aspect makes pixels ycor = aspect_y/aspect_x times taller than
    wide, so fy = fx / ycor.
    """
    if sensor_fit not in SENSOR_FITS:
        raise CameraError(f"unknown sensor fit {sensor_fit!r} (expected one of {', '.join(SENSOR_FITS)})")
    if lens_mm <= 0 or res_x <= 0 or res_y <= 0 or pixel_aspect_x <= 0 or pixel_aspect_y <= 0:
        raise CameraError(f"invalid camera: lens {lens_mm} mm, resolution {res_x}×{res_y}, "
                          f"pixel aspect {pixel_aspect_x}:{pixel_aspect_y}",
                          hint="give the camera a positive focal length, resolution and pixel aspect")
    ycor = pixel_aspect_y / pixel_aspect_x
    fit = _sensor_fit(sensor_fit, pixel_aspect_x * res_x, pixel_aspect_y * res_y)
    sensor_size = sensor_height if sensor_fit == "VERTICAL" else sensor_width
    viewfac = float(res_x) if fit == "HORIZONTAL" else ycor * res_y
    focal = lens_mm * viewfac / sensor_size         # pixels, horizontally
    fx, fy = focal, focal / ycor
    cx = 0.5 * res_x - shift_x * viewfac
    cy = 0.5 * res_y + shift_y * viewfac / ycor     # image y points down, Blender's shift_y up
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def blender_viewmat(matrix_world: np.ndarray) -> np.ndarray:
    """World-to-camera (OpenCV) from a Blender camera's matrix_world; object scale is ignored as in Blender."""
    m = np.asarray(matrix_world, dtype=np.float64).reshape(4, 4)
    rot = m[:3, :3]
    norms = np.linalg.norm(rot, axis=0)
    if np.any(norms < 1e-12):
        raise CameraError("the camera's transform has zero scale", hint="give the camera a non-zero scale")
    cam_to_world = np.eye(4)
    cam_to_world[:3, :3] = rot / norms
    cam_to_world[:3, 3] = m[:3, 3]
    return BLENDER_TO_OPENCV_CAMERA @ np.linalg.inv(cam_to_world)


def blender_camera_to_opencv(matrix_world: np.ndarray, lens_mm: float, sensor_width: float,
                             sensor_height: float, sensor_fit: str, shift_x: float, shift_y: float,
                             res_x: int, res_y: int, pixel_aspect_x: float = 1.0, pixel_aspect_y: float = 1.0,
                             camera_type: str = "PERSP") -> tuple[np.ndarray, np.ndarray]:
    """(viewmat (4, 4), K (3, 3)) float64 in the engine's convention for a Blender camera.

    Only perspective cameras are supported: splat rasterizers use a pinhole projection.
    """
    if camera_type != "PERSP":
        kind = {"ORTHO": "orthographic", "PANO": "panoramic"}.get(camera_type, camera_type)
        raise CameraError(f"{kind} cameras are not supported for splat rendering",
                          hint="set the camera's type to Perspective")
    K = blender_intrinsics(lens_mm, sensor_width, sensor_height, sensor_fit, shift_x, shift_y, res_x, res_y,
                           pixel_aspect_x, pixel_aspect_y)
    return blender_viewmat(matrix_world), K


def project_points(points: np.ndarray, viewmat: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) in the image's [0, W] × [0, H] frame and depths (N,) of world points."""
    p = np.asarray(points, dtype=np.float64)
    cam = p @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    uv = cam[:, :2] / z[:, None] * np.diag(K)[:2] + K[:2, 2]
    return uv, z


def camera_center(viewmat: np.ndarray) -> np.ndarray:
    """World position of the camera centre."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    return -R.T @ t


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera viewmat (OpenCV) of a camera at `eye` looking at `target`, `up` roughly up in the image."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        raise CameraError("look_at: the up vector is parallel to the viewing direction")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    viewmat = np.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = -R @ eye
    return viewmat


def intrinsics_from_fov(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """K of a centred pinhole camera with square pixels and the given horizontal field of view."""
    f = 0.5 * width / np.tan(np.radians(fov_x_deg) / 2)
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
