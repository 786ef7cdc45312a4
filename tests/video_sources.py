"""Videos of a known motion made the way a user's video is made: NOT by the engine's rasterizer.

`draw_splats` is a plain splat renderer written here on purpose (isotropic, screen-aligned Gaussian
footprints a bit smaller than the engine's, no EWA, no antialiasing, its own colour response), and the frames
go through JPEG or mp4 compression, so that the lifting is tested against a video source it was not tuned
on. The scenes are small Gaussian sets (ground + one object) the engine reads from a .ply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.cameras import intrinsics_from_fov, look_at
from engine.ply import SH_C0, GaussianArrays, write_gaussians
from engine.synthetic_scene import UP


@dataclass
class ObjectScene:
    gaussians: GaussianArrays
    indices: np.ndarray           # the object's Gaussians (the segment)
    viewmat: np.ndarray           # file frame = world
    K: np.ndarray
    width: int
    height: int
    size: float                   # the object's longest edge
    center: np.ndarray            # its centroid at rest

    def write(self, path: Path) -> Path:
        write_gaussians(path, self.gaussians)
        return path


def object_scene(shape: str, textured: bool, width: int, height: int, object_count: int = 700,
                 ground_count: int = 1500, seed: int = 0) -> ObjectScene:
    """A grey, speckled ground (y = 0, up is −y) and a box or a sphere of size 0.5 standing on it. A textured
    object has patches of random colour; an untextured one is one flat colour."""
    rng = np.random.default_rng(seed)
    size = 0.5
    center = np.array([0.0, -size / 2 - 0.02, 0.0])
    if shape == "sphere":
        v = rng.normal(size=(object_count, 3))
        pts = v / np.linalg.norm(v, axis=1, keepdims=True) * (size / 2)
    else:
        face = rng.integers(0, 6, object_count)
        axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
        pts = rng.uniform(-size / 2, size / 2, (object_count, 3))
        pts[np.arange(object_count), axis] = sign * size / 2
    if textured:
        cell = np.floor((pts + size / 2) / (size / 4)).astype(np.int64)
        palette = rng.uniform(0.1, 0.95, (64, 3))
        rgb = palette[(cell[:, 0] * 7 + cell[:, 1] * 13 + cell[:, 2] * 29) % 64]
    else:
        rgb = np.tile([0.85, 0.25, 0.2], (object_count, 1))
    ground = np.stack([rng.uniform(-2, 2, ground_count), np.zeros(ground_count), rng.uniform(-1.5, 2.5, ground_count)], 1)
    ground_rgb = np.clip(0.5 + rng.normal(0, 0.12, (ground_count, 1)) * np.ones(3), 0.05, 0.95)
    means = np.concatenate([ground, pts + center])
    radius = np.concatenate([np.full(ground_count, np.sqrt(16.0 / ground_count)) * 0.7,
                             np.full(object_count, np.sqrt(np.pi * size * size / object_count)) * 0.6])
    colors = np.concatenate([ground_rgb, rgb])
    n = len(means)
    g = GaussianArrays(means=means.astype(np.float32), sh_dc=((colors - 0.5) / SH_C0).astype(np.float32),
                       sh_rest=np.zeros((n, 0, 3), np.float32), opacity_logit=np.full(n, 4.0, np.float32),
                       log_scales=np.log(np.repeat(radius[:, None], 3, 1)).astype(np.float32),
                       quats_wxyz=np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)).astype(np.float32))
    viewmat = look_at(center + np.array([0.3, -1.1, -2.2]), center, up=UP)
    indices = np.arange(ground_count, n)
    return ObjectScene(g, indices, viewmat, intrinsics_from_fov(width, height, 50.0), width, height, size,
                       means[indices].mean(0))


def draw_splats(means: np.ndarray, colors: np.ndarray, radii: np.ndarray, opacities: np.ndarray,
                viewmat: np.ndarray, K: np.ndarray, width: int, height: int,
                footprint: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """(rgb (H, W, 3) float in [0, 1], depth (H, W), 0 = nothing): front-to-back alpha blending of round
    footprints of σ = footprint · radius · f / z pixels, sorted by depth, each cut at 3σ."""
    cam = means @ viewmat[:3, :3].T + viewmat[:3, 3]
    keep = cam[:, 2] > 0.05
    cam, colors, radii, opacities = cam[keep], colors[keep], radii[keep], opacities[keep]
    order = np.argsort(cam[:, 2])
    cam, colors, radii, opacities = cam[order], colors[order], radii[order], opacities[order]
    u = cam[:, 0] / cam[:, 2] * K[0, 0] + K[0, 2]
    v = cam[:, 1] / cam[:, 2] * K[1, 1] + K[1, 2]
    sigma = np.maximum(footprint * radii * K[0, 0] / cam[:, 2], 0.3)
    transmit = np.ones((height, width))
    rgb = np.zeros((height, width, 3))
    depth = np.zeros((height, width))
    reach = np.ceil(3.0 * sigma).astype(np.int64)
    # One splat at a time, front to back, over its 3σ window (what a simple splatting renderer does).
    for i in range(len(u)):
        x0, x1 = max(int(u[i]) - reach[i], 0), min(int(u[i]) + reach[i] + 1, width)
        y0, y1 = max(int(v[i]) - reach[i], 0), min(int(v[i]) + reach[i] + 1, height)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = np.arange(x0, x1) + 0.5 - u[i]
        dy = np.arange(y0, y1) + 0.5 - v[i]
        alpha = np.minimum(opacities[i] * np.exp(-0.5 * (dy[:, None] ** 2 + dx[None] ** 2) / sigma[i] ** 2), 0.99)
        w = transmit[y0:y1, x0:x1] * alpha
        rgb[y0:y1, x0:x1] += w[..., None] * colors[i]
        depth[y0:y1, x0:x1] += w * cam[i, 2]
        transmit[y0:y1, x0:x1] -= w
    covered = 1.0 - transmit
    depth = np.where(covered > 0.5, depth / np.maximum(covered, 1e-6), 0.0)
    # A camera's colour response, not ours: a gamma, a gain and a lifted black.
    rgb = np.clip(1.06 * rgb ** 1.12 + 0.025, 0, 1)
    return rgb, depth


def draw_motion(scene: ObjectScene, transforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames (F, H, W, 3) and depth (F, H, W) of the object moved by each (4, 4) transform."""
    g = scene.gaussians
    colors = np.clip(g.sh_dc * SH_C0 + 0.5, 0, 1).astype(np.float64)
    radii = np.exp(g.log_scales[:, 0]).astype(np.float64)
    opac = 1.0 / (1.0 + np.exp(-g.opacity_logit.astype(np.float64)))
    frames, depths = [], []
    for T in transforms:
        means = g.means.astype(np.float64).copy()
        means[scene.indices] = means[scene.indices] @ T[:3, :3].T + T[:3, 3]
        rgb, depth = draw_splats(means, colors, radii, opac, scene.viewmat, scene.K, scene.width, scene.height)
        frames.append((rgb * 255 + 0.5).astype(np.uint8))
        depths.append(depth)
    return np.stack(frames), np.stack(depths).astype(np.float32)


