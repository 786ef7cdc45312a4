"""The Blender half of the engine-fault tests and benchmark: a small scene, and one request of each type through
the add-on's own blocking calls (what batch and scripts use)."""

from __future__ import annotations

import math
from pathlib import Path

import bpy

from blender_addon.animate import animate_ops
from blender_addon.io import gaussian_object
from blender_addon.query4d import query4d_request
from blender_addon.render import camera_data, render_splats
from blender_addon.segment import segment_query

SIZE = (24, 18)


def make_scene(ply: Path):
    """A fresh file with the .ply imported, a camera and a 3-frame range; returns (scene, object)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    obj = gaussian_object.import_ply(ply, bpy.context)
    camera = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(camera)
    camera.location = (0.0, -8.0, 3.0)
    camera.rotation_euler = (math.radians(70.0), 0.0, 0.0)
    scene.camera = camera
    scene.frame_start, scene.frame_end = 1, 3
    scene.render.resolution_x, scene.render.resolution_y = SIZE
    bpy.context.view_layer.update()
    return scene, obj


def run_request(request_type: str, scene, obj, client, out_dir: Path):
    """One request of that type; returns its answer or raises the engine's error."""
    if request_type == "segment":
        viewmat, K, _, _ = camera_data.camera_from_blender(scene, scene.camera)
        query = segment_query.make_query(obj, "click", viewmat, K, *SIZE, point=(SIZE[0] / 2, SIZE[1] / 2))
        return segment_query.segment_blocking(obj, query, 0.5, device="cpu", client=client)
    if request_type == "animate":
        options = animate_ops.AnimateOptions(prompt="the ball rolls", frames=6, fps=24.0, device="cpu")
        return animate_ops.animate_blocking(scene, obj, options, client=client)
    if request_type == "query4d":
        return query4d_request.query_blocking(scene, obj, "a ball", device="cpu", client=client)
    return render_splats.render_splats_blocking(scene, out_dir, SIZE, "cpu", write_video=False, client=client)
