"""Views of a scene for segmentation: the capture's own images and cameras, or views rendered around it.

Every view is in the scene's file frame (the .ply's own coordinates) and follows engine/cameras.py
(OpenCV world-to-camera `viewmat`, `K` in pixels, pixel centres at +0.5). Captures are COLMAP `sparse/0`
(binary or text) with `images/`, or a NeRF-synthetic / nerfstudio `transforms.json`; large photos are
scaled to a working resolution (K scaled with them) and read lazily (`view_image`).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cameras import intrinsics_from_fov, look_at
from ..errors import AnimateGaussiansError
from ..gaussian_transform import quat_to_matrix

# Longest side of a view used for segmentation; captures are scaled down to it (never up).
WORKING_SIZE = 1024
# The file frame's "up": COLMAP / 3DGS scenes have y pointing down.
FILE_UP = (0.0, -1.0, 0.0)
IMAGE_DIRS = ("images", "images_2", "images_4", "images_8")


class ViewsError(AnimateGaussiansError):
    """The capture's cameras cannot be read."""

    hint = ("give a COLMAP folder (sparse/0 with cameras and images .bin or .txt, plus images/) or a folder "
            "with transforms.json; or leave the views on 'orbit' to render them from the Gaussians")


@dataclass
class View:
    """One camera on the scene: where it is, and its picture when the capture has one (else None: render it)."""

    name: str
    viewmat: np.ndarray              # (4, 4) file frame → OpenCV camera
    K: np.ndarray                    # (3, 3) pixels
    width: int
    height: int
    image: np.ndarray | None = None  # (H, W, 3) uint8, the captured photo
    image_path: Path | None = None   # where the photo is, read on demand by view_image()


# COLMAP camera models: id -> (name, number of parameters). Distortion is ignored: 3DGS trains on
# undistorted images, whose cameras are PINHOLE / SIMPLE_PINHOLE.
_COLMAP_MODELS = {0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
                  4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
                  8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12)}
_COLMAP_NAMES = {name: (i, n) for i, (name, n) in _COLMAP_MODELS.items()}


def _colmap_K(model: str, params: np.ndarray) -> np.ndarray:
    """K from a COLMAP camera's parameters: one focal length (SIMPLE_*, RADIAL, FOV...) or fx, fy."""
    if model in ("PINHOLE", "OPENCV", "OPENCV_FISHEYE", "FULL_OPENCV", "THIN_PRISM_FISHEYE"):
        fx, fy, cx, cy = params[:4]
    else:
        fx, cx, cy = params[:3]
        fy = fx
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _read_cameras_bin(path: Path) -> dict[int, tuple[str, int, int, np.ndarray]]:
    data = path.read_bytes()
    (count,), off = struct.unpack_from("<Q", data, 0), 8
    cams = {}
    for _ in range(count):
        cam_id, model_id, width, height = struct.unpack_from("<iiQQ", data, off)
        off += 24
        if model_id not in _COLMAP_MODELS:
            raise ViewsError(f"{path}: unknown COLMAP camera model id {model_id}")
        name, n = _COLMAP_MODELS[model_id]
        cams[cam_id] = (name, width, height, np.array(struct.unpack_from(f"<{n}d", data, off)))
        off += 8 * n
    return cams


def _read_images_bin(path: Path) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    data = path.read_bytes()
    (count,), off = struct.unpack_from("<Q", data, 0), 8
    images = []
    for _ in range(count):
        vals = struct.unpack_from("<i7di", data, off)
        off += 64
        end = data.index(b"\0", off)
        name = data[off:end].decode()
        off = end + 1
        (num_points,) = struct.unpack_from("<Q", data, off)
        off += 8 + 24 * num_points   # (x, y, point3D_id) per observation: not needed here
        images.append((name, np.array(vals[1:5]), np.array(vals[5:8]), vals[8]))
    return images


def _data_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


def _read_cameras_txt(path: Path) -> dict[int, tuple[str, int, int, np.ndarray]]:
    cams = {}
    for line in _data_lines(path):
        tok = line.split()
        if not tok:
            continue
        if tok[1] not in _COLMAP_NAMES:
            raise ViewsError(f"{path}: unknown COLMAP camera model {tok[1]!r}")
        cams[int(tok[0])] = (tok[1], int(tok[2]), int(tok[3]), np.array([float(v) for v in tok[4:]]))
    return cams


def _read_images_txt(path: Path) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    # Two lines per image: the pose line, then its 2D points (possibly empty, so blank lines count).
    lines = _data_lines(path)
    images = []
    for i in range(0, len(lines), 2):
        tok = lines[i].split()
        if not tok:
            continue
        if len(tok) < 10:
            raise ViewsError(f"{path}: malformed image line {lines[i]!r}")
        images.append((" ".join(tok[9:]), np.array([float(v) for v in tok[1:5]]),
                       np.array([float(v) for v in tok[5:8]]), int(tok[8])))
    return images


