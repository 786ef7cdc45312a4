"""Niantic `.spz` (Scaniverse), versions 2 and 3: a gzip stream of a 16-byte header and column blocks.

Header (little endian): magic 0x5053474e ("NGSP"), version u32, point count u32, SH degree u8, fractional bits
u8, flags u8 (1: antialiased), reserved u8. Blocks, each for all points: positions 3×24-bit signed fixed point
(value / 2^fractional_bits), alpha u8 (sigmoid(opacity)·255), colour 3×u8 (f_dc·0.15·255 + 127.5), scale 3×u8
((log-scale + 10)·16), rotation (v2: x y z as i8-like (q+1)·127.5 with w ≥ 0; v3: smallest three, 2-bit index of
the largest of x y z w + 3×(sign + 9-bit magnitude of |q|·√2)), SH rest as u8 (coeff·128 + 128), coefficient-major
with RGB inner. The values are in the RUB frame (x right, y up, z back): the reader returns them as stored and
says so (`FRAME`); callers put the half turn about x into the object's axis conversion.
Quantisation we write (v3): positions 1/2^12 (fewer fractional bits for scenes beyond ±2048), colour ≈ 1/(0.15·255)
in f_dc, alpha 1/255, log-scale 1/16, rotation components √2/2/511, SH degree 1 in steps of 8/128, higher 16/128.
"""

from __future__ import annotations

import gzip
import os
import struct
import threading
from pathlib import Path

import numpy as np

from ..errors import SplatFormatError
from ..ply import GaussianArrays
from . import inflate
from .common import RUB, SHInto, decode_sh_rows, empty_rest, fail, from_smallest_three, logit, \
    normalized_quats, sh_block, sigmoid, smallest_three

MAGIC = 0x5053474E
VERSIONS = (2, 3)
WRITE_VERSION = 3
COLOR_SCALE = 0.15
FRAME = RUB
_HEADER = struct.Struct("<IIIBBBB")
_SQRT1_2 = np.float32(np.sqrt(0.5))
# Byte -> value tables of the reference decoder (one lookup instead of float arithmetic per value).
_BYTES = np.arange(256, dtype=np.float64)
_LOGIT_TABLE = logit(_BYTES / 255.0)
_COLOR_TABLE = ((_BYTES / 255.0 - 0.5) / COLOR_SCALE).astype(np.float32)
_SCALE_TABLE = (_BYTES / 16.0 - 10.0).astype(np.float32)
_SH_SCALE = 1.0 / 128.0   # SH byte b means (b − 128) / 128
_CODES10 = np.arange(1024)   # v3 rotation component: sign bit 9, magnitude bits 0-8
_ROTATION_TABLE = np.where(_CODES10 & 0x200, -1.0, 1.0).astype(np.float32) * \
    ((_CODES10 & 0x1FF).astype(np.float32) / np.float32(511.0) * _SQRT1_2)
_SH_ROWS_PER_CLAIM = 32768   # SH rows a decoding thread takes at a time


