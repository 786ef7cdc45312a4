"""PNG encoding on the device that rendered the frame: the GPU filters and deflates, the CPU writes bytes.

A frame becomes one 8-bit PNG with a single IDAT: every row Paeth-filtered, then deflated as one
dynamic-Huffman block of literals and byte runs (distance 1, what zlib's Z_RLE strategy finds). Filtering,
run finding, the symbol histogram, the Adler-32 and the bit packing are torch ops, so on a GPU the host only
builds the Huffman code from a 286-bin histogram, takes the CRC-32 and writes the file. Lossless: any PNG
decoder gives back the exact pixels (tests decode with Pillow and zlib).
"""

from __future__ import annotations

import functools
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SIGNATURE = b"\x89PNG\r\n\x1a\n"
PAETH = 4
MAX_RUN = 258                 # deflate's longest match
END_OF_BLOCK = 256
LITERAL_LENGTH_CODES = 286    # 0-255 literals, 256 end of block, 257-285 match lengths
ADLER_MOD = 65521
# The order in which a dynamic block sends the code lengths of its code-length code (RFC 1951, 3.2.7).
CODE_LENGTH_ORDER = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)
# Match-length codes 257..285: base length and extra bits (RFC 1951, 3.2.5).
LENGTH_BASE = (3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
               163, 195, 227, 258)
LENGTH_EXTRA = (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0)


def _length_tables() -> np.ndarray:
    """(3, MAX_RUN + 1) int64: for a match length, its symbol, its extra-bit count and its extra-bit value."""
    table = np.zeros((3, MAX_RUN + 1), np.int64)
    for code, (base, extra) in enumerate(zip(LENGTH_BASE, LENGTH_EXTRA)):
        last = code == len(LENGTH_BASE) - 1          # 258 has a code of its own (284 + 31 would be 258 too)
        for length in range(base, MAX_RUN + 1 if last else min(base + (1 << extra), MAX_RUN)):
            table[:, length] = (257 + code, extra, length - base)
    return table


LENGTH_TABLE = _length_tables()
HISTOGRAM_COPIES = 256        # symbols are counted into this many histograms, so few adds meet on one counter


@functools.lru_cache(maxsize=4)
def _length_table_on(device: torch.device) -> torch.Tensor:
    return torch.from_numpy(LENGTH_TABLE.astype(np.int32)).to(device)


@dataclass
class EncodedPng:
    """A frame's PNG before it is written: the deflate stream as a uint8 tensor on the frame's device, and
    what the host needs to wrap it (size, colour type, the Adler-32 of the filtered rows)."""

    width: int
    height: int
    channels: int
    deflate: torch.Tensor      # (B,) uint8, the complete deflate stream (one final dynamic block)
    adler32: int

    def file_parts(self, deflate: bytes | memoryview | np.ndarray) -> list[bytes | memoryview]:
        """The PNG file as a list of buffers (no copy of the compressed bytes), given them on the host."""
        body = memoryview(np.ascontiguousarray(deflate)).cast("B")
        zlib_header = b"\x78\x01"            # deflate, 32 KiB window, no dictionary
        adler = struct.pack(">I", self.adler32)
        crc = zlib.crc32(adler, zlib.crc32(body, zlib.crc32(b"IDAT" + zlib_header)))
        color_type = 6 if self.channels == 4 else 2
        ihdr = struct.pack(">IIBBBBB", self.width, self.height, 8, color_type, 0, 0, 0)
        return [SIGNATURE, _chunk(b"IHDR", ihdr),
                struct.pack(">I", len(zlib_header) + body.nbytes + 4) + b"IDAT" + zlib_header, body,
                adler + struct.pack(">I", crc), _chunk(b"IEND", b"")]

    def write(self, path: str | os.PathLike, deflate: bytes | memoryview | np.ndarray | None = None) -> Path:
        """Write the PNG file; `deflate` is the stream already copied to the host (else copied here)."""
        if deflate is None:
            deflate = self.deflate.cpu().numpy()
        path = Path(path)
        with open(path, "wb") as f:
            f.writelines(self.file_parts(deflate))
        return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def paeth_rows(image: torch.Tensor) -> torch.Tensor:
    """(H, W, C) uint8 -> (H, 1 + W·C) uint8: each row prefixed with filter type 4 and Paeth-filtered."""
    h, w, c = image.shape
    x = image.reshape(h, w * c).to(torch.int16)
    up = torch.cat([x.new_zeros(1, w * c), x[:-1]])
    left = torch.cat([x.new_zeros(h, c), x[:, :-c]], dim=1)
    up_left = torch.cat([x.new_zeros(h, c), up[:, :-c]], dim=1)
    pa, pb, pc = (up - up_left).abs(), (left - up_left).abs(), (left + up - 2 * up_left).abs()
    predicted = torch.where((pa <= pb) & (pa <= pc), left, torch.where(pb <= pc, up, up_left))
    out = torch.empty((h, 1 + w * c), dtype=torch.uint8, device=image.device)
    out[:, 0] = PAETH
    out[:, 1:] = ((x - predicted) & 0xFF).to(torch.uint8)
    return out