def _scaled(K: np.ndarray, width: int, height: int, max_size: int | None) -> tuple[np.ndarray, int, int]:
    """K and size of an image scaled so its longest side is at most max_size (pixel edges stay edges)."""
    if not max_size or max(width, height) <= max_size:
        return K, width, height
    s = max_size / max(width, height)
    w, h = max(1, round(width * s)), max(1, round(height * s))
    K = K.copy()
    K[0] *= w / width
    K[1] *= h / height
    return K, w, h


def _sparse_dir(root: Path) -> Path:
    for candidate in (root / "sparse" / "0", root / "sparse", root):
        if any((candidate / f"cameras{ext}").exists() for ext in (".bin", ".txt")):
            return candidate
    raise ViewsError(f"no COLMAP cameras (sparse/0/cameras.bin or .txt) under {root}")


def _image_dir(root: Path) -> Path | None:
    for name in IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    return None


def load_colmap_views(path: str | Path, max_size: int | None = WORKING_SIZE) -> list[View]:
    """Views of a COLMAP capture: `path` holds sparse/0 (or sparse/) with cameras + images (.bin or .txt)
    and the photos in images/. COLMAP's world is the .ply's file frame (3DGS trains in it)."""
    root = Path(path)
    sparse = _sparse_dir(root)
    try:
        if (sparse / "cameras.bin").exists() and (sparse / "images.bin").exists():
            cams, images = _read_cameras_bin(sparse / "cameras.bin"), _read_images_bin(sparse / "images.bin")
        else:
            cams, images = _read_cameras_txt(sparse / "cameras.txt"), _read_images_txt(sparse / "images.txt")
    except (OSError, struct.error, ValueError, IndexError) as exc:
        raise ViewsError(f"cannot read the COLMAP model in {sparse}: {exc}") from None
    image_dir = _image_dir(root)
    views = []
    for name, qvec, tvec, cam_id in sorted(images, key=lambda im: im[0]):
        if cam_id not in cams:
            raise ViewsError(f"{sparse}: image {name!r} refers to missing camera {cam_id}")
        model, width, height, params = cams[cam_id]
        viewmat = np.eye(4)
        viewmat[:3, :3] = quat_to_matrix(qvec)
        viewmat[:3, 3] = tvec
        K, w, h = _scaled(_colmap_K(model, params), width, height, max_size)
        photo = image_dir / name if image_dir is not None and (image_dir / name).exists() else None
        views.append(View(name, viewmat, K, w, h, image_path=photo))
    if not views:
        raise ViewsError(f"the COLMAP model in {sparse} has no images")
    return views


# OpenGL / Blender camera axes (x right, y up, looking down −z) to OpenCV's (y down, looking down +z).
_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def _frame_image(root: Path, file_path: str) -> Path | None:
    p = root / file_path
    if p.suffix:
        return p if p.exists() else None
    for ext in (".png", ".jpg", ".jpeg", ".JPG", ".PNG"):   # NeRF-synthetic leaves the extension out
        if p.with_name(p.name + ext).exists():
            return p.with_name(p.name + ext)
    return None


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def load_transforms_views(path: str | Path, max_size: int | None = WORKING_SIZE,
                          split: str = "transforms.json") -> list[View]:
    """Views of a NeRF-synthetic / nerfstudio capture: `path` is transforms.json or its folder.

    Frames hold camera-to-world matrices in OpenGL axes; intrinsics are fl_x/fl_y/cx/cy/w/h (top level or
    per frame, nerfstudio) or camera_angle_x with the image's own size (NeRF-synthetic). The world is the
    frame 3DGS trains in; a nerfstudio export that re-centred the scene needs its dataparser transform applied.
    """
    p = Path(path)
    file = p / split if p.is_dir() else p
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ViewsError(f"cannot read {file}: {exc}") from None
    root = file.parent
    views = []
    for i, frame in enumerate(meta.get("frames", [])):
        info = {**meta, **frame}
        photo = _frame_image(root, frame.get("file_path", "")) if frame.get("file_path") else None
        if "w" in info and "h" in info:
            width, height = int(info["w"]), int(info["h"])
        elif photo is not None:
            width, height = _image_size(photo)
        else:
            raise ViewsError(f"{file}: frame {i} gives no image size (w, h) and its image is missing")
        if "fl_x" in info:
            fx = float(info["fl_x"])
            fy = float(info.get("fl_y", fx))
            K = np.array([[fx, 0.0, float(info.get("cx", width / 2))],
                          [0.0, fy, float(info.get("cy", height / 2))], [0.0, 0.0, 1.0]])
        elif "camera_angle_x" in info:
            K = intrinsics_from_fov(width, height, np.degrees(float(info["camera_angle_x"])))
            if "camera_angle_y" in info:
                K[1, 1] = 0.5 * height / np.tan(0.5 * float(info["camera_angle_y"]))
        else:
            raise ViewsError(f"{file}: no intrinsics (fl_x or camera_angle_x)")
        c2w = np.asarray(frame["transform_matrix"], np.float64)
        if c2w.shape == (3, 4):
            c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
        viewmat = np.linalg.inv(c2w @ _OPENGL_TO_OPENCV)
        K, w, h = _scaled(K, width, height, max_size)
        views.append(View(Path(frame.get("file_path", f"frame_{i}")).name, viewmat, K, w, h, image_path=photo))
    if not views:
        raise ViewsError(f"{file} has no frames")
    return views


