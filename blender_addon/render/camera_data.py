"""Read a Blender camera into the engine's camera convention (OpenCV viewmat + K in pixels; engine/cameras.py)."""

from __future__ import annotations

import numpy as np

from engine.cameras import blender_camera_to_opencv
from engine.errors import CameraError


def render_resolution(scene) -> tuple[int, int]:
    """The output size Blender renders at: resolution × percentage, in Blender's integer arithmetic."""
    render = scene.render
    percent = render.resolution_percentage
    return max(1, render.resolution_x * percent // 100), max(1, render.resolution_y * percent // 100)


def camera_from_blender(scene, camera_obj, width: int | None = None, height: int | None = None, depsgraph=None
                        ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(viewmat (4, 4), K (3, 3), near, far) of `camera_obj` as evaluated now (animation and drivers applied),
    in `depsgraph` (default: the context's; a render engine passes the render's own).

    The size comes from the scene's render settings (percentage included) unless width/height are given;
    the pixel aspect always comes from the scene.
    """
    if camera_obj is None:
        raise CameraError("the scene has no active camera")
    if camera_obj.type != "CAMERA":
        raise CameraError(f"object {camera_obj.name!r} is not a camera")
    import bpy

    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    evaluated = camera_obj.evaluated_get(depsgraph)
    cam = evaluated.data
    if width is None or height is None:
        res_x, res_y = render_resolution(scene)
        width = res_x if width is None else width
        height = res_y if height is None else height
    viewmat, K = blender_camera_to_opencv(
        np.array(evaluated.matrix_world, dtype=np.float64), cam.lens, cam.sensor_width, cam.sensor_height,
        cam.sensor_fit, cam.shift_x, cam.shift_y, int(width), int(height),
        scene.render.pixel_aspect_x, scene.render.pixel_aspect_y, camera_type=cam.type)
    return viewmat, K, float(cam.clip_start), float(cam.clip_end)


def scene_camera_view(scene) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(viewmat, K, width, height) of the scene's active camera at the render resolution."""
    width, height = render_resolution(scene)
    viewmat, K, _, _ = camera_from_blender(scene, scene.camera, width, height)
    return viewmat, K, width, height
