"""What the splat format modules share: the file frames, checks that name the file, and the quantisation helpers
(sigmoid/logit, smallest-three quaternions). numpy only, so the add-on and the engine both use it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

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


def from_smallest_three(largest: np.ndarray, others, order: tuple[int, int, int, int] = (0, 1, 2, 3)) -> np.ndarray:
    """The reverse of smallest_three: (N,) index of the largest stored component and the other three in stored
    order ((N, 3), or three (N,) arrays) -> (N, 4) float32 with the largest = sqrt(1 − Σ²). Stored component c
    lands in column order[c] (e.g. (1, 2, 3, 0) turns stored x y z w into w x y z)."""
    o = [np.asarray(others[:, j] if isinstance(others, np.ndarray) else others[j], np.float32) for j in range(3)]
    largest = np.asarray(largest)
    big = o[0] * o[0]
    big += o[1] * o[1]
    big += o[2] * o[2]
    np.subtract(np.float32(1.0), big, out=big)
    np.maximum(big, np.float32(0.0), out=big)
    np.sqrt(big, out=big)
    out = np.empty((len(largest), 4), dtype=np.float32)
    # Component c is the largest where largest == c, else the other stored at c (at c − 1 once past the largest):
    # one or two selects per column, no per-row gather (much faster at 1M).
    for c in range(4):
        column = np.where(largest == c, big, o[min(c, 2)])
        if 0 < c < 3:
            column = np.where(largest < c, o[c - 1], column)
        out[:, order[c]] = column
    return out


_SH_ROWS = 4096   # rows decoded per step: their bytes and floats stay in cache until they are moved out


# Where a decoder puts the SH: given (K, N), K float32 arrays of (N, 3), one per coefficient. The add-on passes
# separate arrays so each can be freed right after its copy into Blender, whose next attribute then reuses the
# memory (one (K, N, 3) block is freed only at the end: Blender's attributes then fault in fresh pages, which
# cost more than the SH decode). Decoders given one return an sh_rest of shape (N, 0, 3).
SHInto = Callable[[int, int], Sequence[np.ndarray]]


def sh_block(k: int, n: int) -> np.ndarray:
    """The default SH output: one (K, N, 3) float32 block (GaussianArrays.sh_rest is its (N, K, 3) view)."""
    return np.empty((k, n, 3), np.float32)


def decode_sh_rows(codes: np.ndarray, table: np.ndarray | float, out: Sequence[np.ndarray], start: int = 0) -> None:
    """(M, K, 3) uint8 codes (any strides) -> table[codes] into rows start..start+M of `out`, K arrays of (N, 3)
    float32 (or a (K, N, 3) block). `table` is a 256-entry table, or a float s for codes that mean (code − 128)·s.

    The output is coefficient-major, so each coefficient's RGB is one contiguous block the add-on copies into its
    per-coefficient attribute without a strided gather (that gather cost more than the decode at 1M Gaussians).
    A table is looked up per coefficient and row block. For a scale, each row block's bytes are read as signed
    (top bit flipped) and multiplied into a row-major scratch block in cache (exact), whose coefficients then move
    to their rows of `out` as 12-byte RGB items: about half the cost of the lookup on .spz's row-major bytes.
    Callers may decode a file's rows as they arrive.
    """
    m, k, width = codes.shape
    rows = min(m, _SH_ROWS)
    if np.ndim(table):   # one lookup per coefficient and row block, straight into the output rows
        for lo in range(0, m, rows):
            hi = min(lo + rows, m)
            for j in range(k):   # mode="clip": no buffering (a uint8 index cannot leave the table)
                np.take(table, codes[lo:hi, j, :], out=out[j][start + lo:start + hi], mode="clip")
        return
    scratch = np.empty((rows, k, width), np.float32)
    signed = np.empty((rows, k, width), np.uint8)
    item = np.dtype((np.void, 4 * width))
    targets = [np.asarray(out[j]).view(item).reshape(-1) for j in range(k)]   # each: (N,) RGB items
    for lo in range(0, m, rows):
        hi = min(lo + rows, m)
        flipped = np.bitwise_xor(codes[lo:hi], np.uint8(0x80), out=signed[:hi - lo])
        items = np.multiply(flipped.view(np.int8), np.float32(table), out=scratch[:hi - lo]).view(item)
        for j, target in enumerate(targets):
            target[start + lo:start + hi] = items[:, j, 0]


def empty_rest(n: int) -> np.ndarray:
    return np.zeros((n, 0, 3), np.float32)


def sh_degree_for_coefficients(k: int, path: Path | str) -> int:
    for degree in range(4):
        if k == (degree + 1) ** 2 - 1:
            return degree
    raise fail(path, f"{k} SH coefficients per channel is not a valid SH layout (0, 3, 8 or 15)")
