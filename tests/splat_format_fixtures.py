"""Random Gaussians and independent writers of the published layouts (.splat, SOG v2) for the format tests."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np

from engine.ply import SH_C0, GaussianArrays


def random_gaussians(n: int = 700, sh_degree: int = 3, seed: int = 0, extent: float = 5.0) -> GaussianArrays:
    rng = np.random.default_rng(seed)
    k = (sh_degree + 1) ** 2 - 1
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    return GaussianArrays(
        means=rng.uniform(-extent, extent, (n, 3)).astype(np.float32),
        sh_dc=rng.uniform(-1.5, 1.5, (n, 3)).astype(np.float32),
        sh_rest=rng.uniform(-0.6, 0.6, (n, k, 3)).astype(np.float32),
        opacity_logit=rng.uniform(-4, 4, n).astype(np.float32),
        log_scales=rng.uniform(-6, -1, (n, 3)).astype(np.float32),
        quats_wxyz=quats)


def same_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|<a, b>| of normalised quaternions: 1 for the same rotation (q and −q alike)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.abs(np.sum(a * b, axis=1))


def write_splat_by_hand(path: Path, g: GaussianArrays) -> None:
    """antimatter15's layout, one struct.pack per Gaussian (independent of engine.formats.splat)."""
    out = bytearray()
    for i in range(g.count):
        rgb = [min(255, max(0, int(round((0.5 + SH_C0 * float(c)) * 255)))) for c in g.sh_dc[i]]
        alpha = min(255, max(0, int(round(255 / (1 + np.exp(-float(g.opacity_logit[i])))))))
        q = g.quats_wxyz[i] / np.linalg.norm(g.quats_wxyz[i])
        rot = [min(255, max(0, int(round(float(v) * 128 + 128)))) for v in q]
        out += struct.pack("<3f3f4B4B", *map(float, g.means[i]), *map(float, np.exp(g.log_scales[i])),
                           *rgb, alpha, *rot)
    path.write_bytes(bytes(out))


def _webp(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, format="WEBP", lossless=True, quality=100, exact=True)
    return buffer.getvalue()


