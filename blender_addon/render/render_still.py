"""A quick still of a Gaussian object with Blender's own renderer (Cycles, CPU, few samples): previews, demos,
and a check that the display looks like the scene."""

from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix, Vector

from engine.errors import AnimateGaussiansError

from ..io.gaussian_object import is_gaussian_object

# Looking from the front, a little above (Blender world, z up): 3DGS captures usually face +y after the axis
# conversion (their cameras look along the file's +z).
DEFAULT_DIRECTION = (0.35, -1.0, 0.55)


def _robust_bounds(obj: bpy.types.Object) -> tuple[np.ndarray, float]:
    """World centre and radius of the bulk of the Gaussians (2–98th percentile), ignoring stray outliers."""
    mesh = obj.data
    n = len(mesh.vertices)
    local = np.empty(n * 3, dtype=np.float32)
    mesh.attributes["position"].data.foreach_get("vector", local)
    local = local.reshape(n, 3)[:: max(1, n // 200_000)].astype(np.float64)
    world = local @ np.array(obj.matrix_world)[:3, :3].T + np.array(obj.matrix_world)[:3, 3]
    low, high = np.percentile(world, [2.0, 98.0], axis=0)
    return (low + high) / 2, max(float(np.linalg.norm(high - low)) / 2, 1e-6)


def frame_camera(scene: bpy.types.Scene, obj: bpy.types.Object, direction=DEFAULT_DIRECTION,
                 lens_mm: float = 35.0) -> bpy.types.Object:
    """Make (or reuse) the scene camera looking at the object from `direction`, framing it."""
    center, radius = _robust_bounds(obj)
    cam = scene.camera
    if cam is None:
        data = bpy.data.cameras.new("Gaussians Preview")
        cam = bpy.data.objects.new("Gaussians Preview", data)
        scene.collection.objects.link(cam)
        scene.camera = cam
    cam.data.lens = lens_mm
    half_fov = 0.5 * 2.0 * np.arctan(cam.data.sensor_width / (2.0 * lens_mm))
    distance = radius / np.sin(half_fov) * 0.9
    d = Vector(direction).normalized()
    location = Vector(center) + d * distance
    rotation = (-d).to_track_quat("-Z", "Y")
    cam.matrix_world = Matrix.Translation(location) @ rotation.to_matrix().to_4x4()
    cam.data.clip_start = max(distance * 1e-3, 1e-4)
    cam.data.clip_end = distance * 10
    return cam


def render_still(scene: bpy.types.Scene, path: str | os.PathLike, resolution: tuple[int, int] = (640, 480),
                 obj: bpy.types.Object | None = None, samples: int = 16, frame_camera_to_object: bool = True,
                 direction=DEFAULT_DIRECTION) -> Path:
    """Render a PNG of the scene with Cycles on the CPU. With `frame_camera_to_object` (default) the scene
    camera is placed to look at `obj` (default: the first Gaussian object); otherwise the active camera is
    used as it is."""
    if obj is None:
        obj = next((o for o in scene.objects if is_gaussian_object(o)), None)
    if frame_camera_to_object:
        if obj is None:
            raise AnimateGaussiansError("there is no Gaussian object to render", hint="import a .ply first")
        frame_camera(scene, obj, direction)
    elif scene.camera is None:
        from engine.errors import CameraError
        raise CameraError("the scene has no active camera")
    render = scene.render
    render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    # Splats are alpha-blended: let rays pass through enough of them.
    scene.cycles.transparent_max_bounces = 64
    scene.cycles.max_bounces = 4
    render.resolution_x, render.resolution_y = resolution
    render.resolution_percentage = 100
    render.image_settings.file_format = "PNG"
    render.film_transparent = False
    # The splats emit their captured colour; the Standard view shows it as is (AgX would desaturate it).
    scene.view_settings.view_transform = "Standard"
    if scene.world is None:
        scene.world = bpy.data.worlds.new("Gaussians Preview")
    scene.world.color = (0.05, 0.05, 0.05)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    render.filepath = str(path)
    bpy.ops.render.render(write_still=True, scene=scene.name)
    if not path.exists():
        raise AnimateGaussiansError(f"Cycles wrote no image at {path}", hint="check the folder is writable")
    return path