def jpeg(frames: np.ndarray, quality: int = 70) -> np.ndarray:
    """Each frame through a JPEG encoder and back (blocking, ringing, chroma subsampling)."""
    import io

    from PIL import Image

    out = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return np.stack(out)


def write_mp4(frames: np.ndarray, path: Path, fps: float = 24.0) -> Path:
    import cv2

    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


def steady_motion(scene: ObjectScene, frames: int, sideways: float = 0.0, degrees: float = 0.0) -> np.ndarray:
    """(F, 4, 4): a constant-velocity translation by `sideways` (scene units over the clip, along the
    camera's right axis: in the image plane) and turn about up through the object's centre; T_0 = I."""
    from tests.motion_fixtures import about, rotation

    shift = sideways * scene.viewmat[0, :3]
    return np.stack([about(rotation(-UP, degrees * s), scene.center, shift * s)
                     for s in np.linspace(0.0, 1.0, frames)])


def track_errors(scene: ObjectScene, truth: np.ndarray, fitted: np.ndarray) -> dict[str, float]:
    """In object sizes, over frames: the centre's worst error across the view ray (image plane) and along
    it, and the worst second difference of the centre's error (frame-to-frame jitter)."""
    c = scene.center
    true_c = truth[:, :3, :3] @ c + truth[:, :3, 3]
    fit_c = fitted[:, :3, :3] @ c + fitted[:, :3, 3]
    eye = -scene.viewmat[:3, :3].T @ scene.viewmat[:3, 3]
    ray = true_c - eye
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    err = fit_c - true_c
    along = (err * ray).sum(1)
    across = np.linalg.norm(err - along[:, None] * ray, axis=1)
    jitter = np.linalg.norm(err[2:] - 2 * err[1:-1] + err[:-2], axis=1) if len(err) > 2 else np.zeros(1)
    return {"image_plane": float(across.max() / scene.size), "view_ray": float(np.abs(along).max() / scene.size),
            "jitter": float(jitter.max() / scene.size)}