def _to_image(rows: np.ndarray, width: int) -> np.ndarray:
    height = -(-len(rows) // width)
    image = np.zeros((height * width, 4), np.uint8)
    image[:len(rows)] = rows
    return image.reshape(height, width, 4)


def _codebook(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """256 levels spanning the values (quantiles) and each value's nearest level."""
    book = np.quantile(values.reshape(-1), np.linspace(0, 1, 256)).astype(np.float32)
    index = np.abs(values.reshape(-1, 1) - book[None, :]).argmin(axis=1).astype(np.uint8)
    return book, index.reshape(values.shape)


def sog_files(g: GaussianArrays, width: int = 32) -> dict[str, bytes]:
    """SOG version 2 (PlayCanvas' published layout), written from the spec without engine code."""
    n = g.count
    files: dict[str, bytes] = {}
    logm = np.sign(g.means) * np.log1p(np.abs(g.means.astype(np.float64)))
    mins, maxs = logm.min(axis=0), logm.max(axis=0)
    q16 = np.round((logm - mins) / (maxs - mins) * 65535).astype(np.uint32)
    lo = np.concatenate([(q16 & 0xFF), np.full((n, 1), 255)], 1).astype(np.uint8)
    hi = np.concatenate([(q16 >> 8), np.full((n, 1), 255)], 1).astype(np.uint8)
    files["means_l.webp"], files["means_u.webp"] = _webp(_to_image(lo, width)), _webp(_to_image(hi, width))
    scale_book, scale_idx = _codebook(g.log_scales)
    files["scales.webp"] = _webp(_to_image(np.concatenate([scale_idx, np.full((n, 1), 255, np.uint8)], 1), width))
    q = g.quats_wxyz / np.linalg.norm(g.quats_wxyz, axis=1, keepdims=True)
    largest = np.abs(q).argmax(axis=1)
    q = q * np.where(q[np.arange(n), largest] < 0, -1, 1)[:, None]
    rows = np.zeros((n, 4), np.uint8)
    for i in range(n):
        others = [q[i, j] for j in range(4) if j != largest[i]]
        rows[i, :3] = [int(round((v * np.sqrt(2) * 0.5 + 0.5) * 255)) for v in others]
        rows[i, 3] = 252 + largest[i]
    files["quats.webp"] = _webp(_to_image(rows, width))
    sh0_book, sh0_idx = _codebook(g.sh_dc)
    alpha = np.round(255 / (1 + np.exp(-g.opacity_logit.astype(np.float64)))).astype(np.uint8)
    files["sh0.webp"] = _webp(_to_image(np.concatenate([sh0_idx, alpha[:, None]], 1), width))
    meta = {"version": 2, "count": n,
            "means": {"mins": mins.tolist(), "maxs": maxs.tolist(), "files": ["means_l.webp", "means_u.webp"]},
            "scales": {"codebook": scale_book.tolist(), "files": ["scales.webp"]},
            "quats": {"files": ["quats.webp"]},
            "sh0": {"codebook": sh0_book.tolist(), "files": ["sh0.webp"]}}
    k = g.sh_rest.shape[1]
    if k:
        # palette = every Gaussian its own entry (exact labels), coefficients through a 256-level codebook
        rest_book, rest_idx = _codebook(g.sh_rest)
        centroid_rows = np.concatenate([rest_idx.reshape(n * k, 3), np.full((n * k, 1), 255, np.uint8)], 1)
        files["shN_centroids.webp"] = _webp(_to_image(centroid_rows, 64 * k))
        labels = np.stack([np.arange(n) & 0xFF, np.arange(n) >> 8, np.zeros(n), np.full(n, 255)], 1).astype(np.uint8)
        files["shN_labels.webp"] = _webp(_to_image(labels, width))
        meta["shN"] = {"count": n, "bands": int(round(np.sqrt(k + 1))) - 1, "codebook": rest_book.tolist(),
                       "files": ["shN_centroids.webp", "shN_labels.webp"]}
    files["meta.json"] = json.dumps(meta).encode()
    return files


def write_sog(path: Path, g: GaussianArrays, as_zip: bool) -> Path:
    files = sog_files(g)
    if as_zip:
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
    else:
        path.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (path / name).write_bytes(data)
    return path


def spz_v2_bytes(g: GaussianArrays, fractional_bits: int = 12) -> bytes:
    """Niantic .spz version 2 (rotation as 3 bytes of x y z with w ≥ 0), gzip-compressed, from the published
    layout (independent of engine.formats.spz, which writes version 3)."""
    import gzip

    n, k = g.count, g.sh_rest.shape[1]
    degree = {0: 0, 3: 1, 8: 2, 15: 3}[k]
    fixed = np.round(g.means.astype(np.float64) * (1 << fractional_bits)).astype(np.int64) & 0xFFFFFF
    positions = np.stack([fixed & 0xFF, (fixed >> 8) & 0xFF, fixed >> 16], axis=-1).astype(np.uint8)
    alpha = np.round(255 / (1 + np.exp(-g.opacity_logit.astype(np.float64)))).astype(np.uint8)
    colors = np.clip(np.round(g.sh_dc.astype(np.float64) * 0.15 * 255 + 127.5), 0, 255).astype(np.uint8)
    scales = np.clip(np.round((g.log_scales.astype(np.float64) + 10) * 16), 0, 255).astype(np.uint8)
    q = g.quats_wxyz / np.linalg.norm(g.quats_wxyz, axis=1, keepdims=True)
    q = q * np.where(q[:, :1] < 0, -1, 1)          # w ≥ 0, then x y z stored
    rot = np.clip(np.round((q[:, 1:] + 1) * 127.5), 0, 255).astype(np.uint8)
    sh = np.clip(np.round(g.sh_rest.astype(np.float64) * 128 + 128), 0, 255).astype(np.uint8)
    header = struct.pack("<IIIBBBB", 0x5053474E, 2, n, degree, fractional_bits, 0, 0)
    return gzip.compress(header + b"".join(a.tobytes() for a in (positions, alpha, colors, scales, rot, sh)))
