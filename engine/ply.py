"""The one reader and writer of 3D Gaussian Splatting .ply files (INRIA layout), numpy only.

Both the Blender add-on (import/export) and the engine (scene loading) use it. Reading is chunked so a
caller can pull attribute groups without holding a second full copy of the file in memory, and a big file's
rows are read in spans on several threads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import InputFileError, PlyFormatError

SH_C0 = 0.28209479177387814

# PLY scalar type names (both spellings) -> numpy type code without byte order.
_PLY_TYPES = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}
_NUMPY_TO_PLY = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint",
                 "f4": "float", "f8": "double"}

REQUIRED_PROPERTIES = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                       "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
_MAX_HEADER_BYTES = 1 << 20
_CHUNK_BYTES = 2 << 20      # fits in cache: gathering columns out of a chunk stays fast
_READ_THREADS = 4           # at most (the gain was measured with 2, the CPU machine's cores)
_ROWS_PER_THREAD = 100_000  # below this a thread costs more than it saves


@dataclass
class PlyHeader:
    """What the header of a 3DGS .ply says: vertex properties in file order, count, byte order."""

    path: Path
    fmt: str                                  # "binary_little_endian" or "binary_big_endian"
    vertex_count: int
    properties: list[tuple[str, str]]         # (name, numpy type code without byte order, e.g. "f4")
    data_offset: int                          # byte offset of the vertex block
    comments: list[str] = field(default_factory=list)

    @property
    def byte_order(self) -> str:
        return "<" if self.fmt == "binary_little_endian" else ">"

    @property
    def row_dtype(self) -> np.dtype:
        return np.dtype([(name, self.byte_order + code) for name, code in self.properties])

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.properties]

    @property
    def f_rest_names(self) -> list[str]:
        rest = [n for n in self.names if n.startswith("f_rest_")]
        # a damaged suffix sorts last instead of failing here: read_header then names the numbering problem
        return sorted(rest, key=lambda n: (0, int(n[7:]), "") if n[7:].isascii() and n[7:].isdigit()
                      else (1, 0, n))

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_rest_count(len(self.f_rest_names))


def sh_degree_from_rest_count(count: int) -> int:
    """SH degree from the number of f_rest properties (3 colour channels × ((d+1)² − 1))."""
    for degree in range(4):
        if count == 3 * ((degree + 1) ** 2 - 1):
            return degree
    raise PlyFormatError(f"{count} f_rest properties is not a valid SH layout (expected 0, 9, 24 or 45)")


def read_header(path: str | os.PathLike) -> PlyHeader:
    """Parse and validate the header; raise PlyFormatError/InputFileError naming the problem."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"file not found: {path}")
    if not path.is_file():
        raise InputFileError(f"not a file: {path}")
    with open(path, "rb") as fh:
        head = fh.read(_MAX_HEADER_BYTES)
    if not head.startswith(b"ply\n") and not head.startswith(b"ply\r\n"):
        raise PlyFormatError(f"{path.name} is not a PLY file (it does not start with 'ply')")
    end = head.find(b"end_header\n")
    if end < 0:
        raise PlyFormatError(f"{path.name}: the PLY header has no 'end_header' line (file truncated or damaged)")
    data_offset = end + len(b"end_header\n")
    try:
        lines = head[:end].decode("ascii").replace("\r", "").split("\n")
    except UnicodeDecodeError:
        raise PlyFormatError(f"{path.name}: the PLY header is not ASCII text") from None

    fmt = None
    comments: list[str] = []
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for line in lines[1:]:
        words = line.split()
        if not words:
            continue
        key = words[0]
        if key == "format":
            if len(words) < 2:
                raise PlyFormatError(f"{path.name}: malformed format line {line!r}")
            fmt = words[1]
        elif key in ("comment", "obj_info"):
            comments.append(line[len(key) + 1:] if len(line) > len(key) else "")
        elif key == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise PlyFormatError(f"{path.name}: malformed element line {line!r}")
            elements.append((words[1], int(words[2]), []))
        elif key == "property":
            if not elements:
                raise PlyFormatError(f"{path.name}: property before any element: {line!r}")
            if len(words) >= 2 and words[1] == "list":
                if elements[-1][0] == "vertex":
                    raise PlyFormatError(f"{path.name}: vertex property {words[-1]!r} is a list; "
                                         "3DGS files have scalar vertex properties only")
                elements[-1][2].append((words[-1], "list"))
                continue
            if len(words) != 3 or words[1] not in _PLY_TYPES:
                raise PlyFormatError(f"{path.name}: malformed or unknown property line {line!r}")
            elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        else:
            raise PlyFormatError(f"{path.name}: unknown header line {line!r}")

    if fmt is None:
        raise PlyFormatError(f"{path.name}: the PLY header has no format line")
    if fmt == "ascii":
        raise PlyFormatError(f"{path.name} is an ASCII PLY; 3DGS scenes are binary",
                             hint="re-save it as binary_little_endian (e.g. with plyfile or your trainer's export)")
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise PlyFormatError(f"{path.name}: unknown PLY format {fmt!r}")
    if not elements or elements[0][0] != "vertex":
        raise PlyFormatError(f"{path.name}: the first element must be 'vertex' (found "
                             f"{elements[0][0] if elements else 'none'})")
    _, count, props = elements[0]
    names = [n for n, _ in props]
    if len(set(names)) != len(names):
        raise PlyFormatError(f"{path.name}: duplicate vertex property names")
    missing = [n for n in REQUIRED_PROPERTIES if n not in names]
    if missing:
        if len(missing) >= len(REQUIRED_PROPERTIES) - 3:
            raise PlyFormatError(
                f"{path.name} is not a 3D Gaussian Splatting PLY: it has no Gaussian properties "
                f"({', '.join(missing[:4])}, ...)",
                hint="a mesh or point-cloud PLY imports with File > Import > Stanford PLY")
        raise PlyFormatError(f"{path.name}: missing 3DGS properties: {', '.join(missing)}")
    header = PlyHeader(path=path, fmt=fmt, vertex_count=count, properties=props,
                       data_offset=data_offset, comments=comments)
    rest = header.f_rest_names
    expected_rest = [f"f_rest_{i}" for i in range(len(rest))]
    if rest != expected_rest:
        raise PlyFormatError(f"{path.name}: f_rest properties are not numbered 0..{len(rest) - 1}")
    header.sh_degree  # validates the count
    if count == 0:
        raise PlyFormatError(f"{path.name} contains no Gaussians (vertex count is 0)")
    needed = data_offset + count * header.row_dtype.itemsize
    size = path.stat().st_size
    if size < needed:
        raise PlyFormatError(
            f"{path.name} is truncated: the header declares {count:,} Gaussians "
            f"({needed - data_offset:,} bytes) but only {max(size - data_offset, 0):,} bytes follow it",
            hint="the file was cut off while copying or saving; copy it again")
    return header


