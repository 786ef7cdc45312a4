"""What `make fuzz` feeds malformed input to: one list, FUZZ_TARGETS, of readers and decoders.

A target is a name, a few valid seed inputs, a mutator that damages one, and a parse function that must either
succeed or raise one of the target's clean error types. To fuzz a new reader (a format, a decoder), add one
FuzzTarget to FUZZ_TARGETS: `make fuzz` and tests/test_fuzz.py pick it up.
"""

from __future__ import annotations

import io
import json
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine import protocol  # noqa: E402
from engine.errors import AnimateGaussiansError  # noqa: E402

Mutator = Callable[[np.random.Generator, bytes], bytes]


@dataclass(frozen=True)
class FuzzTarget:
    """A reader under fuzz: `parse(data, workdir)` returns or raises one of `clean_errors`; anything else is a
    crash. `seeds()` gives valid inputs that `mutate(rng, seed)` damages."""

    name: str
    seeds: Callable[[], list[bytes]]
    mutate: Mutator
    parse: Callable[[bytes, Path], None]
    clean_errors: tuple[type[BaseException], ...] = (AnimateGaussiansError,)


# ---- generic byte damage ---------------------------------------------------------------------------------------

_WORDS = [b"9", b" ", b"\n", b"x", b"-", b"0", b"99999999999", b"-1", b"list ", b"double", b"uchar", b"\xff",
          b"\x00", b"nan", b"property float f_rest_0\n", b"element face 3\n"]


