"""A reader of uncompressed scanline OpenEXR files (what Blender writes with codec NONE, single- or multi-part),
enough for tests to read a render's passes back (channels such as "ViewLayer.Depth.Z"). numpy only."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_MAGIC = 20000630
_DTYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}
_TILED, _MULTIPART = 0x200, 0x1000


def _header(data: bytes, pos: int) -> tuple[dict[str, bytes], int]:
    header = {}
    while data[pos] != 0:
        end = data.index(b"\0", pos)
        name = data[pos:end].decode()
        end2 = data.index(b"\0", end + 1)
        (size,) = struct.unpack_from("<i", data, end2 + 1)
        header[name] = data[end2 + 5:end2 + 5 + size]
        pos = end2 + 5 + size
    return header, pos + 1


def _channels(raw: bytes) -> list[tuple[str, np.dtype]]:
    out, i = [], 0
    while raw[i] != 0:
        end = raw.index(b"\0", i)
        (pixel_type,) = struct.unpack_from("<i", raw, end + 1)
        out.append((raw[i:end].decode(), _DTYPES[pixel_type]))
        i = end + 1 + 16
    return out


def read_exr(path: str | Path) -> dict[str, np.ndarray]:
    """Every channel of every part as a (H, W) float32 array, rows from the top as EXR stores them; a part's
    channels are prefixed with its name and a dot unless the channel name already carries it."""
    data = Path(path).read_bytes()
    magic, version = struct.unpack_from("<ii", data, 0)
    if magic != _MAGIC:
        raise ValueError(f"{path} is not an OpenEXR file")
    if version & _TILED:
        raise ValueError("tiled EXR files are not supported")
    multipart = bool(version & _MULTIPART)
    pos, headers = 8, []
    while True:
        header, pos = _header(data, pos)
        headers.append(header)
        if not multipart or data[pos] == 0:
            break
    pos += 1 if multipart else 0
    out: dict[str, np.ndarray] = {}
    for header in headers:
        if header["compression"][0] != 0:
            raise ValueError("only uncompressed EXR files are supported (write them with exr_codec 'NONE')")
        x0, y0, x1, y1 = struct.unpack("<iiii", header["dataWindow"])
        width, height = x1 - x0 + 1, y1 - y0 + 1
        offsets = np.frombuffer(data, "<u8", count=height, offset=pos)
        pos += 8 * height
        prefix = header["name"].rstrip(b"\0").decode() + "." if "name" in header else ""
        for name, dtype in _channels(header["channels"]):
            key = name if name.startswith(prefix) else prefix + name
            out[key] = np.empty((height, width), np.float32)
        for row, offset in enumerate(offsets):
            at = int(offset) + (4 if multipart else 0) + 8      # [part], y, byte count
            for name, dtype in _channels(header["channels"]):
                key = name if name.startswith(prefix) else prefix + name
                out[key][row] = np.frombuffer(data, dtype, count=width, offset=at)
                at += width * dtype.itemsize
    return out