def robust_bounds(means: np.ndarray, lower: float = 2.0, upper: float = 98.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis percentile bounds of the Gaussians' centres: far-away floaters do not widen the scene."""
    means = np.asarray(means, np.float64)
    return np.percentile(means, lower, axis=0), np.percentile(means, upper, axis=0)


def orbit_views(means: np.ndarray, count: int = 24, radius_factor: float = 1.5,
                elevations: tuple[float, ...] = (15.0, 40.0), width: int = 512, height: int = 512,
                up: tuple[float, float, float] = FILE_UP, fov_deg: float | None = None) -> list[View]:
    """`count` cameras on rings around the scene's robust bounds, looking at its centre (images rendered on
    demand). Elevations in degrees above the horizon (relative to `up`); cameras split evenly over the
    rings, each ring's start turned so the rings do not line up. The field of view frames the bounds'
    sphere unless given."""
    if count < 1:
        raise ValueError("orbit_views needs at least one view")
    lo, hi = robust_bounds(means)
    centre = 0.5 * (lo + hi)
    extent = max(0.5 * float(np.linalg.norm(hi - lo)), 1e-6)
    radius = max(radius_factor, 1.01) * extent
    up_v = np.asarray(up, np.float64) / np.linalg.norm(up)
    # Two horizontal axes orthogonal to `up`.
    helper = np.array([1.0, 0.0, 0.0]) if abs(up_v[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    e1 = np.cross(up_v, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up_v, e1)
    if fov_deg is None:
        half = np.degrees(np.arcsin(min(extent / radius, 0.99)))
        fov_deg = min(2.0 * half * 1.1 * max(1.0, height / width), 120.0)
    K = intrinsics_from_fov(width, height, fov_deg)
    rings = np.array_split(np.arange(count), len(elevations))
    views = []
    for r, (elev, idx) in enumerate(zip(elevations, rings)):
        e = np.radians(elev)
        for j, _ in enumerate(idx):
            a = 2 * np.pi * (j + 0.5 * r) / max(len(idx), 1)
            direction = np.cos(e) * (np.cos(a) * e1 + np.sin(a) * e2) + np.sin(e) * up_v
            eye = centre + radius * direction
            views.append(View(f"orbit_{len(views):03d}", look_at(eye, centre, up_v), K.copy(), width, height))
    return views


def view_image(view: View) -> np.ndarray | None:
    """The view's photo as (H, W, 3) uint8 at the view's (working) size, read from disk on first use."""
    if view.image is not None or view.image_path is None:
        return view.image
    import cv2

    image = cv2.imread(str(view.image_path), cv2.IMREAD_COLOR)
    if image is None:
        raise ViewsError(f"cannot read image {view.image_path}")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.shape[:2] != (view.height, view.width):
        image = cv2.resize(image, (view.width, view.height), interpolation=cv2.INTER_AREA)
    view.image = image
    return image


def load_views(source: str, path: str | Path | None = None, means: np.ndarray | None = None, count: int = 24,
               width: int = 512, height: int = 512, max_size: int | None = WORKING_SIZE) -> list[View]:
    """Views by source name: "colmap", "transforms" (from `path`) or "orbit" (around `means`). A capture
    with more than `count` views is thinned evenly to `count`."""
    if source == "orbit":
        if means is None:
            raise ValueError("orbit views need the Gaussians' centres")
        return orbit_views(means, count, width=width, height=height)
    if source not in ("colmap", "transforms"):
        raise ViewsError(f"unknown views source {source!r} (expected orbit, colmap or transforms)")
    if not path or not Path(path).exists():
        raise ViewsError(f"the capture folder {path!r} does not exist")
    views = (load_colmap_views if source == "colmap" else load_transforms_views)(path, max_size=max_size)
    if count and len(views) > count:
        views = [views[i] for i in np.linspace(0, len(views) - 1, count).round().astype(int)]
    return views
