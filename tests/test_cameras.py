"""The engine's camera convention: Blender cameras converted to OpenCV (viewmat, K) project like Blender does."""

from __future__ import annotations

import numpy as np
import pytest

from engine.cameras import (blender_camera_to_opencv, blender_intrinsics, camera_center, intrinsics_from_fov,
                            look_at, project_points)
from engine.errors import CameraError


def test_default_camera_intrinsics():
    # Blender's default: 50 mm on a 36 mm sensor, 1920x1080, fit AUTO -> horizontal.
    K = blender_intrinsics(50.0, 36.0, 24.0, "AUTO", 0.0, 0.0, 1920, 1080)
    assert K[0, 0] == pytest.approx(50.0 / 36.0 * 1920)
    assert K[1, 1] == pytest.approx(K[0, 0])
    assert K[0, 2] == pytest.approx(960.0) and K[1, 2] == pytest.approx(540.0)


def test_vertical_fit_uses_sensor_height_over_image_height():
    K = blender_intrinsics(35.0, 36.0, 24.0, "VERTICAL", 0.0, 0.0, 800, 600)
    assert K[1, 1] == pytest.approx(35.0 / 24.0 * 600)


def test_auto_fit_portrait_uses_sensor_width_across_height():
    K = blender_intrinsics(50.0, 36.0, 24.0, "AUTO", 0.0, 0.0, 600, 1000)
    assert K[1, 1] == pytest.approx(50.0 / 36.0 * 1000)


def test_shift_moves_principal_point_in_units_of_the_fitted_side():
    K = blender_intrinsics(50.0, 36.0, 24.0, "HORIZONTAL", 0.1, 0.2, 1000, 500)
    assert K[0, 2] == pytest.approx(500 - 0.1 * 1000)
    # Shifting the frame up (Blender +y) moves the content down the image (larger row).
    assert K[1, 2] == pytest.approx(250 + 0.2 * 1000)


def test_blender_camera_looks_down_minus_z():
    # Identity matrix_world: a Blender camera at the origin looking down −z, y up.
    viewmat, K = blender_camera_to_opencv(np.eye(4), 50, 36, 24, "AUTO", 0, 0, 640, 480)
    uv, z = project_points(np.array([[0.0, 0.0, -2.0], [0.1, 0.1, -2.0]]), viewmat, K)
    assert z[0] == pytest.approx(2.0)
    assert uv[0] == pytest.approx([320.0, 240.0])
    assert uv[1, 0] > 320 and uv[1, 1] < 240  # +x right, +y up -> smaller row


def test_orthographic_and_panoramic_cameras_are_refused():
    for kind in ("ORTHO", "PANO"):
        with pytest.raises(CameraError, match="not supported"):
            blender_camera_to_opencv(np.eye(4), 50, 36, 24, "AUTO", 0, 0, 64, 64, camera_type=kind)


def test_invalid_sensor_fit_and_zero_lens_raise():
    with pytest.raises(CameraError):
        blender_intrinsics(50, 36, 24, "DIAGONAL", 0, 0, 64, 64)
    with pytest.raises(CameraError):
        blender_intrinsics(0, 36, 24, "AUTO", 0, 0, 64, 64)


def test_look_at_and_camera_center():
    eye = np.array([1.0, -4.0, 2.0])
    viewmat = look_at(eye, np.zeros(3))
    assert camera_center(viewmat) == pytest.approx(eye)
    K = intrinsics_from_fov(100, 80, 60.0)
    uv, z = project_points(np.zeros((1, 3)), viewmat, K)
    assert uv[0] == pytest.approx([50.0, 40.0])
    assert z[0] == pytest.approx(np.linalg.norm(eye))
    # World up (+z) appears above the target (smaller row).
    uv_up, _ = project_points(np.array([[0.0, 0.0, 0.5]]), viewmat, K)
    assert uv_up[0, 1] < 40.0


