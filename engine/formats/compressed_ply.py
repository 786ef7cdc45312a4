"""PlayCanvas / SuperSplat `.compressed.ply` (reference: playcanvas/splat-transform), read and written.

A binary little-endian PLY with `element chunk` (one per 256 Gaussians: float min/max of position, log-scale and
colour; files before colour bounds have 12 floats and colour 0..1), `element vertex` of four uint32 (position
11/10/11 bits and log-scale 11/10/11 bits within the chunk's bounds; rotation as a 2-bit index of the largest of
w x y z + 3×10 bits of the others in ±√2/2; colour RGBA 8 bits each, rgb within the chunk's bounds, a =
sigmoid(opacity)), and an optional `element sh` of uchar f_rest_* (v/8 + 0.5 in 1/256 steps, channel-major as in
INRIA). Frame: RDF, as the INRIA .ply. Quantisation: position and log-scale 1/2047 (x, z) and 1/1023 (y) of the
chunk's range, colour 1/255 of the chunk's range, opacity 1/255, rotation components √2/1023, SH 8/256.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..ply import GaussianArrays
from .common import SHInto, color_to_dc, decode_sh_rows, dc_to_color, empty_rest, fail, from_smallest_three, \
    logit, sh_block, sh_degree_for_coefficients, sigmoid, smallest_three

CHUNK = 256
_POSITION = ("min_x", "min_y", "min_z", "max_x", "max_y", "max_z")
_SCALE = ("min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z")
_COLOR = ("min_r", "min_g", "min_b", "max_r", "max_g", "max_b")
_PACKED = ("packed_position", "packed_rotation", "packed_scale", "packed_color")
_TYPES = {"float": "<f4", "float32": "<f4", "uint": "<u4", "uint32": "<u4", "uchar": "u1", "uint8": "u1"}
_SQRT2 = np.sqrt(2.0)
_MAX_HEADER = 64 << 10
_LOGIT_TABLE = logit(np.arange(256) / 255.0)       # 8-bit alpha -> opacity logit
# SH byte -> coefficient as splat-transform decodes it: (v + 0.5)/256·8 − 4, with 0 and 255 the range's ends.
_SH_TABLE = ((np.concatenate([[0.0], (np.arange(1, 255) + 0.5) / 256.0, [1.0]]) - 0.5) * 8.0).astype(np.float32)


def _header(path: Path, head: bytes) -> tuple[list[tuple[str, int, np.dtype]], int]:
    end = head.find(b"end_header\n")
    if not head.startswith(b"ply\n") or end < 0:
        raise fail(path, "is not a PLY file, or its header is cut off")
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    fmt = None
    for line in head[:end].decode("ascii", errors="replace").split("\n")[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1] if len(words) > 1 else None
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and len(words) == 3 and elements and words[1] in _TYPES:
            elements[-1][2].append((words[2], _TYPES[words[1]]))
        else:
            raise fail(path, f"unexpected compressed-PLY header line {line!r}")
    if fmt != "binary_little_endian":
        raise fail(path, f"is a compressed PLY in format {fmt!r}; only binary_little_endian exists")
    return [(name, count, np.dtype(props)) for name, count, props in elements], end + len(b"end_header\n")


def is_compressed_ply(head: bytes) -> bool:
    """Whether a PLY header (first bytes of the file) is PlayCanvas' compressed layout."""
    end = head.find(b"end_header")
    return head.startswith(b"ply") and b"element chunk " in head[:end if end >= 0 else len(head)]


def _unorm(values: np.ndarray, shift: int, bits: int) -> np.ndarray:
    return ((values >> shift) & ((1 << bits) - 1)).astype(np.float32) / np.float32((1 << bits) - 1)