class _Inflater:
    """gzip inflate on a worker thread (zlib and ISA-L release the GIL; inflate.py picks one) into one buffer,
    handing out byte ranges as they arrive, so the decode of the first blocks and of the SH rows overlaps the
    inflate (the one step of an .spz import that cannot be split across cores). The buffer is sized from the gzip trailer (the length mod 2^32: only a guess for a
    damaged or > 4 GiB stream, so it grows when the stream says otherwise)."""

    _PIECE = 1 << 20
    _MAX_RATIO = 1032    # deflate cannot expand more than this: a trailer claiming more is not believed

    def __init__(self, path: Path, backend: str | None = None) -> None:
        self._backend = backend
        raw = path.read_bytes()
        if raw[:2] != b"\x1f\x8b":
            if raw[:4] == b"NGSP":
                raise fail(path, "is an .spz version 4 (zstd) file; versions 2 and 3 are supported")
            raise fail(path, "is not an .spz file (not gzip compressed)")
        self.path = path
        claimed = int.from_bytes(raw[-4:], "little") if len(raw) >= 18 else 0
        self._buffer = np.empty(min(claimed, len(raw) * self._MAX_RATIO), np.uint8)
        self._total = 0
        self._done = False
        self._error: str | None = None
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(raw,), daemon=True)
        self._thread.start()

    def _run(self, raw: bytes) -> None:
        inflater = inflate.gzip_decompressobj(self._backend)
        view = memoryview(raw)
        try:
            for start in range(0, len(raw), self._PIECE):
                self._add(inflater.decompress(view[start:start + self._PIECE]))
                if inflater.eof:
                    break
            self._add(inflater.flush())
            if not inflater.eof:
                self._error = "the gzip stream ends early"
        except inflate.errors(self._backend) as exc:
            self._error = str(exc)
        finally:
            with self._ready:
                self._done = True
                self._ready.notify_all()

    def _add(self, piece: bytes) -> None:
        if not piece:
            return
        end = self._total + len(piece)
        buffer = self._buffer
        if end > len(buffer):   # views handed out keep the old array, whose bytes are final
            buffer = np.empty(max(end, 2 * len(buffer)), np.uint8)
            buffer[:self._total] = self._buffer[:self._total]
        buffer[self._total:end] = np.frombuffer(piece, np.uint8)
        with self._ready:
            self._buffer = buffer
            self._total = end
            self._ready.notify_all()

    def available(self, at_least: int) -> int:
        """Wait until `at_least` bytes have been inflated or the stream has ended; the count inflated so far."""
        with self._ready:
            self._ready.wait_for(lambda: self._total >= at_least or self._done)
            return self._total

    def take(self, start: int, stop: int) -> np.ndarray:
        """Bytes [start, stop) of the inflated stream (uint8, a view), waiting for them; raises naming the file if
        the stream ends first."""
        if self.available(stop) < stop:
            raise fail(self.path, f"is truncated or damaged (gzip: {self._error})" if self._error else
                       "is truncated: its data ends before what its header declares")
        with self._ready:
            return self._buffer[start:stop]

    def join(self) -> None:
        self._thread.join()

    def finish(self) -> int:
        """Wait for the end of the stream; its total length (raises naming the file on a damaged stream)."""
        self._thread.join()
        if self._error:
            raise fail(self.path, f"is truncated or damaged (gzip: {self._error})")
        return self._total


class _SHRows:
    """The SH block's rows, decoded in spans by whichever thread claims the next one as soon as it has inflated:
    a worker from the start, the reading thread after the other blocks (on 2 cores: inflate and SH decode while
    the stream runs, then both threads decode; the SH decode is as much work as the inflate)."""

    def __init__(self, stream: _Inflater, start: int, n: int, k: int, allocate) -> None:
        self._stream, self._start, self._n, self._k, self._allocate = stream, start, n, k, allocate
        self.out = None   # allocated once the blocks before the SH have inflated: a header's count is believed
        self._lock = threading.Lock()
        self._next = 0
        self.short = False   # the stream ended before the rows the header declares
        self.error: BaseException | None = None

    def _claim(self) -> tuple[int, int] | None:
        with self._lock:
            if self.out is None and not self.short:   # only once its data before the SH is there
                if self._stream.available(self._start) < self._start:
                    self.short = True
                else:
                    self.out = self._allocate()
            if self._next >= self._n or self.short or self.error is not None:
                return None
            lo = self._next
            self._next = min(self._n, lo + _SH_ROWS_PER_CLAIM)
            return lo, self._next

    def run(self) -> None:
        row_bytes = 3 * self._k
        try:
            while (span := self._claim()) is not None:
                lo, hi = span
                try:
                    rows = self._stream.take(self._start + lo * row_bytes, self._start + hi * row_bytes)
                except SplatFormatError:
                    self.short = True
                    return
                decode_sh_rows(rows.reshape(hi - lo, self._k, 3), _SH_SCALE, self.out, lo)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, which raises it
            self.error = exc


def read(path: str | os.PathLike, sh_into: SHInto | None = None, inflater: str | None = None) -> GaussianArrays:
    """Decode an .spz file (raises SplatFormatError naming the problem); the SH go to `sh_into` when given.
    `inflater` names one of inflate.available() (default: the fastest there is)."""
    path = Path(path)
    stream = _Inflater(path, inflater)
    try:
        return _decode(path, stream, sh_into)
    finally:
        stream.join()   # never leave the worker running (an error above may come before the stream's end)