def huffman_lengths(counts: np.ndarray, limit: int) -> np.ndarray:
    """Code lengths (≤ limit bits) of a complete prefix code for symbol counts (Huffman's, when it fits):
    at least two symbols get a code, unused symbols 0. A tree deeper than `limit` is cut to it and made a
    complete code again as zlib does (trees.c gen_bitlen), then the lengths go to the symbols by frequency."""
    counts = np.asarray(counts, np.int64).copy()
    used = np.flatnonzero(counts)
    if len(used) < 2:
        counts[np.flatnonzero(counts == 0)[:2 - len(used)]] = 1
        used = np.flatnonzero(counts)
    lengths = _huffman_depths(counts)
    if lengths.max() <= limit:
        return lengths
    per_length = np.bincount(np.minimum(lengths[used], limit), minlength=limit + 1)
    # Kraft sum over 1: in units of 2^-limit a complete code sums to 2^limit. Each step moves a leaf of
    # the deepest level that has room one level down, with a cut leaf as its new brother: one unit less.
    excess = int((per_length[1:] << (limit - np.arange(1, limit + 1))).sum()) - (1 << limit)
    while excess > 0:
        bits = limit - 1
        while per_length[bits] == 0:
            bits -= 1
        per_length[bits] -= 1
        per_length[bits + 1] += 2
        per_length[limit] -= 1
        excess -= 1
    by_frequency = used[np.argsort(-counts[used], kind="stable")]
    lengths[by_frequency] = np.repeat(np.arange(limit + 1), per_length)
    return lengths


def _huffman_depths(counts: np.ndarray) -> np.ndarray:
    """Depth of every used symbol in a Huffman tree (two-queue construction: leaves sorted by count, merged
    nodes come out in order by themselves)."""
    used = np.flatnonzero(counts)
    leaves = used[np.argsort(counts[used], kind="stable")]
    n = len(leaves)
    weight = counts[leaves].tolist() + [0] * (n - 1)     # nodes 0..n-1 leaves, n.. merged in creation order
    parent = [0] * (2 * n - 1)
    next_leaf, next_merged = 0, n
    for node in range(n, 2 * n - 1):
        pair = []
        for _ in range(2):
            if next_leaf < n and (next_merged >= node or weight[next_leaf] <= weight[next_merged]):
                pair.append(next_leaf)
                next_leaf += 1
            else:
                pair.append(next_merged)
                next_merged += 1
        weight[node] = weight[pair[0]] + weight[pair[1]]
        parent[pair[0]] = parent[pair[1]] = node
    depth = [0] * (2 * n - 1)
    for node in range(2 * n - 3, -1, -1):    # parents have larger ids: from the root down
        depth[node] = depth[parent[node]] + 1
    out = np.zeros(len(counts), np.int64)
    out[leaves] = depth[:n]
    return out