def _random_rotation(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


@pytest.mark.blender
def test_matches_blender_world_to_camera_view():
    bpy = pytest.importorskip("bpy")
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Matrix, Vector

    from blender_addon.render.camera_data import camera_from_blender

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    cam_data = bpy.data.cameras.new("cam")
    cam_obj = bpy.data.objects.new("cam", cam_data)
    scene.collection.objects.link(cam_obj)
    scene.camera = cam_obj
    rng = np.random.default_rng(7)
    worst, total = 0.0, 0
    for trial in range(40):
        cam_data.lens = float(rng.uniform(15, 80))
        cam_data.sensor_width = float(rng.uniform(20, 40))
        cam_data.sensor_height = float(rng.uniform(15, 30))
        cam_data.sensor_fit = ("AUTO", "HORIZONTAL", "VERTICAL")[trial % 3]
        cam_data.shift_x = float(rng.uniform(-0.6, 0.6))
        cam_data.shift_y = float(rng.uniform(-0.6, 0.6))
        cam_data.clip_start = float(rng.uniform(0.01, 1.0))
        cam_data.clip_end = float(rng.uniform(50, 500))
        scene.render.resolution_x = int(rng.integers(32, 2000))
        scene.render.resolution_y = int(rng.integers(32, 2000))
        # world_to_camera_view frames the full resolution (no percentage); percentage is tested below.
        scene.render.resolution_percentage = 100
        scene.render.pixel_aspect_x = float(rng.choice([1.0, rng.uniform(1, 2)]))
        scene.render.pixel_aspect_y = float(rng.choice([1.0, rng.uniform(1, 2)]))
        m = np.eye(4)
        m[:3, :3] = _random_rotation(rng) * rng.uniform(0.5, 2.0)   # a scaled camera object
        m[:3, 3] = rng.uniform(-1, 1, 3)  # small numbers: Blender's side is float32
        cam_obj.matrix_world = Matrix(m.tolist())
        bpy.context.view_layer.update()

        viewmat, K, near, far = camera_from_blender(scene, cam_obj)
        assert near == pytest.approx(cam_data.clip_start) and far == pytest.approx(cam_data.clip_end)
        W, H = scene.render.resolution_x, scene.render.resolution_y
        # Points in front of the camera, chosen as pixels (over and a little beyond the frame) + depths.
        n = 40
        uv = np.column_stack([rng.uniform(-0.2, 1.2, n) * W, rng.uniform(-0.2, 1.2, n) * H])
        depth = rng.uniform(1, 10, n)
        cam_pts = np.column_stack([(uv - K[:2, 2]) / np.diag(K)[:2] * depth[:, None], depth])
        world = np.linalg.solve(viewmat[:3, :3], (cam_pts - viewmat[:3, 3]).T).T
        uv_back, depth_back = project_points(world, viewmat, K)
        assert uv_back == pytest.approx(uv) and depth_back == pytest.approx(depth)
        for p, (u, v), d in zip(world, uv, depth):
            ndc = world_to_camera_view(scene, cam_obj, Vector(p.tolist()))
            expected = np.array([ndc.x * W, (1.0 - ndc.y) * H])
            worst = max(worst, np.abs(np.array([u, v]) - expected).max())
            assert d == pytest.approx(ndc.z, rel=1e-5)
            total += 1
    assert total == 40 * 40
    print(f"worst pixel difference {worst:.2e}")
    assert worst < 1e-3


@pytest.mark.blender
def test_camera_from_blender_with_explicit_size_and_errors():
    bpy = pytest.importorskip("bpy")
    from blender_addon.render.camera_data import camera_from_blender

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    cam_obj = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam_obj)
    _, K, _, _ = camera_from_blender(scene, cam_obj, width=320, height=200)
    assert K[0, 2] == pytest.approx(160.0) and K[1, 2] == pytest.approx(100.0)
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 1000, 600, 50
    _, K_half, _, _ = camera_from_blender(scene, cam_obj)
    assert K_half[0, 2] == pytest.approx(250.0) and K_half[1, 2] == pytest.approx(150.0)
    assert K_half[0, 0] == pytest.approx(cam_obj.data.lens / cam_obj.data.sensor_width * 500)
    with pytest.raises(CameraError, match="no active camera"):
        camera_from_blender(scene, None)
    cam_obj.data.type = "ORTHO"
    with pytest.raises(CameraError, match="orthographic"):
        camera_from_blender(scene, cam_obj)
