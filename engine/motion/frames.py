"""Rendering the scene with its segment moved rigidly: the first and last keyframes a video generator is
given, and (tests, benchmarks) videos of a known motion with their depth."""

from __future__ import annotations

import numpy as np
import torch

from ..gaussian_transform import transform_gaussian_arrays
from ..ply import GaussianArrays
from ..render.rasterizer import render_gaussians


def _moved_arrays(g: GaussianArrays, indices: np.ndarray, transform: np.ndarray | None,
                  point_positions: np.ndarray | None = None):
    means = g.means.astype(np.float32).copy()
    quats = g.quats_wxyz.astype(np.float32).copy()
    log_scales = g.log_scales.astype(np.float32).copy()
    sh_rest = g.sh_rest.astype(np.float32).copy()
    if transform is not None:
        m, q, s, r = transform_gaussian_arrays(means[indices], quats[indices], log_scales[indices],
                                               sh_rest[indices], np.asarray(transform, np.float64))
        means[indices], quats[indices], log_scales[indices], sh_rest[indices] = m, q, s, r
    if point_positions is not None:
        means[indices] = point_positions
    return means, quats, log_scales, sh_rest


def render_with_segment_pose(g: GaussianArrays, indices: np.ndarray, viewmat: np.ndarray, K: np.ndarray,
                             width: int, height: int, transform: np.ndarray | None = None,
                             point_positions: np.ndarray | None = None, background=(0.0, 0.0, 0.0),
                             backend: str = "auto", device: str | torch.device | None = None
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb (H, W, 3) uint8, depth (H, W) float32 (0 = nothing), alpha (H, W)) of the whole scene with the
    Gaussians `indices` moved by `transform` (file frame, SH rotated), or placed at `point_positions`."""
    means, quats, log_scales, sh_rest = _moved_arrays(g, np.asarray(indices), transform, point_positions)
    sh = np.concatenate([g.sh_dc.astype(np.float32)[:, None, :], sh_rest], axis=1)
    tensors = [torch.from_numpy(a) for a in (means, quats, np.exp(log_scales), g.opacities().astype(np.float32), sh)]
    if device is not None:
        tensors = [t.to(device) for t in tensors]
    with torch.no_grad():
        out = render_gaussians(*tensors, viewmat, K, width, height, background=np.asarray(background, np.float32),
                               backend=backend)
    rgb = (out.rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    depth = (out.depth * (out.alpha > 0.5)).cpu().numpy().astype(np.float32)
    return rgb, depth, out.alpha.cpu().numpy()


def render_motion_video(g: GaussianArrays, indices: np.ndarray, transforms: np.ndarray, viewmat: np.ndarray,
                        K: np.ndarray, width: int, height: int, backend: str = "auto",
                        point_positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frames (F, H, W, 3) uint8 and depth (F, H, W) of a known rigid motion (F, 4, 4) of the segment, or of
    known per-frame positions (F, n, 3) of its Gaussians (articulated motion)."""
    count = len(transforms) if transforms is not None else len(point_positions)
    rgbs, depths = [], []
    for f in range(count):
        rgb, depth, _ = render_with_segment_pose(
            g, indices, viewmat, K, width, height,
            transform=None if transforms is None else transforms[f],
            point_positions=None if point_positions is None else point_positions[f], backend=backend)
        rgbs.append(rgb)
        depths.append(depth)
    return np.stack(rgbs), np.stack(depths)
