"""What the splat format modules share: the file frames, checks that name the file, and the quantisation helpers
(sigmoid/logit, smallest-three quaternions). numpy only, so the add-on and the engine both use it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SplatFormatError
from ..ply import SH_C0, GaussianArrays

# The frame a format stores its values in, as a 3×3 from that frame to the INRIA/COLMAP frame (x right, y down,
# z forward: "RDF"). Niantic's .spz is RUB (x right, y up, z back): a half turn about x from RDF.
RDF = np.eye(3)
RUB = np.diag([1.0, -1.0, -1.0])


def fail(path: Path | str, message: str) -> SplatFormatError:
    return SplatFormatError(f"{Path(path).name}: {message}")


def check_finite(path: Path | str, g: GaussianArrays) -> None:
    """Raise naming the first NaN/Inf value (a damaged file), so nothing non-finite reaches Blender."""
    for name in ("means", "sh_dc", "sh_rest", "opacity_logit", "log_scales", "quats_wxyz"):
        values = getattr(g, name)
        if values.size and not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1))[0])
            raise fail(path, f"{name} of Gaussian {row:,} is NaN or infinite")


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Inverse sigmoid, clamped so 0 and 1 (8-bit alpha) give finite logits."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p / (1.0 - p)).astype(np.float32)


def dc_to_color(sh_dc: np.ndarray) -> np.ndarray:
    return 0.5 + SH_C0 * np.asarray(sh_dc, dtype=np.float64)


def color_to_dc(color: np.ndarray) -> np.ndarray:
    return ((np.asarray(color, dtype=np.float64) - 0.5) / SH_C0).astype(np.float32)


def normalized_quats(quats: np.ndarray) -> np.ndarray:
    """Unit quaternions (float64); a zero quaternion becomes the identity (its component 0 set to 1)."""
    q = np.asarray(quats, dtype=np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    out = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), 0.0)
    out[norm[:, 0] == 0, 0] = 1.0
    return out


def smallest_three(quats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit quaternions (any component order) as (index of the largest |component|, the other three in order),
    sign chosen so the largest is positive (q and −q are one rotation)."""
    q = normalized_quats(quats)
    largest = np.argmax(np.abs(q), axis=1)
    rows = np.arange(len(q))
    q *= np.where(q[rows, largest] < 0, -1.0, 1.0)[:, None]
    keep = np.ones_like(q, dtype=bool)
    keep[rows, largest] = False
    return largest.astype(np.uint32), q[keep].reshape(-1, 3)


def from_smallest_three(largest: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The reverse of smallest_three: (N,) index and (N, 3) values -> (N, 4) with the largest = sqrt(1 − Σ²)."""
    others = np.asarray(others, dtype=np.float32)
    largest = np.asarray(largest)
    big = np.sqrt(np.maximum(np.float32(0.0), np.float32(1.0) - np.einsum("ij,ij->i", others, others)))
    out = np.empty((len(largest), 4), dtype=np.float32)
    # Column c is the largest where largest == c, else the other that sits at c (c − 1 once past the largest):
    # four vectorised selects instead of a scattered boolean assignment (much faster at 1M).
    for c in range(4):
        after = others[:, c - 1] if c > 0 else others[:, 0]
        before = others[:, c] if c < 3 else others[:, 2]
        out[:, c] = np.where(largest == c, big, np.where(largest < c, after, before))
    return out


_SH_ROWS = 8192   # rows decoded per step: their bytes stay in cache across the K coefficient passes


def decode_sh_rows(codes: np.ndarray, table: np.ndarray, out: np.ndarray, start: int = 0) -> None:
    """(M, K, 3) uint8 codes (any strides) -> table[codes] into rows start..start+M of `out`, (K, N, 3) float32.

    The output is coefficient-major, so each coefficient's RGB is one contiguous block the add-on copies into its
    per-coefficient attribute without a strided gather (that gather cost more than the decode at 1M Gaussians).
    One 256-entry table lookup per coefficient and row block: mode="clip" lets numpy write into `out` without
    buffering (a uint8 index cannot leave the table). Callers may decode a file's rows as they arrive.
    """
    table = np.asarray(table, np.float32)
    m, k, _ = codes.shape
    for lo in range(0, m, _SH_ROWS):
        hi = min(lo + _SH_ROWS, m)
        block = codes[lo:hi]
        for j in range(k):
            np.take(table, block[:, j, :], out=out[j, start + lo:start + hi], mode="clip")


def decode_sh_bytes(codes: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(N, K, 3) uint8 codes (any strides) -> table[codes] as float32 (N, K, 3), stored coefficient-major (a
    (N, K, 3) view of (K, N, 3) memory; see decode_sh_rows)."""
    n, k, width = codes.shape
    out = np.empty((k, n, width), np.float32)
    decode_sh_rows(codes, table, out)
    return out.transpose(1, 0, 2)


def empty_rest(n: int) -> np.ndarray:
    return np.zeros((n, 0, 3), np.float32)


def sh_degree_for_coefficients(k: int, path: Path | str) -> int:
    for degree in range(4):
        if k == (degree + 1) ** 2 - 1:
            return degree
    raise fail(path, f"{k} SH coefficients per channel is not a valid SH layout (0, 3, 8 or 15)")