def read(path: str | os.PathLike, sh_into: SHInto | None = None) -> GaussianArrays:
    """Decode a compressed .ply (raises SplatFormatError naming the problem); the SH go to `sh_into` when given."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(_MAX_HEADER)
    elements, offset = _header(path, head)
    names = [e[0] for e in elements]
    if names[:2] != ["chunk", "vertex"] or len(names) > 3 or (len(names) == 3 and names[2] != "sh"):
        raise fail(path, f"has elements {names}; a compressed PLY has chunk, vertex and optionally sh")
    (_, chunks, chunk_dt), (_, n, vertex_dt) = elements[:2]
    missing = [p for p in _POSITION + _SCALE if p not in chunk_dt.names] + \
        [p for p in _PACKED if p not in vertex_dt.names]
    if missing:
        raise fail(path, f"is missing compressed-PLY properties: {', '.join(missing)}")
    if n == 0:
        raise fail(path, "contains no Gaussians (vertex count is 0)")
    if chunks != (n + CHUNK - 1) // CHUNK:
        raise fail(path, f"has {chunks:,} chunks for {n:,} Gaussians; expected {(n + CHUNK - 1) // CHUNK:,}")
    sh_dt = elements[2][2] if len(elements) == 3 else None
    if sh_dt is not None and elements[2][1] != n:
        raise fail(path, f"has {elements[2][1]:,} SH rows for {n:,} Gaussians")
    need = chunks * chunk_dt.itemsize + n * vertex_dt.itemsize + (n * sh_dt.itemsize if sh_dt is not None else 0)
    size = path.stat().st_size
    if size - offset < need:
        raise fail(path, f"is truncated: its header needs {need:,} bytes of data, {max(size - offset, 0):,} follow")
    with open(path, "rb") as fh:
        fh.seek(offset)
        chunk = np.fromfile(fh, dtype=chunk_dt, count=chunks)
        vertex = np.fromfile(fh, dtype=vertex_dt, count=n)
        sh = np.fromfile(fh, dtype=np.uint8, count=n * sh_dt.itemsize) if sh_dt is not None else None
    for name in chunk_dt.names:
        if not np.isfinite(chunk[name]).all():
            raise fail(path, f"chunk bound {name!r} is NaN or infinite")
    padded_rows = chunks * CHUNK

    def unpack(packed: np.ndarray, fields: tuple[tuple[int, int], ...], keys: tuple[str, ...] | None) -> np.ndarray:
        """Bit fields (shift, bits) of each row -> (N, 3) float32 in [0, 1], mapped into the row's chunk bounds
        `keys` (min x y z, max x y z) when given: decoded in place in a chunk-padded array, no stacked copies."""
        padded = np.empty((padded_rows, 3), np.float32)
        padded[n:] = 0.0
        field = np.empty(n, np.uint32)
        for j, (shift, bits) in enumerate(fields):
            np.right_shift(packed, np.uint32(shift), out=field)
            field &= np.uint32((1 << bits) - 1)
            column = padded[:n, j]
            column[...] = field
            column /= np.float32((1 << bits) - 1)
        if keys is not None:
            low = np.stack([chunk[k] for k in keys[:3]], axis=1).astype(np.float32)
            span = np.stack([chunk[k] for k in keys[3:]], axis=1).astype(np.float32) - low
            blocks = padded.reshape(chunks, CHUNK, 3)
            blocks *= span[:, None, :]
            blocks += low[:, None, :]
        return padded[:n]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sh") as pool:   # leaving waits for the SH
        sh_job = None
        if sh_dt is not None:   # the SH decode (a third of the work) runs beside the rest (numpy releases the GIL)
            rest_names = [f"f_rest_{i}" for i in range(len(sh_dt.names))]
            if list(sh_dt.names) != rest_names:
                raise fail(path, "the sh element's properties are not f_rest_0..f_rest_N")
            k = len(rest_names) // 3
            if 3 * k != len(rest_names):
                raise fail(path, f"{len(rest_names)} f_rest properties is not 3 channels of SH")
            sh_degree_for_coefficients(k, path)
            rest_cm = (sh_into or sh_block)(k, n)
            sh_job = pool.submit(decode_sh_rows, sh.reshape(n, 3, k).transpose(0, 2, 1), _SH_TABLE,   # channel-major
                                 rest_cm)
        fields = ((21, 11), (11, 10), (0, 11))
        with np.errstate(over="ignore", invalid="ignore"):   # absurd bounds overflow: caught just below
            means = unpack(vertex["packed_position"], fields, _POSITION)
            log_scales = unpack(vertex["packed_scale"], fields, _SCALE)
            color = vertex["packed_color"]
            bounds = _COLOR if all(k in chunk_dt.names for k in _COLOR) else None
            rgb = unpack(color, ((24, 8), (16, 8), (8, 8)), bounds)
        for name, values in (("position", means), ("scale", log_scales), ("colour", rgb)):
            if not np.isfinite(values).all():
                raise fail(path, f"chunk {name} bounds overflow float32 (damaged file)")
        rot = vertex["packed_rotation"]
        others = [(_unorm(rot, s, 10) - 0.5) * np.float32(_SQRT2) for s in (20, 10, 0)]
        quats = from_smallest_three(rot >> 30, others)
        opacity = _LOGIT_TABLE[color & 0xFF]
    rest = empty_rest(n)
    if sh_job is not None:
        sh_job.result()   # raises the decode's own failure
        if not sh_into:
            rest = rest_cm.transpose(1, 0, 2)
    # Everything else is finite by construction (bytes, unit quaternions): no NaN scan of the SH needed.
    return GaussianArrays(means=means, sh_dc=color_to_dc(rgb), sh_rest=rest,
                          opacity_logit=opacity, log_scales=log_scales, quats_wxyz=quats)


def _bounds(values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    chunks = (n + CHUNK - 1) // CHUNK
    padded = np.concatenate([values, np.repeat(values[-1:], chunks * CHUNK - n, axis=0)])
    blocks = padded.reshape(chunks, CHUNK, values.shape[1])
    return blocks.min(axis=1), blocks.max(axis=1)


def _quantize(values: np.ndarray, low: np.ndarray, high: np.ndarray, bits: tuple[int, ...]) -> list[np.ndarray]:
    which = np.arange(len(values)) // CHUNK
    span = (high - low)[which]
    t = np.where(span > 0, (values - low[which]) / np.where(span > 0, span, 1.0), 0.0)
    return [np.clip(np.round(t[:, j] * ((1 << b) - 1)), 0, (1 << b) - 1).astype(np.uint32) for j, b in enumerate(bits)]


def encode(g: GaussianArrays) -> bytes:
    n = g.count
    means = np.asarray(g.means, np.float64)
    scales = np.clip(np.asarray(g.log_scales, np.float64), -20.0, 20.0)
    rgb = dc_to_color(g.sh_dc)
    bounds = [_bounds(v, n) for v in (means, scales, rgb)]
    chunks = len(bounds[0][0])
    chunk = np.empty(chunks, dtype=[(k, "<f4") for k in _POSITION + _SCALE + _COLOR])
    for keys, (low, high) in zip((_POSITION, _SCALE, _COLOR), bounds):
        for j in range(3):
            chunk[keys[j]], chunk[keys[3 + j]] = low[:, j], high[:, j]
    # Quantise against the float32 bounds the file stores, so decoding lands on the nearest level.
    f32 = [(np.stack([chunk[k] for k in keys[:3]], 1).astype(np.float64),
            np.stack([chunk[k] for k in keys[3:]], 1).astype(np.float64)) for keys in (_POSITION, _SCALE, _COLOR)]
    px, py, pz = _quantize(means, *f32[0], (11, 10, 11))
    sx, sy, sz = _quantize(scales, *f32[1], (11, 10, 11))
    cr, cg, cb = _quantize(rgb, *f32[2], (8, 8, 8))
    alpha = np.clip(np.round(sigmoid(g.opacity_logit) * 255.0), 0, 255).astype(np.uint32)
    largest, others = smallest_three(g.quats_wxyz)
    q = [np.clip(np.round((others[:, j] / _SQRT2 + 0.5) * 1023.0), 0, 1023).astype(np.uint32) for j in range(3)]
    vertex = np.empty(n, dtype=[(k, "<u4") for k in _PACKED])
    vertex["packed_position"] = (px << 21) | (py << 11) | pz
    vertex["packed_rotation"] = (largest << 30) | (q[0] << 20) | (q[1] << 10) | q[2]
    vertex["packed_scale"] = (sx << 21) | (sy << 11) | sz
    vertex["packed_color"] = (cr << 24) | (cg << 16) | (cb << 8) | alpha
    k = g.sh_rest.shape[1]
    lines = ["ply", "format binary_little_endian 1.0", "comment written by Animate Gaussians",
             f"element chunk {chunks}"] + [f"property float {p}" for p in chunk.dtype.names] + \
        [f"element vertex {n}"] + [f"property uint {p}" for p in _PACKED]
    parts = [chunk.tobytes(), vertex.tobytes()]
    if k:
        lines += [f"element sh {n}"] + [f"property uchar f_rest_{i}" for i in range(3 * k)]
        channel_major = np.asarray(g.sh_rest, np.float64).transpose(0, 2, 1).reshape(n, 3 * k)
        parts.append(np.clip(np.trunc((channel_major / 8.0 + 0.5) * 256.0), 0, 255).astype(np.uint8).tobytes())
    header = ("\n".join(lines + ["end_header"]) + "\n").encode("ascii")
    return header + b"".join(parts)


def write(path: str | os.PathLike, g: GaussianArrays) -> None:
    Path(path).write_bytes(encode(g))