# Bit reversal of every 15-bit value: a code of length L reversed is REVERSED_15[code] >> (15 - L).
REVERSED_15 = sum(((np.arange(1 << 15) >> bit) & 1) << (14 - bit) for bit in range(15)).astype(np.int64)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Deflate's canonical codes for these lengths (RFC 1951, 3.2.2), bit-reversed: deflate sends Huffman
    codes from their first bit, and everything here is packed least significant bit first."""
    lengths = np.asarray(lengths, np.int64)
    bl_count = np.bincount(lengths, minlength=16)
    bl_count[0] = 0
    first_code = np.zeros(16, np.int64)
    for bits in range(1, 16):
        first_code[bits] = (first_code[bits - 1] + bl_count[bits - 1]) << 1
    used = np.flatnonzero(lengths)
    ordered = used[np.argsort(lengths[used], kind="stable")]    # by length, then by symbol
    first_of_length = np.cumsum(bl_count) - bl_count             # rank of a length's first code in `ordered`
    length = lengths[ordered]
    code = first_code[length] + np.arange(len(ordered)) - first_of_length[length]
    codes = np.zeros(len(lengths), np.int64)
    codes[ordered] = REVERSED_15[code] >> (15 - length)
    return codes


def block_header(literal_lengths: np.ndarray, distance_lengths: np.ndarray) -> np.ndarray:
    """(K, 2) int64 (value, bits) pieces of a final dynamic block's header that sends these code lengths."""
    sequence = np.concatenate([literal_lengths, distance_lengths])
    cl_lengths = huffman_lengths(np.bincount(sequence, minlength=19), 7)
    cl_codes = canonical_codes(cl_lengths)
    ordered = cl_lengths[list(CODE_LENGTH_ORDER)]
    sent = max(4, int(np.flatnonzero(ordered).max()) + 1)
    fixed = [(1, 1), (2, 2), (len(literal_lengths) - 257, 5), (len(distance_lengths) - 1, 5), (sent - 4, 4)]
    return np.concatenate([np.array(fixed, np.int64),
                           np.stack([ordered[:sent], np.full(sent, 3)], axis=1),
                           np.stack([cl_codes[sequence], cl_lengths[sequence]], axis=1)])