def _decode(path: Path, stream: _Inflater, sh_into: SHInto | None) -> GaussianArrays:
    try:
        head = stream.take(0, _HEADER.size)
    except SplatFormatError:
        stream.finish()   # a damaged stream says so; else the stream is just shorter than a header
        raise fail(path, "is truncated: no complete .spz header") from None
    magic, version, n, degree, frac_bits, _flags, _ = _HEADER.unpack(head.tobytes())
    if magic != MAGIC:
        raise fail(path, f"is not an .spz file (magic {magic:#x}, expected {MAGIC:#x})")
    if version not in VERSIONS:
        raise fail(path, f"is .spz version {version}; versions {VERSIONS[0]} and {VERSIONS[1]} are supported")
    if n == 0:
        raise fail(path, "contains no Gaussians (point count is 0)")
    if degree > 3:
        raise fail(path, f"declares SH degree {degree}; 0 to 3 are valid")
    if frac_bits > 24:
        raise fail(path, f"declares {frac_bits} fractional bits; at most 24 are valid")
    k = (degree + 1) ** 2 - 1
    rot_bytes = 4 if version >= 3 else 3
    sizes = [9 * n, n, 3 * n, 3 * n, rot_bytes * n, 3 * k * n]
    expected = _HEADER.size + sum(sizes)

    def mismatch(total: int):
        return fail(path, f"holds {total - _HEADER.size:,} bytes of data but its header ({n:,} points, SH degree "
                          f"{degree}, version {version}) needs {expected - _HEADER.size:,}: truncated or damaged")

    offsets = [int(o) for o in np.cumsum([_HEADER.size] + sizes)]

    def block(i: int, extra: int = 0) -> np.ndarray:
        """Block i's bytes (and `extra` bytes of the next), as soon as they are inflated."""
        try:
            return stream.take(offsets[i], offsets[i + 1] + extra)
        except SplatFormatError:
            raise mismatch(stream.finish()) from None

    # Each block is decoded as soon as it has inflated, while the rest of the stream still inflates; the SH rows
    # (most of the stream) are decoded by a worker as they arrive, and by this thread too once it is done here.
    sh_rows = _SHRows(stream, offsets[5], n, k, lambda: (sh_into or sh_block)(k, n))
    worker = threading.Thread(target=sh_rows.run, daemon=True) if k else None
    if worker is not None:
        worker.start()
    try:
        means = _positions(block(0, extra=1), n, frac_bits)   # (the alpha block follows: one byte past is there)
        opacity = _LOGIT_TABLE[block(1)]
        sh_dc = _COLOR_TABLE[block(2).reshape(n, 3)]
        log_scales = _SCALE_TABLE[block(3).reshape(n, 3)]
        quats = _quaternions(block(4), n, version)
        if k:
            sh_rows.run()
    finally:
        if worker is not None:
            worker.join()   # it ends with the stream at the latest
    if sh_rows.error is not None:
        raise sh_rows.error
    if sh_rows.short:
        raise mismatch(stream.finish())
    rest = sh_rows.out if k else (sh_into or sh_block)(k, n)
    total = stream.finish()
    if total != expected:
        raise mismatch(total)
    # Finite by construction (fixed point and bytes): no NaN scan needed.
    return GaussianArrays(means=means, sh_dc=sh_dc, sh_rest=empty_rest(n) if sh_into else rest.transpose(1, 0, 2),
                          opacity_logit=opacity, log_scales=log_scales, quats_wxyz=quats)


def _positions(data: np.ndarray, n: int, frac_bits: int) -> np.ndarray:
    """3n little-endian 24-bit signed fixed-point values (plus one byte after them) -> (n, 3) float32. Each value
    is read as the 4-byte word that starts at it (an overlapping view, no copy), its top byte (the next value's
    first) shifted out, and shifted back with the sign: three array passes instead of byte gathers."""
    words = np.ndarray((3 * n,), dtype="<u4", buffer=data, strides=(3,))
    fixed = np.left_shift(words, np.uint32(8)).view(np.int32)
    fixed >>= 8
    return np.multiply(fixed, np.float32(1.0 / (1 << frac_bits)), dtype=np.float32).reshape(n, 3)


