"""antimatter15 `.splat`: no header, 32 bytes a Gaussian, degree-0 colour only (the web viewers' format).

Layout, little endian: position 3×f32, scale 3×f32 (linear: exp of the log-scale), RGBA 4×u8 (rgb = 0.5 + C0·f_dc,
a = sigmoid(opacity)), rotation 4×u8 (w x y z, q/|q|·128 + 128). Frame: as the .ply it came from (RDF).
Quantisation: colour and opacity 1/255, rotation components 1/128; positions and scales exact float32.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..ply import GaussianArrays
from .common import check_finite, color_to_dc, dc_to_color, empty_rest, fail, logit, normalized_quats, sigmoid

ROW = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
assert ROW.itemsize == 32


def read(path: str | os.PathLike) -> GaussianArrays:
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise fail(path, "is empty")
    if size % ROW.itemsize:
        raise fail(path, f"is {size:,} bytes, not a whole number of 32-byte splats (truncated or not a .splat)")
    rows = np.fromfile(path, dtype=ROW)
    scales = rows["scale"]
    if not np.isfinite(rows["position"]).all() or not np.isfinite(scales).all():
        raise fail(path, "has NaN or infinite positions or scales")
    if (scales <= 0).any():
        index = int(np.flatnonzero((scales <= 0).any(axis=1))[0])
        raise fail(path, f"Gaussian {index:,} has a scale ≤ 0 (a .splat stores linear scales; not a .splat file?)")
    rgba = rows["rgba"].astype(np.float32) / 255.0
    quats = (rows["rot"].astype(np.float32) - 128.0) / 128.0
    g = GaussianArrays(means=np.ascontiguousarray(rows["position"]), sh_dc=color_to_dc(rgba[:, :3]),
                       sh_rest=empty_rest(len(rows)), opacity_logit=logit(rgba[:, 3]),
                       log_scales=np.log(scales).astype(np.float32), quats_wxyz=quats)
    check_finite(path, g)
    return g


def encode(g: GaussianArrays) -> np.ndarray:
    rows = np.empty(g.count, dtype=ROW)
    rows["position"] = g.means
    rows["scale"] = np.exp(np.asarray(g.log_scales, np.float64))
    color = np.concatenate([dc_to_color(g.sh_dc), sigmoid(g.opacity_logit)[:, None]], axis=1)
    rows["rgba"] = np.clip(np.round(color * 255.0), 0, 255)
    rows["rot"] = np.clip(np.round(normalized_quats(g.quats_wxyz) * 128.0 + 128.0), 0, 255)
    return rows


def write(path: str | os.PathLike, g: GaussianArrays) -> None:
    Path(path).write_bytes(encode(g).tobytes())
