"""`make demo`: the main job end to end on this machine, through the same batch CLI an artist's scripts use.

1. writes the demo scene (coloured primitives on a ground plane, a 3DGS .ply made in code);
2. batch-imports it and saves a .blend;
3. renders a still of the imported object with Blender's own renderer (Cycles, the Geometry Nodes display);
4. keyframes a short camera move around it; then, in one batch run, clicks the red sphere in the camera's
   view (segmentation, offline region growing), animates the segment with the "bounce" preset, and renders
   the scene through the engine on the CPU (PNG frames + MP4).
Everything lands in demo_out/; the last lines say where.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "demo_out"
BATCH = ROOT / "blender_addon" / "batch.py"


def batch(*args: str) -> dict:
    """Run the batch CLI as a user would; return its JSON report."""
    report = OUT / f"report_{int(time.time() * 1000)}.json"
    cmd = [sys.executable, str(BATCH), *args, "--report", str(report)]
    print("$", " ".join(str(a) for a in cmd), flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"demo: the batch step failed (exit {proc.returncode})")
    return json.loads(report.read_text())


def add_camera_move(blend: Path, frames: int = 24) -> tuple[float, float]:
    """Open the .blend, frame the object, keyframe a sixth of an orbit around it, save. Returns the pixel of the
    red sphere's centre in the camera's image at the first frame (where the demo clicks)."""
    import bpy
    from mathutils import Matrix, Vector

    import blender_addon
    from blender_addon.render.render_still import frame_camera

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    blender_addon.register()
    try:
        scene = bpy.context.scene
        obj = next(o for o in scene.objects if o.get("gaussians_source"))
        cam = frame_camera(scene, obj)
        pivot = Vector(_bounds_center(obj))
        start = cam.matrix_world.copy()
        scene.frame_start, scene.frame_end = 1, frames
        scene.render.fps = 24
        for i in range(frames):
            angle = math.radians(60.0) * i / max(frames - 1, 1)
            orbit = Matrix.Translation(pivot) @ Matrix.Rotation(angle, 4, "Z") @ Matrix.Translation(-pivot)
            cam.matrix_world = orbit @ start
            cam.keyframe_insert("location", frame=i + 1)       # 24 keys on one camera: no bulk path needed
            cam.keyframe_insert("rotation_euler", frame=i + 1)
        scene.frame_set(1)
        bpy.ops.wm.save_as_mainfile(filepath=str(blend))
        return _pixel_of_red_sphere(scene, obj)
    finally:
        blender_addon.unregister()


def _pixel_of_red_sphere(scene, obj) -> tuple[float, float]:
    import numpy as np

    from blender_addon.io.gaussian_object import file_to_world
    from blender_addon.render.camera_data import scene_camera_view
    from engine.cameras import project_points
    from engine.synthetic_scene import make_primitives_scene

    centre = make_primitives_scene(gaussians_per_object=10).object("red_sphere").center   # file frame
    viewmat, K, _, _ = scene_camera_view(scene)
    uv, _ = project_points(np.asarray(centre)[None], np.asarray(viewmat) @ file_to_world(obj), K)
    return float(uv[0, 0]), float(uv[0, 1])


def render_still_of(blend: Path, png: Path) -> None:
    import bpy

    import blender_addon
    from blender_addon.render.render_still import render_still

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    blender_addon.register()
    try:
        render_still(bpy.context.scene, png, resolution=(640, 400), samples=16, frame_camera_to_object=False)
    finally:
        blender_addon.unregister()


def _bounds_center(obj) -> tuple[float, float, float]:
    import numpy as np

    n = len(obj.data.vertices)
    local = np.empty(n * 3, np.float32)
    obj.data.attributes["position"].data.foreach_get("vector", local)
    local = local.reshape(n, 3).astype(np.float64)
    world = local @ np.array(obj.matrix_world)[:3, :3].T + np.array(obj.matrix_world)[:3, 3]
    return tuple(np.median(world, axis=0))


def main() -> int:
    from engine.synthetic_scene import make_primitives_scene

    OUT.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    ply = make_primitives_scene(gaussians_per_object=4000, sh_degree=3).write(OUT / "primitives.ply")
    blend = OUT / "demo.blend"
    report = batch("--ply", str(ply), "--save", str(blend))
    obj = report["objects"][0]
    print(f"imported {obj['name']}: {obj['gaussians']:,} Gaussians, SH degree {obj['sh_degree']}")
    x, y = add_camera_move(blend)
    still = OUT / "still_cycles.png"
    render_still_of(blend, still)
    report = batch("--blend", str(blend), "--select-point", f"{x:.1f}", f"{y:.1f}", "--segment-name", "ball",
                   "--animate", "the ball bounces", "--frames", "24", "--render", str(OUT / "frames"),
                   "--resolution", "320", "200", "--device", "cpu", "--save", str(blend))
    for made in report["objects"]:
        print(f"made {made['name']}: {made.get('gaussians', 0):,} Gaussians, {made.get('keyframes', 0)} keyframes")
    video = next((f for f in report.get("files", []) if f.endswith(".mp4")), None)
    print(f"demo scene:    {ply}")
    print(f"blend file:    {blend}")
    print(f"Cycles still:  {still}")
    print(f"splat frames:  {OUT / 'frames'}")
    print(f"splat video:   {video}")
    print(f"demo took {time.perf_counter() - t0:.1f} s")
    return 0 if video else 1


if __name__ == "__main__":
    sys.exit(main())