def _iter_chunks(header: PlyHeader, first: int = 0, stop: int | None = None) -> Iterable[tuple[int, np.ndarray]]:
    """Yield (first row, structured rows) over rows [first, stop) of the vertex block, about 2 MB at a time.

    The rows are read into one reused buffer (no fresh memory to fault in per chunk, and a block small enough
    to stay in cache while callers gather columns out of it): copy what you need before the next step.
    """
    dtype = header.row_dtype
    stop = header.vertex_count if stop is None else stop
    rows_per_chunk = max(1, _CHUNK_BYTES // dtype.itemsize)
    buffer = np.empty(max(0, min(rows_per_chunk, stop - first)), dtype=dtype)
    with open(header.path, "rb") as fh:
        fh.seek(header.data_offset + first * dtype.itemsize)
        start = first
        while start < stop:
            rows = min(rows_per_chunk, stop - start)
            chunk = buffer[:rows]
            got = fh.readinto(memoryview(chunk).cast("B"))
            if got != rows * dtype.itemsize:
                raise PlyFormatError(f"{header.path.name} is truncated at Gaussian {start + got // dtype.itemsize:,}")
            yield start, chunk
            start += rows


def _read_threads(count: int) -> int:
    """Threads to read `count` rows on: one per _ROWS_PER_THREAD rows, up to the cores there are and _READ_THREADS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(_READ_THREADS, cores, count // _ROWS_PER_THREAD))


def _over_row_spans(work: Callable[[int, int], None], count: int, threads: int) -> None:
    """work(first, stop) over rows [0, count), in `threads` consecutive spans, each on its own thread.

    File reads and numpy's copies release the GIL, so the spans overlap on as many cores. An error of the
    earliest span is raised, as a reading in one go would have met it first.
    """
    if threads <= 1:
        work(0, count)
        return
    bounds = [count * i // threads for i in range(threads + 1)]
    spans = list(zip(bounds[:-1], bounds[1:]))
    with ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="ply-read") as pool:
        later = [pool.submit(work, *span) for span in spans[1:]]
        try:
            work(*spans[0])
        finally:
            wait(later)
    for future in later:
        future.result()


def _check_finite(header: PlyHeader, name: str, values: np.ndarray, first_row: int) -> None:
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            index = first_row + int(np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0])
            raise PlyFormatError(f"{header.path.name}: property {name!r} of Gaussian {index:,} is NaN or "
                                 "infinite", hint="the trainer diverged; re-export from a good checkpoint")


def read_groups(header: PlyHeader, groups: Mapping[str, Sequence[str]],
                dtype: np.dtype | str | None | Mapping[str, np.dtype | str | None] = np.float32,
                check_finite: bool = True) -> dict[str, np.ndarray]:
    """Read named groups of vertex properties as contiguous (N, len(group)) arrays.

    Columns go straight from file chunks into their group arrays, so peak memory is about one copy of the
    file. `dtype=None` keeps each group in its file type (native byte order); all members of a group must
    then share a type. `dtype` may also map group names to their own dtype (missing keys: float32).
    Raises PlyFormatError on NaN/Inf when `check_finite`.
    """
    n = header.vertex_count
    types = dict(header.properties)
    out: dict[str, np.ndarray] = {}
    for key, names in groups.items():
        for name in names:
            if name not in types:
                raise PlyFormatError(f"{header.path.name}: missing property {name!r}")
        group_dtype = dtype.get(key, np.float32) if isinstance(dtype, Mapping) else dtype
        if group_dtype is None:
            codes = {types[name] for name in names}
            if len(codes) != 1:
                raise ValueError(f"group {key!r} mixes property types {sorted(codes)}")
            group_dtype = np.dtype(codes.pop())
        out[key] = np.empty((n, len(names)), dtype=np.dtype(group_dtype))
    codes = {code for _, code in header.properties}
    wanted = {name for names in groups.values() for name in names}
    # One isfinite over the whole chunk when every property is a requested float of one type (the INRIA case).
    whole_chunk_check = check_finite and len(codes) == 1 and next(iter(codes))[0] == "f" and \
        wanted == set(header.names)
    width = len(header.properties)
    whole_rows: dict[str, np.dtype] = {}   # group -> one void item per row covering its properties
    whole_offsets: dict[str, int] = {}
    for key, names in groups.items():
        offset = _side_by_side(header, names, out[key].dtype) if len(names) > 1 else None
        if offset is not None:
            whole_rows[key] = np.dtype((np.void, out[key].dtype.itemsize * len(names)))
            whole_offsets[key] = offset
    def fill(first: int, last: int) -> None:
        for start, chunk in _iter_chunks(header, first, last):
            stop = start + chunk.shape[0]
            if whole_chunk_check:
                flat = chunk.view(chunk.dtype[0]).reshape(-1, width)
                if not np.isfinite(flat).all():
                    bad_row, bad_col = np.argwhere(~np.isfinite(flat))[0]
                    raise PlyFormatError(
                        f"{header.path.name}: property {header.names[bad_col]!r} of Gaussian {start + bad_row:,} "
                        "is NaN or infinite", hint="the trainer diverged; re-export from a good checkpoint")
            elif check_finite:
                for name in header.names:
                    if name in wanted:
                        _check_finite(header, name, chunk[name], start)
            # Column by column: each copy is one long strided loop, far faster than a fancy-indexed gather; a
            # group whose properties sit side by side in the row in its own type (x y z, rot_0..3) moves as one
            # item per row.
            for key, names in groups.items():
                target = out[key]
                if key in whole_rows:
                    items = np.ndarray((chunk.shape[0],), whole_rows[key], chunk, whole_offsets[key],
                                       (chunk.strides[0],))
                    target.view(whole_rows[key]).reshape(-1)[start:stop] = items
                    continue
                for j, name in enumerate(names):
                    target[start:stop, j] = chunk[name]

    _over_row_spans(fill, n, _read_threads(n))
    return out


def _side_by_side(header: PlyHeader, names: Sequence[str], dtype: np.dtype) -> int | None:
    """The byte offset in a row of `names` when they are consecutive properties stored as native `dtype`, else
    None."""
    row = header.row_dtype
    first = header.names.index(names[0])
    if header.names[first:first + len(names)] != list(names):
        return None
    if any(row.fields[name][0] != dtype for name in names):
        return None
    return row.fields[names[0]][1]


def read_structured(header: PlyHeader, check_finite: bool = True) -> np.ndarray:
    """The whole vertex block as one structured array in file order and native byte order."""
    native = np.dtype([(name, code) for name, code in header.properties])
    out = np.empty(header.vertex_count, dtype=native)
    for start, chunk in _iter_chunks(header):
        if check_finite:
            for name, code in header.properties:
                _check_finite(header, name, chunk[name], start)
        out[start:start + chunk.shape[0]] = chunk
    return out


@dataclass
class GaussianArrays:
    """A 3DGS scene as plain float32 arrays in the file's (COLMAP) frame.

    `sh_rest` is (N, K, 3): K = (degree+1)² − 1 coefficients, RGB last (the file stores them channel-major).
    """

    means: np.ndarray       # (N, 3)
    sh_dc: np.ndarray       # (N, 3)
    sh_rest: np.ndarray     # (N, K, 3)
    opacity_logit: np.ndarray  # (N,)
    log_scales: np.ndarray  # (N, 3)
    quats_wxyz: np.ndarray  # (N, 4), as stored (not normalised)

    @property
    def count(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_rest_count(3 * self.sh_rest.shape[1])

    def colors(self) -> np.ndarray:
        """Base colour (degree-0 SH) in [0, 1]."""
        return np.clip(0.5 + SH_C0 * self.sh_dc, 0.0, 1.0)

    def opacities(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.opacity_logit))


def rest_names_channel_major(sh_degree: int) -> list[str]:
    k = (sh_degree + 1) ** 2 - 1
    return [f"f_rest_{i}" for i in range(3 * k)]


def read_gaussians(path: str | os.PathLike) -> GaussianArrays:
    """Read a 3DGS .ply into GaussianArrays (validating it)."""
    header = read_header(path)
    k = (header.sh_degree + 1) ** 2 - 1
    groups = {
        "means": ["x", "y", "z"],
        "sh_dc": ["f_dc_0", "f_dc_1", "f_dc_2"],
        "opacity": ["opacity"],
        "scales": ["scale_0", "scale_1", "scale_2"],
        "quats": ["rot_0", "rot_1", "rot_2", "rot_3"],
    }
    if k:
        groups["rest"] = rest_names_channel_major(header.sh_degree)
    cols = read_groups(header, groups)
    n = header.vertex_count
    rest = cols["rest"].reshape(n, 3, k).transpose(0, 2, 1).copy() if k else np.zeros((n, 0, 3), np.float32)
    return GaussianArrays(means=cols["means"], sh_dc=cols["sh_dc"], sh_rest=rest,
                          opacity_logit=cols["opacity"][:, 0].copy(), log_scales=cols["scales"],
                          quats_wxyz=cols["quats"])


def gaussians_to_structured(g: GaussianArrays, include_normals: bool = True) -> np.ndarray:
    """GaussianArrays as a structured array in the INRIA property order (normals zero)."""
    k = g.sh_rest.shape[1]
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if include_normals else []) + \
        ["f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(3 * k)] + \
        ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    arr = np.zeros(g.count, dtype=[(n, "<f4") for n in names])
    for i, axis in enumerate("xyz"):
        arr[axis] = g.means[:, i]
    for i in range(3):
        arr[f"f_dc_{i}"] = g.sh_dc[:, i]
        arr[f"scale_{i}"] = g.log_scales[:, i]
    for c in range(3):
        for j in range(k):
            arr[f"f_rest_{c * k + j}"] = g.sh_rest[:, j, c]
    arr["opacity"] = g.opacity_logit
    for i in range(4):
        arr[f"rot_{i}"] = g.quats_wxyz[:, i]
    return arr


def structured_to_gaussians(vertices: np.ndarray) -> GaussianArrays:
    """The reverse of gaussians_to_structured: an INRIA-named structured array (extra fields ignored)."""
    names = vertices.dtype.names or ()
    k = sum(1 for n in names if n.startswith("f_rest_")) // 3

    def cols(keys: Sequence[str]) -> np.ndarray:
        return np.stack([np.asarray(vertices[key], np.float32) for key in keys], axis=1)

    rest = cols([f"f_rest_{i}" for i in range(3 * k)]).reshape(-1, 3, k).transpose(0, 2, 1).copy() if k \
        else np.zeros((len(vertices), 0, 3), np.float32)
    return GaussianArrays(means=cols("xyz"), sh_dc=cols(["f_dc_0", "f_dc_1", "f_dc_2"]), sh_rest=rest,
                          opacity_logit=np.asarray(vertices["opacity"], np.float32),
                          log_scales=cols(["scale_0", "scale_1", "scale_2"]),
                          quats_wxyz=cols(["rot_0", "rot_1", "rot_2", "rot_3"]))


def write_ply(path: str | os.PathLike, vertices: np.ndarray, fmt: str = "binary_little_endian",
              comments: Sequence[str] = ()) -> None:
    """Write a structured vertex array as a binary PLY with plyfile (property order = field order).

    Writes to a temporary file first, so a failed export never leaves a half-written file at `path`.
    """
    from plyfile import PlyData, PlyElement  # bundled wheel in Blender; engine requirement

    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise ValueError(f"unsupported PLY format {fmt!r}")
    order = "<" if fmt == "binary_little_endian" else ">"
    for name in vertices.dtype.names or ():
        if vertices.dtype[name].kind not in "iuf" or vertices.dtype[name].str[1:] not in _NUMPY_TO_PLY:
            raise ValueError(f"property {name!r} has unsupported type {vertices.dtype[name]}")
    target = np.dtype([(name, order + vertices.dtype[name].str[1:]) for name in vertices.dtype.names])
    data = vertices.astype(target, copy=False)
    element = PlyElement.describe(data, "vertex")
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        PlyData([element], text=False, byte_order=order, comments=list(comments)).write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_gaussians(path: str | os.PathLike, g: GaussianArrays) -> None:
    write_ply(path, gaussians_to_structured(g))
