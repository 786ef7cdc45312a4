"""Segmentation views: COLMAP (.bin and .txt) and transforms.json cameras put a known 3D point on the right
pixel; orbit views see the whole scene; captures are scaled to the working size with K."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from engine.cameras import look_at, project_points
from engine.segment.views import (ViewsError, load_colmap_views, load_transforms_views, load_views,
                                  orbit_views, view_image)

POINT = np.array([0.3, -0.2, 0.5])


def rotmat_to_quat(R: np.ndarray) -> np.ndarray:
    w = np.sqrt(max(1e-12, 1 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
    return np.array([w, (R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w), (R[1, 0] - R[0, 1]) / (4 * w)])


def cameras_truth():
    """Two cameras (world-to-camera, OpenCV) looking at the origin, and where POINT lands in each."""
    out = []
    for eye, (fx, fy, cx, cy, w, h) in (((0.5, -1.0, -3.0), (400.0, 410.0, 321.0, 239.0, 640, 480)),
                                        ((-2.5, -0.5, 1.5), (300.0, 300.0, 200.0, 150.0, 400, 300))):
        viewmat = look_at(np.array(eye), np.zeros(3), up=np.array([0.0, -1.0, 0.0]))
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
        uv, _ = project_points(POINT[None], viewmat, K)
        out.append((viewmat, K, w, h, uv[0]))
    return out


def write_colmap(root, binary: bool):
    sparse = root / "sparse" / "0"
    sparse.mkdir(parents=True)
    (root / "images").mkdir()
    truth = cameras_truth()
    if binary:
        with open(sparse / "cameras.bin", "wb") as f:
            f.write(struct.pack("<Q", len(truth)))
            for i, (_, K, w, h, _) in enumerate(truth):
                if i == 0:  # PINHOLE
                    f.write(struct.pack("<iiQQ4d", i + 1, 1, w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
                else:       # SIMPLE_RADIAL: f, cx, cy, k
                    f.write(struct.pack("<iiQQ4d", i + 1, 2, w, h, K[0, 0], K[0, 2], K[1, 2], 0.01))
        with open(sparse / "images.bin", "wb") as f:
            f.write(struct.pack("<Q", len(truth)))
            for i, (vm, *_r) in enumerate(truth):
                q, t = rotmat_to_quat(vm[:3, :3]), vm[:3, 3]
                f.write(struct.pack("<i7di", i + 1, *q, *t, i + 1) + f"img_{i}.png".encode() + b"\0")
                f.write(struct.pack("<Q", 1) + struct.pack("<ddq", 1.0, 2.0, -1))
    else:
        (K0, K1) = (truth[0][1].astype(float).tolist(), truth[1][1].astype(float).tolist())
        lines = ["# Camera list", f"1 PINHOLE {truth[0][2]} {truth[0][3]} {K0[0][0]} {K0[1][1]} {K0[0][2]} {K0[1][2]}",
                 f"2 SIMPLE_PINHOLE {truth[1][2]} {truth[1][3]} {K1[0][0]} {K1[0][2]} {K1[1][2]}"]
        (sparse / "cameras.txt").write_text("\n".join(lines) + "\n")
        lines = ["# Image list", "# two lines per image"]
        for i, (vm, *_r) in enumerate(truth):
            q, t = rotmat_to_quat(vm[:3, :3]), vm[:3, 3]
            lines.append(f"{i + 1} {' '.join(f'{float(a):.17g}' for a in q)} {' '.join(f'{float(a):.17g}' for a in t)} {i + 1} img_{i}.png")
            lines.append("" if i == 0 else "1.0 2.0 -1")
        (sparse / "images.txt").write_text("\n".join(lines) + "\n")
    return truth


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_point_projects_to_known_pixel(tmp_path, binary):
    truth = write_colmap(tmp_path, binary)
    views = load_colmap_views(tmp_path, max_size=None)
    assert [v.name for v in views] == ["img_0.png", "img_1.png"]
    for view, (_, _, w, h, uv) in zip(views, truth):
        assert (view.width, view.height) == (w, h)
        got, z = project_points(POINT[None], view.viewmat, view.K)
        assert z[0] > 0
        np.testing.assert_allclose(got[0], uv, atol=1e-6)


def test_colmap_downscale_keeps_the_point_on_the_same_relative_pixel(tmp_path):
    truth = write_colmap(tmp_path, True)
    views = load_colmap_views(tmp_path, max_size=320)
    view, (_, _, w, h, uv) = views[0], truth[0]
    assert (view.width, view.height) == (320, 240)
    got, _ = project_points(POINT[None], view.viewmat, view.K)
    np.testing.assert_allclose(got[0], uv * 0.5, atol=1e-6)


def test_colmap_images_are_read_and_scaled(tmp_path):
    import cv2

    write_colmap(tmp_path, False)
    photo = np.zeros((480, 640, 3), np.uint8)
    photo[:, :320] = (255, 0, 0)     # left half red (RGB)
    cv2.imwrite(str(tmp_path / "images" / "img_0.png"), photo[..., ::-1])
    views = load_colmap_views(tmp_path, max_size=320)
    assert views[1].image_path is None and view_image(views[1]) is None
    image = view_image(views[0])
    assert image.shape == (240, 320, 3)
    assert image[10, 10].tolist() == [255, 0, 0] and image[10, 300].tolist() == [0, 0, 0]


def test_transforms_json_nerfstudio_and_nerf_synthetic(tmp_path):
    from PIL import Image

    truth = cameras_truth()
    frames = []
    for i, (vm, K, w, h, _) in enumerate(truth):
        c2w = np.linalg.inv(vm) @ np.diag([1.0, -1.0, -1.0, 1.0])   # OpenCV camera -> OpenGL camera axes
        frames.append({"file_path": f"images/f{i}.png", "transform_matrix": c2w.tolist(), "fl_x": K[0, 0],
                       "fl_y": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "w": w, "h": h})
    (tmp_path / "transforms.json").write_text(json.dumps({"camera_model": "OPENCV", "frames": frames}))
    views = load_transforms_views(tmp_path, max_size=None)
    for view, (_, _, _, _, uv) in zip(views, truth):
        got, z = project_points(POINT[None], view.viewmat, view.K)
        assert z[0] > 0
        np.testing.assert_allclose(got[0], uv, atol=1e-6)

    # NeRF-synthetic: camera_angle_x, image size from the (extension-less) file path.
    vm = truth[0][0]
    c2w = np.linalg.inv(vm) @ np.diag([1.0, -1.0, -1.0, 1.0])
    (tmp_path / "train").mkdir()
    Image.new("RGB", (200, 100)).save(tmp_path / "train" / "r_0.png")
    angle = 2 * np.arctan(100 / 150.0)      # fx = 150 px at width 200
    (tmp_path / "transforms_train.json").write_text(json.dumps(
        {"camera_angle_x": angle, "frames": [{"file_path": "./train/r_0", "transform_matrix": c2w.tolist()}]}))
    (view,) = load_transforms_views(tmp_path / "transforms_train.json", max_size=None)
    assert (view.width, view.height) == (200, 100) and view.image_path.name == "r_0.png"
    K = np.array([[150.0, 0, 100], [0, 150.0, 50], [0, 0, 1]])
    got, _ = project_points(POINT[None], view.viewmat, view.K)
    want, _ = project_points(POINT[None], vm, K)
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)


def test_orbit_views_see_the_whole_scene():
    rng = np.random.default_rng(0)
    means = rng.uniform(-1, 1, (2000, 3)) * [2.0, 0.3, 1.0] + [5.0, -0.3, 2.0]
    means[:5] = 1000.0                      # floaters must not blow up the orbit
    views = orbit_views(means, count=12, width=160, height=120)
    assert len(views) == 12
    centres = np.array([-v.viewmat[:3, :3].T @ v.viewmat[:3, 3] for v in views])
    assert np.all(np.linalg.norm(centres - [5.0, -0.3, 2.0], axis=1) < 10)
    assert np.all(centres[:, 1] < -0.3)     # above the scene (file frame: up is −y)
    for v in views:
        uv, z = project_points(means[5:], v.viewmat, v.K)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= v.width) & (uv[:, 1] >= 0) & (uv[:, 1] <= v.height)
        assert inside.mean() > 0.99


def test_load_views_errors_and_thinning(tmp_path):
    with pytest.raises(ViewsError):
        load_views("colmap", tmp_path / "missing")
    with pytest.raises(ViewsError):
        load_views("colmap", tmp_path)
    write_colmap(tmp_path, True)
    assert len(load_views("colmap", tmp_path, count=1)) == 1
    with pytest.raises(ViewsError):
        load_views("photos", tmp_path)