def mutate_bytes(rng: np.random.Generator, data: bytes, text_end: int | None = None) -> bytes:
    """1-4 of: flip a byte, truncate, insert random bytes, delete a run, write a word into the text part (a
    header), duplicate a slice, or replace everything with random bytes."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.choice(["flip", "truncate", "insert", "delete", "word", "duplicate", "random"],
                          p=[0.25, 0.15, 0.12, 0.12, 0.25, 0.06, 0.05])
        if kind == "random":
            return rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes()
        if not out:
            break
        pos = int(rng.integers(0, len(out)))
        if kind == "flip":
            out[pos] = int(rng.integers(0, 256))
        elif kind == "truncate":
            del out[pos:]
        elif kind == "insert":
            out[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        elif kind == "delete":
            del out[pos:pos + int(rng.integers(1, 17))]
        elif kind == "duplicate":
            stop = min(len(out), pos + int(rng.integers(1, 256)))
            out[pos:pos] = out[pos:stop]
        else:
            end = len(out) if text_end is None else min(len(out), text_end)
            pos = int(rng.integers(0, max(1, end)))
            out[pos:pos + int(rng.integers(0, 3))] = _WORDS[int(rng.integers(0, len(_WORDS)))]
    return bytes(out)


# ---- the PLY reader (both sides: the add-on's grouped read and the engine's read_gaussians) -------------------

def _ply_seeds() -> list[bytes]:
    import tempfile

    from engine.ply import gaussians_to_structured, write_ply
    from engine.synthetic_scene import make_random_gaussians

    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("binary_little_endian", "binary_big_endian"):
            for degree in (0, 1, 3):
                path = Path(tmp) / "seed.ply"
                write_ply(path, gaussians_to_structured(make_random_gaussians(6, sh_degree=degree, seed=degree)),
                          fmt=fmt)
                seeds.append(path.read_bytes())
    return seeds


def _mutate_ply(rng: np.random.Generator, data: bytes) -> bytes:
    end = data.find(b"end_header\n")
    return mutate_bytes(rng, data, text_end=None if end < 0 else end + len(b"end_header\n"))


def parse_ply(data: bytes, workdir: Path) -> None:
    from blender_addon.io.gaussian_layout import attribute_specs, read_dtypes
    from engine.ply import read_gaussians, read_groups, read_header, read_structured

    path = workdir / "fuzz.ply"
    path.write_bytes(data)
    header = read_header(path)
    specs = attribute_specs(header.properties)
    groups = read_groups(header, {s.name: s.properties for s in specs}, dtype=read_dtypes(specs))
    assert all(len(g) == header.vertex_count for g in groups.values())
    assert len(read_structured(header)) == header.vertex_count
    assert read_gaussians(path).count == header.vertex_count


# ---- the protocol's frame decoder --------------------------------------------------------------------------------

def _protocol_seeds() -> list[bytes]:
    def frame(msg: protocol.Message) -> bytes:
        return b"".join(bytes(b) for b in protocol.encode(msg))

    arrays = {"camera": np.eye(4, dtype=np.float32), "mask": np.ones((3, 5), bool), "ids": np.arange(7, dtype="<i8"),
              "scalar": np.array(1.5, "<f8"), "empty": np.zeros((0, 3), "<f2")}
    msgs = [protocol.hello("0.1.0", "3.11", 1, "2.0", None),
            protocol.request(1, "render", {"ply_path": "/x.ply", "frames": [1, 2], "resolution": [64, 48]}, arrays),
            protocol.progress(1, 0.5, "frame 1 of 2"),
            protocol.result(1, {"files": ["a.png"], "warnings": []}, {"rgb": np.zeros((2, 2, 3), np.uint8)}),
            protocol.error(1, "PlyFormatError", "bad file", "re-export it"),
            protocol.cancel(1), protocol.shutdown()]
    frames = [frame(m) for m in msgs]
    return frames + [b"".join(frames)]   # single frames and one stream of them all


def _split_frame(data: bytes) -> tuple[bytes, dict | None, bytes] | None:
    if len(data) < protocol.PREFIX_BYTES:
        return None
    _, header_len, _ = struct.unpack("<4sIQ", data[:protocol.PREFIX_BYTES])
    header_bytes = data[protocol.PREFIX_BYTES:protocol.PREFIX_BYTES + header_len]
    try:
        header = json.loads(header_bytes)
    except ValueError:
        header = None
    return data[:4], header, data[protocol.PREFIX_BYTES + header_len:]


def _pack(magic: bytes, header: dict, body: bytes, body_len: int | None = None) -> bytes:
    header_bytes = json.dumps(header).encode()
    return struct.pack("<4sIQ", magic, len(header_bytes), len(body) if body_len is None else body_len) \
        + header_bytes + body


_BAD_VALUES = [None, -1, 2 ** 63, 1.5, "x", [], {}, [1, "a"], [2 ** 40, 2 ** 40], [-3], True, "|O", "<c16", ">f4",
               "V8", [[1]], 63, 64 * 2 ** 40]


def _mutate_protocol(rng: np.random.Generator, data: bytes) -> bytes:
    """Frame-aware damage (lengths, huge sizes, JSON, dtypes, shapes, offsets, kinds, fields) or byte damage."""
    parts = _split_frame(data)
    kind = rng.choice(["bytes", "truncate", "header_len", "body_len", "huge_body", "json", "array_field",
                       "msg_kind", "field", "magic"])
    if parts is None or parts[1] is None or kind == "bytes":
        return mutate_bytes(rng, data, text_end=256)
    magic, header, body = parts
    if kind == "truncate":
        return data[:int(rng.integers(0, len(data)))]
    if kind == "header_len":
        lengths = [0, 1, 2 ** 32 - 1, protocol.MAX_HEADER_BYTES + 1, int(rng.integers(0, 4096))]
        return data[:4] + struct.pack("<I", lengths[int(rng.integers(0, len(lengths)))]) + data[8:]
    if kind in ("body_len", "huge_body"):
        big = [protocol.MAX_BODY_BYTES, protocol.MAX_BODY_BYTES + 1, 2 ** 64 - 1, 1 << 33, 1 << 30]
        n = big[int(rng.integers(0, len(big)))] if kind == "huge_body" else int(rng.integers(0, len(body) + 256))
        return data[:8] + struct.pack("<Q", n) + data[16:]
    if kind == "json":
        text = bytearray(json.dumps(header).encode())
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, len(text)))
            text[pos:pos + 1] = rng.choice([b"{", b"}", b'"', b",", b"\xff", b"NaN", b"[", b"1e999", b""])
        return struct.pack("<4sIQ", magic, len(text), len(body)) + bytes(text) + body
    if kind == "array_field" and header.get("arrays"):
        entry = header["arrays"][int(rng.integers(0, len(header["arrays"])))]
        key = rng.choice(["name", "dtype", "shape", "offset", "extra", "drop"])
        if key == "drop":
            entry.pop(rng.choice(list(entry)))
        else:
            entry[str(key)] = _BAD_VALUES[int(rng.integers(0, len(_BAD_VALUES)))]
        return _pack(magic, header, body)
    if kind == "msg_kind":
        header["msg"] = rng.choice(["nope", "", "REQUEST", None, 3, "result", "hello", "error"])
        return _pack(magic, header, body)
    if kind == "magic":
        return rng.integers(0, 256, 4, dtype=np.uint8).tobytes() + data[4:]
    field = rng.choice([k for k in header if k != "arrays"] + ["arrays"])
    header[str(field)] = _BAD_VALUES[int(rng.integers(0, len(_BAD_VALUES)))]
    return _pack(magic, header, body)


def parse_protocol(data: bytes, workdir: Path) -> None:
    stream = io.BytesIO(data)
    for _ in range(64):
        msg = protocol.read_message(stream)
        if msg is None:
            return
        assert msg.kind in protocol.MESSAGE_KINDS
        for array in msg.arrays.values():
            array.sum()   # the buffers must be readable where the table says they are


# ---- Dynamic 3D Gaussians params.npz (a zip of .npy arrays) -----------------------------------------------------

def _dynamic_seeds() -> list[bytes]:
    import tempfile

    from engine.dynamic import make_moving_sequence, write_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        path = write_dynamic(Path(tmp) / "params.npz", make_moving_sequence(8, timesteps=3, move_start=1, move_end=2))
        return [path.read_bytes()]


def _mutate_dynamic(rng: np.random.Generator, data: bytes) -> bytes:
    """Byte damage to the zip, or (more often) damage inside one member re-zipped with a valid CRC, so the .npy
    headers (dtype, shape) and the arrays' values reach the reader: a member dropped, added, or damaged."""
    import zipfile

    if rng.random() < 0.25:
        return mutate_bytes(rng, data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = {name: z.read(name) for name in z.namelist()}
    names = sorted(members)
    name = names[int(rng.integers(0, len(names)))]
    action = rng.choice(["damage", "damage", "drop", "extra", "values"])
    if action == "drop":
        del members[name]
    elif action == "extra":
        members["extra.npy"] = members[name]
    elif action == "values":   # a valid .npy with other values, shape or dtype
        arr = np.load(io.BytesIO(members[name]))
        pick = int(rng.integers(0, 4))
        nan = np.full(arr.shape, np.nan, np.float32)
        arr = ([nan, arr.reshape(-1), arr[..., :1], arr.astype(np.float64)][pick])
        buffer = io.BytesIO()
        np.save(buffer, arr)
        members[name] = buffer.getvalue()
    else:
        member = members[name]
        header_end = member.find(b"\n") + 1
        members[name] = mutate_bytes(rng, member, text_end=header_end or None)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for member_name, member in members.items():
            z.writestr(member_name, member)
    return out.getvalue()


def parse_dynamic(data: bytes, workdir: Path) -> None:
    from engine.dynamic import read_dynamic

    path = workdir / "params.npz"
    path.write_bytes(data)
    sequence = read_dynamic(path)
    assert sequence.means.shape[0] == sequence.timesteps


FUZZ_TARGETS: list[FuzzTarget] = [
    FuzzTarget("ply", _ply_seeds, _mutate_ply, parse_ply),
    FuzzTarget("dynamic_npz", _dynamic_seeds, _mutate_dynamic, parse_dynamic),
    FuzzTarget("protocol", _protocol_seeds, _mutate_protocol, parse_protocol),
]