def _symbols(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(symbol, run) per byte of `data` (int32): a literal, or for every run of a repeated byte (after its
    first) matches of distance 1, at most MAX_RUN long, whose first byte holds the length symbol and `run`
    the length, the rest LITERAL_LENGTH_CODES (silent); a leftover of one or two bytes stays literal."""
    n = data.numel()
    device = data.device
    repeat = torch.zeros(n, dtype=torch.bool, device=device)
    repeat[1:] = data[1:] == data[:-1]
    before = torch.zeros_like(repeat)
    before[1:] = repeat[:-1]
    after = torch.zeros_like(repeat)
    after[:-1] = repeat[1:]
    index = torch.arange(n, dtype=torch.int32, device=device)
    # Per repeated byte: where its run began and ends, with no host round trip for run boundaries. Runs are
    # numbered by a prefix sum and their first and last bytes scattered by number (cummax/cummin would do
    # it in one scan each, but CUDA runs those on one thread block for a 1-D tensor: ~30 ms a 1080p frame).
    first_of_run = repeat & ~before
    run_id = torch.cumsum(first_of_run, 0, dtype=torch.int32)          # 0 before the first run
    dump = torch.full_like(run_id, n + 1)                                # bytes that are no run boundary
    bounds = torch.zeros((2, n + 2), dtype=torch.int32, device=device)
    bounds[0].scatter_(0, torch.where(first_of_run, run_id, dump), index)
    bounds[1].scatter_(0, torch.where(repeat & ~after, run_id, dump), index)
    start, end = bounds[0].index_select(0, run_id), bounds[1].index_select(0, run_id)
    offset = index - start
    piece_start = offset - offset % MAX_RUN
    run = torch.clamp(end - start + 1 - piece_start, 0, MAX_RUN)
    in_match = repeat & (run >= 3)
    first = in_match & (offset == piece_start)
    symbol = torch.where(first, _length_table_on(device)[0].index_select(0, run), data.to(torch.int32))
    return torch.where(in_match & ~first, LITERAL_LENGTH_CODES, symbol), run


def _adler32(data: torch.Tensor) -> torch.Tensor:
    """(2,) int64: Adler-32's two sums of `data`, computed on its device."""
    n = data.numel()
    values = data.to(torch.int32)
    # Byte i is added into the second sum n − i times; weights and products stay within int32.
    weights = (n - torch.arange(n, dtype=torch.int64, device=data.device)) % ADLER_MOD
    a = (1 + values.sum(dtype=torch.int64)) % ADLER_MOD
    b = (n + (weights.to(torch.int32) * values).sum(dtype=torch.int64)) % ADLER_MOD
    return torch.stack([a, b])


def _pack_bits(values: torch.Tensor, bits: torch.Tensor, total_bits: int) -> torch.Tensor:
    """Concatenate the low `bits[i]` bits (≤ 32) of every `values[i]`, least significant first, into
    ceil(total_bits / 8) bytes."""
    device = values.device
    ends = torch.cumsum(bits, 0, dtype=torch.int64)
    starts = ends - bits
    words = (total_bits + 31) // 32 + 1
    scratch = 4096
    # A value of no bits (a byte inside a run) adds nothing; sending those to scattered scratch words keeps
    # the adds of a long run from all landing on one word.
    index = torch.where(bits > 0, starts >> 5,
                        words + (torch.arange(values.numel(), device=device) & (scratch - 1)))
    shifted = values.to(torch.int64) << (starts & 31)
    out = torch.zeros(words + scratch + 1, dtype=torch.int64, device=device)
    out.index_add_(0, index, shifted & 0xFFFFFFFF)     # the fields do not overlap, so adding is OR
    out.index_add_(0, index + 1, shifted >> 32)
    return out[:words].view(torch.uint8).view(words, 8)[:, :4].reshape(-1)[:(total_bits + 7) // 8]


def _device_half(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(symbol, run, stats) of an (H, W, C) uint8 image on its device: the filtered rows as deflate symbols
    (_symbols) and stats (288,) int64, the 286 symbol counts then Adler-32's two sums. No host round trip."""
    data = paeth_rows(image).reshape(-1)
    symbol, run = _symbols(data)
    # Spread over copies (torch.bincount would wait for the device to find the largest symbol).
    bins = LITERAL_LENGTH_CODES + 1
    copy = torch.arange(data.numel(), dtype=torch.int32, device=data.device) & (HISTOGRAM_COPIES - 1)
    counts = torch.zeros(HISTOGRAM_COPIES * bins, dtype=torch.int32, device=data.device)
    counts.index_add_(0, symbol + copy * bins, torch.ones_like(symbol))
    counts = counts.view(HISTOGRAM_COPIES, bins).sum(0, dtype=torch.int64)
    return symbol, run, torch.cat([counts[:LITERAL_LENGTH_CODES], _adler32(data)])


class CapturedHalf:
    """_device_half for one image shape as a CUDA graph: its ~70 small kernels become one launch, which the
    thread that also launches the next frame's render makes per frame instead of 70. Replayed on the current
    stream; the outputs are copied out of the graph's buffers, so frames in flight keep theirs."""

    def __init__(self, shape: tuple[int, int, int], device: torch.device) -> None:
        self.image = torch.zeros(shape, dtype=torch.uint8, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):        # the first runs make cub's and torch's lazy state before capture
            for _ in range(2):
                _device_half(self.image)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the engine's other threads (PNG writers, the warm-up) may use CUDA meanwhile.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.outputs = _device_half(self.image)

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.image.copy_(image)
        self.graph.replay()
        return tuple(t.clone() for t in self.outputs)


_captured: dict[tuple, CapturedHalf] = {}
CAPTURED_SHAPES = 2            # graphs kept (each holds its intermediates: ~0.2 GB at 1080p)
_capture_failed: str | None = None


def release_graphs() -> None:
    """Drop the captured graphs and give their memory back to the device (before a big model loads); the next
    job captures again."""
    if _captured:
        _captured.clear()
        torch.cuda.empty_cache()


def captured_half(image: torch.Tensor) -> CapturedHalf | str:
    """The captured device half for the image's shape (captured now if new), or why capturing failed (then the
    caller launches the kernels one by one and says so: the same bytes, more host work). A failure is not
    retried in this process."""
    global _capture_failed
    if _capture_failed is not None:
        return _capture_failed
    key = (tuple(image.shape), image.device)
    half = _captured.get(key)
    if half is None:
        try:
            half = CapturedHalf(tuple(image.shape), image.device)
        except Exception as exc:  # noqa: BLE001 - the eager kernels give the same bytes
            _capture_failed = f"{type(exc).__name__}: {exc}"
            return _capture_failed
        while len(_captured) >= CAPTURED_SHAPES:
            _captured.pop(next(iter(_captured)))
        _captured[key] = half
    return half


class PendingPng:
    """A frame whose PNG is half made: filtered and split into deflate symbols on its device, the symbol
    histogram on its way to the host. `finish()` builds the Huffman code and packs the bits.

    Starting frame i + 1 before finishing frame i lets the host build frame i's code while the GPU renders.
    """

    def __init__(self, image: torch.Tensor, captured: CapturedHalf | None = None) -> None:
        """`captured`: the device half captured for the image's shape (`captured_half`), replayed instead of
        launching its kernels one by one."""
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"expected an (H, W, 3|4) uint8 image, got {tuple(image.shape)} {image.dtype}")
        self.height, self.width, self.channels = (int(s) for s in image.shape)
        self.device = image.device
        if not (0 < self.width < 2 ** 31 and 0 < self.height < 2 ** 31):
            raise ValueError(f"a PNG cannot be {self.width}×{self.height}")
        self._symbol, self._run, stats = captured(image) if captured is not None else _device_half(image.contiguous())
        self._ready = None
        if stats.is_cuda:   # copied as soon as the GPU gets there; finish() waits for this copy only
            self._stats = torch.empty(stats.shape, dtype=stats.dtype, pin_memory=True)
            self._stats.copy_(stats, non_blocking=True)
            self._ready = torch.cuda.Event()
            self._ready.record()
        else:
            self._stats = stats

    def symbol_counts(self) -> np.ndarray:
        """(286,) how often each literal/length symbol occurs (waits for the device to count them)."""
        if self._ready is not None:
            self._ready.synchronize()
        return self._stats.numpy()[:LITERAL_LENGTH_CODES]

    def finish(self) -> EncodedPng:
        """The frame's deflate stream (packed on its device; no wait for it here)."""
        code = DeflateCode(self.symbol_counts())
        adler = (int(self._stats[-1]) << 16) | int(self._stats[-2])
        symbol, run = self._symbol, self._run
        device = symbol.device
        code_table = torch.from_numpy(np.stack([np.append(code.codes, 0), np.append(code.lengths, 0)])
                                      .astype(np.int32)).to(device)
        length_table = _length_table_on(device)
        is_length = (symbol > END_OF_BLOCK) & (symbol < LITERAL_LENGTH_CODES)
        bits_of_code = code_table[1].index_select(0, symbol)
        # A match sends its length code, the length's extra bits, then distance code 0 (one bit, 0).
        values = code_table[0].index_select(0, symbol) | torch.where(
            is_length, length_table[2].index_select(0, run) << bits_of_code, 0)
        bits = bits_of_code + torch.where(is_length, length_table[1].index_select(0, run) + 1, 0)
        head = torch.from_numpy(code.header.astype(np.int32)).to(device)
        tail = torch.tensor([code.end_of_block], dtype=torch.int32).to(device)
        deflate = _pack_bits(torch.cat([head[:, 0], values, tail[:, 0]]),
                             torch.cat([head[:, 1], bits, tail[:, 1]]), code.total_bits)
        self._symbol = self._run = None
        return EncodedPng(self.width, self.height, self.channels, deflate, adler)


class DeflateCode:
    """The host's part of a frame: from the symbol counts, the Huffman code (≤ 15 bits), the block header
    that sends it, and the stream's length in bits."""

    def __init__(self, symbol_counts: np.ndarray) -> None:
        counts = np.asarray(symbol_counts, np.int64)[:LITERAL_LENGTH_CODES].copy()
        counts[END_OF_BLOCK] += 1
        self.lengths = huffman_lengths(counts, 15)
        self.codes = canonical_codes(self.lengths)
        distance_lengths = np.array([1, 1])   # one distance (1) is used; two one-bit codes keep the code complete
        self.header = block_header(self.lengths, distance_lengths)
        self.end_of_block = (int(self.codes[END_OF_BLOCK]), int(self.lengths[END_OF_BLOCK]))
        lengths = np.arange(257, LITERAL_LENGTH_CODES)
        body = int((counts[:256] * self.lengths[:256]).sum()
                   + (counts[lengths] * (self.lengths[lengths] + np.asarray(LENGTH_EXTRA) + 1)).sum())
        self.total_bits = int(self.header[:, 1].sum()) + body + self.end_of_block[1]


def encode_png(image: torch.Tensor) -> EncodedPng:
    """Deflate an (H, W, 3) RGB or (H, W, 4) RGBA uint8 image on its device."""
    return PendingPng(image).finish()


def write_png(path: str | os.PathLike, image: np.ndarray | torch.Tensor, compress_level: int = 1) -> Path:
    """Write an (H, W, 3) RGB or (H, W, 4) RGBA image as an 8-bit PNG: a uint8 CUDA tensor through
    encode_png, a host image (uint8, or float in [0, 1]) through Pillow, whose C encoder is the faster one on
    a CPU (level 1: frames are written at video rate, where zlib's default costs several times the time for
    a few percent of size)."""
    if isinstance(image, torch.Tensor) and image.is_cuda:
        return encode_png(image).write(path)
    from PIL import Image

    from .video import to_uint8

    data = to_uint8(np.asarray(image.cpu() if isinstance(image, torch.Tensor) else image))
    if data.ndim != 3 or data.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3|4) image, got shape {data.shape}")
    path = Path(path)
    Image.fromarray(np.ascontiguousarray(data), "RGBA" if data.shape[2] == 4 else "RGB").save(
        path, format="PNG", compress_level=compress_level)
    return path