def _quaternions(data: np.ndarray, n: int, version: int) -> np.ndarray:
    """The rotation block -> (n, 4) float32 w x y z (the file stores x y z w)."""
    if version >= 3:   # smallest three: 2-bit index of the largest, then (sign, 9-bit magnitude) × 3, last lowest
        packed = data.view("<u4")
        field = np.empty(n, np.uint32)
        others = []
        for j in range(3):
            np.right_shift(packed, np.uint32(10 * (2 - j)), out=field)
            field &= np.uint32(0x3FF)
            others.append(_ROTATION_TABLE[field])
        return from_smallest_three(packed >> np.uint32(30), others, order=(1, 2, 3, 0))
    xyz = data.reshape(n, 3).astype(np.float32) / 127.5 - 1.0   # version 2: x y z bytes, w >= 0 rebuilt
    quats = np.empty((n, 4), np.float32)
    quats[:, 1:] = xyz
    quats[:, 0] = np.sqrt(np.maximum(0.0, 1.0 - np.einsum("ij,ij->i", xyz, xyz)))
    return quats


def _fractional_bits(means: np.ndarray) -> int:
    """12 (the reference's choice) unless the scene reaches beyond ±2^11: then fewer, so nothing overflows."""
    extent = float(np.max(np.abs(means))) if means.size else 0.0
    bits = 12
    while bits > 0 and extent * (1 << bits) >= (1 << 23) - 1:
        bits -= 1
    return bits


def _quantize_sh(values: np.ndarray, bits: int) -> np.ndarray:
    bucket = 1 << (8 - bits)
    q = np.round(values.astype(np.float64) * 128.0 + 128.0).astype(np.int64)
    q = (q + bucket // 2) // bucket * bucket
    return np.clip(q, 0, 255).astype(np.uint8)


def encode(g: GaussianArrays) -> bytes:
    """The uncompressed version-3 stream (header + blocks)."""
    n = g.count
    degree = g.sh_degree
    frac_bits = _fractional_bits(g.means)
    fixed = np.round(np.asarray(g.means, np.float64) * (1 << frac_bits)).astype(np.int64)
    if np.abs(fixed).max(initial=0) >= 1 << 23:
        raise ValueError("positions too large for .spz's 24-bit fixed point")
    fixed &= 0xFFFFFF
    positions = np.stack([fixed & 0xFF, (fixed >> 8) & 0xFF, (fixed >> 16) & 0xFF], axis=-1).astype(np.uint8)
    alpha = np.clip(np.round(sigmoid(g.opacity_logit) * 255.0), 0, 255).astype(np.uint8)
    colors = np.clip(np.round(np.asarray(g.sh_dc, np.float64) * (COLOR_SCALE * 255.0) + 127.5), 0, 255).astype(np.uint8)
    scales = np.clip(np.round((np.asarray(g.log_scales, np.float64) + 10.0) * 16.0), 0, 255).astype(np.uint8)
    xyzw = normalized_quats(g.quats_wxyz)[:, [1, 2, 3, 0]]
    largest, others = smallest_three(xyzw)
    packed = largest.astype(np.uint32) << 30
    for j in range(3):
        mag = np.clip(np.round(np.abs(others[:, j]) / float(_SQRT1_2) * 511.0), 0, 511).astype(np.uint32)
        packed |= (((others[:, j] < 0).astype(np.uint32) << 9) | mag) << (10 * (2 - j))
    rest = g.sh_rest
    sh = np.empty(rest.shape, np.uint8)
    if rest.shape[1]:
        sh[:, :3] = _quantize_sh(rest[:, :3], 5)
        sh[:, 3:] = _quantize_sh(rest[:, 3:], 4)
    header = _HEADER.pack(MAGIC, WRITE_VERSION, n, degree, frac_bits, 0, 0)
    return b"".join([header, positions.tobytes(), alpha.tobytes(), colors.tobytes(), scales.tobytes(),
                     packed.astype("<u4").tobytes(), sh.tobytes()])


def write(path: str | os.PathLike, g: GaussianArrays) -> None:
    Path(path).write_bytes(gzip.compress(encode(g), compresslevel=6, mtime=0))


