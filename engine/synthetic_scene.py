"""Synthetic 3DGS scenes with known per-Gaussian labels: coloured spheres and boxes on a ground plane.

Tests and benchmarks use them as ground truth (segmentation IoU, recovered motion). numpy only. Scenes are
built in the file's frame (COLMAP: y points down, so "up" is −y and the ground plane is y = 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .ply import SH_C0, GaussianArrays, write_ply, gaussians_to_structured

UP = np.array([0.0, -1.0, 0.0])


@dataclass
class SceneObject:
    name: str
    label: int
    shape: str                  # "sphere", "box" or "plane"
    center: np.ndarray          # (3,) in the file frame
    size: float                 # diameter / longest edge
    color: tuple[float, float, float]


@dataclass
class SyntheticScene:
    gaussians: GaussianArrays
    labels: np.ndarray                         # (N,) int32; 0 = ground
    objects: list[SceneObject] = field(default_factory=list)

    def object(self, name: str) -> SceneObject:
        return next(o for o in self.objects if o.name == name)

    def write(self, path: str | Path, with_labels: bool = False) -> Path:
        """Write as an INRIA .ply; `with_labels` adds an int `label` property (kept as an extra attribute)."""
        arr = gaussians_to_structured(self.gaussians)
        if with_labels:
            import numpy.lib.recfunctions as rfn
            arr = rfn.append_fields(arr, "label", self.labels.astype("<i4"), usemask=False)
        write_ply(path, arr)
        return Path(path)


def _dc_from_rgb(rgb: np.ndarray) -> np.ndarray:
    return (np.asarray(rgb, np.float32) - 0.5) / SH_C0


def _surface_points(shape: str, n: int, size: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points on a shape's surface (centred at 0) and their outward normals."""
    if shape == "sphere":
        v = rng.normal(size=(n, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v * (size / 2), v
    if shape == "box":
        face = rng.integers(0, 6, n)
        axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
        p = rng.uniform(-size / 2, size / 2, (n, 3))
        p[np.arange(n), axis] = sign * size / 2
        normal = np.zeros((n, 3))
        normal[np.arange(n), axis] = sign
        return p, normal
    if shape == "plane":
        p = np.zeros((n, 3))
        p[:, 0] = rng.uniform(-size / 2, size / 2, n)
        p[:, 2] = rng.uniform(-size / 2, size / 2, n)
        return p, np.tile(UP, (n, 1))
    raise ValueError(f"unknown shape {shape!r}")


def _flat_quats(normals: np.ndarray) -> np.ndarray:
    """(w,x,y,z) quaternions rotating local z onto each normal, so the thin axis (z) faces out."""
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(np.tile(z, (len(normals), 1)), normals)
    cos = normals @ z
    w = 1.0 + cos
    q = np.concatenate([w[:, None], axis], axis=1)
    anti = w < 1e-8  # normal == -z: rotate half a turn about x
    q[anti] = [0.0, 1.0, 0.0, 0.0]
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def make_primitives_scene(gaussians_per_object: int = 2000, sh_degree: int = 3, seed: int = 0,
                          ground_size: float = 4.0) -> SyntheticScene:
    """Ground plane (label 0), a red sphere (1), a green box (2) and a blue sphere (3), resting on the ground."""
    rng = np.random.default_rng(seed)
    specs = [
        SceneObject("ground", 0, "plane", np.zeros(3), ground_size, (0.55, 0.55, 0.5)),
        SceneObject("red_sphere", 1, "sphere", np.array([-1.0, -0.35, 0.3]), 0.7, (0.85, 0.15, 0.1)),
        SceneObject("green_box", 2, "box", np.array([0.4, -0.3, -0.4]), 0.6, (0.15, 0.7, 0.2)),
        SceneObject("blue_sphere", 3, "sphere", np.array([0.9, -0.25, 0.8]), 0.5, (0.1, 0.25, 0.85)),
    ]
    parts = []
    for obj in specs:
        n = gaussians_per_object * (3 if obj.shape == "plane" else 1)
        p, normal = _surface_points(obj.shape, n, obj.size, rng)
        area = {"plane": obj.size ** 2, "sphere": np.pi * obj.size ** 2, "box": 6 * obj.size ** 2}[obj.shape]
        radius = np.sqrt(area / n) * 0.9
        scales = np.stack([np.full(n, radius), np.full(n, radius), np.full(n, radius * 0.15)], axis=1)
        rgb = np.clip(np.asarray(obj.color) + rng.normal(0, 0.03, (n, 3)), 0.02, 0.98)
        parts.append((p + obj.center, _flat_quats(normal), scales, rgb, np.full(n, obj.label, np.int32)))
    means = np.concatenate([p[0] for p in parts]).astype(np.float32)
    quats = np.concatenate([p[1] for p in parts]).astype(np.float32)
    scales = np.concatenate([p[2] for p in parts])
    rgb = np.concatenate([p[3] for p in parts])
    labels = np.concatenate([p[4] for p in parts])
    n = len(means)
    k = (sh_degree + 1) ** 2 - 1
    g = GaussianArrays(
        means=means,
        sh_dc=_dc_from_rgb(rgb).astype(np.float32),
        sh_rest=(rng.normal(0, 0.01, (n, k, 3))).astype(np.float32),
        opacity_logit=np.full(n, 4.0, np.float32),   # sigmoid(4) ≈ 0.98: solid surfaces
        log_scales=np.log(scales).astype(np.float32),
        quats_wxyz=quats,
    )
    return SyntheticScene(gaussians=g, labels=labels, objects=specs)


def make_random_gaussians(n: int, sh_degree: int = 3, seed: int = 0, extent: float = 2.0) -> GaussianArrays:
    """Random Gaussians in a cube (benchmarks: file size and count matter, not looks)."""
    rng = np.random.default_rng(seed)
    k = (sh_degree + 1) ** 2 - 1
    return GaussianArrays(
        means=rng.uniform(-extent, extent, (n, 3)).astype(np.float32),
        sh_dc=rng.normal(0, 0.5, (n, 3)).astype(np.float32),
        sh_rest=rng.normal(0, 0.05, (n, k, 3)).astype(np.float32),
        opacity_logit=rng.normal(0, 2, n).astype(np.float32),
        log_scales=rng.uniform(-5, -2.5, (n, 3)).astype(np.float32),
        quats_wxyz=rng.normal(size=(n, 4)).astype(np.float32),
    )
