"""The one protocol between the Blender add-on and the engine process: framed messages over a pipe.

numpy + stdlib only (both sides import it). A frame is

    magic b"AGF1" | header length (u32 LE) | body length (u64 LE) | header (UTF-8 JSON object) | body

The header names the message (`msg`), its request id (`id`), its fields, and a table of arrays, each
`{"name", "dtype", "shape", "offset"}` into the body, where the raw little-endian buffers sit at 64-byte-aligned
offsets. Arrays never travel as JSON lists. Message kinds and their fields:

    hello     engine → add-on, first frame: protocol, engine_version, python, pid, torch, torch_cuda, backend
              (the rasterizer and device it will render with, and a fallback warning: engine/backend_probe.py)
    request   add-on → engine: id, request (the request type), params, arrays
    progress  engine → add-on: id, fraction in [0, 1], stage (short text)
    result    engine → add-on: id, params, arrays (ends a request)
    error     engine → add-on: id (null for a frame-level error), error_type, message, hint (ends a request)
    cancel    add-on → engine: id; the request ends at its next step with error_type "CancelledError"
    shutdown  add-on → engine: finish the running request's step and exit 0 (EOF on stdin does the same)
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Mapping

import numpy as np

from engine import errors
from engine.errors import AnimateGaussiansError, EngineError, ProtocolError

PROTOCOL_VERSION = 1
MAGIC = b"AGF1"
_PREFIX = struct.Struct("<4sIQ")
PREFIX_BYTES = _PREFIX.size
ALIGN = 64
MAX_HEADER_BYTES = 16 << 20
MAX_BODY_BYTES = 16 << 30  # far above any request we make (a 1000-frame 1080p float mask stack is 8 GiB)
_READ_CHUNK = 64 << 20

# Wire dtypes: numpy's `dtype.str`, always little-endian; nothing with Python objects or structure.
WIRE_DTYPES = frozenset({"|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f2", "<f4", "<f8"})

MESSAGE_KINDS = ("hello", "request", "progress", "result", "error", "cancel", "shutdown")
_NUMBER = (int, float)
# kind -> (required header fields with their JSON types, whether `id` must be an int)
_SCHEMA: dict[str, tuple[dict[str, tuple[type, ...]], bool]] = {
    "hello": ({"protocol": (int,), "engine_version": (str,)}, False),
    "request": ({"request": (str,), "params": (dict,)}, True),
    "progress": ({"fraction": _NUMBER, "stage": (str,)}, True),
    "result": ({"params": (dict,)}, True),
    "error": ({"error_type": (str,), "message": (str,), "hint": (str,)}, False),
    "cancel": ({}, True),
    "shutdown": ({}, False),
}


@dataclass
class Message:
    """One frame: its kind, request id, JSON fields (besides msg/id/arrays) and named arrays."""

    kind: str
    id: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


class FrameError(ProtocolError):
    """A malformed frame. `in_sync` says whether the stream can still be read (the frame was consumed whole)."""

    def __init__(self, message: str, in_sync: bool, request_id: int | None = None) -> None:
        super().__init__(message)
        self.in_sync = in_sync
        self.request_id = request_id


# ---- constructors: the only way messages are made, so both sides agree on the fields -----------------------

def hello(engine_version: str, python: str, pid: int, torch: str | None, torch_cuda: str | None,
          backend: Mapping[str, Any] | None = None) -> Message:
    return Message("hello", None, {"protocol": PROTOCOL_VERSION, "engine_version": engine_version,
                                   "python": python, "pid": pid, "torch": torch, "torch_cuda": torch_cuda,
                                   "backend": dict(backend) if backend is not None else None})


def request(request_id: int, request_type: str, params: Mapping[str, Any] | None = None,
            arrays: Mapping[str, np.ndarray] | None = None) -> Message:
    return Message("request", request_id, {"request": request_type, "params": dict(params or {})},
                   dict(arrays or {}))


def progress(request_id: int, fraction: float, stage: str) -> Message:
    return Message("progress", request_id, {"fraction": min(1.0, max(0.0, float(fraction))), "stage": str(stage)})


def result(request_id: int, params: Mapping[str, Any] | None = None,
           arrays: Mapping[str, np.ndarray] | None = None) -> Message:
    return Message("result", request_id, {"params": dict(params or {})}, dict(arrays or {}))


def error(request_id: int | None, error_type: str, message: str, hint: str = "") -> Message:
    return Message("error", request_id, {"error_type": error_type, "message": message, "hint": hint})


def error_from_exception(request_id: int | None, exc: BaseException) -> Message:
    """Our own errors keep their type, message and hint; anything else should be wrapped by the caller."""
    if isinstance(exc, AnimateGaussiansError):
        return error(request_id, type(exc).__name__, str(exc), exc.hint)
    return error(request_id, "EngineError", f"{type(exc).__name__}: {exc}", EngineError.hint)


def exception_from_error(msg: Message) -> AnimateGaussiansError:
    """Rebuild the engine's error as the same engine.errors type on this side (EngineError if unknown)."""
    cls = getattr(errors, msg.fields.get("error_type", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, AnimateGaussiansError)):
        cls = EngineError
    return cls(msg.fields.get("message", ""), msg.fields.get("hint", ""))


def cancel(request_id: int) -> Message:
    return Message("cancel", request_id)


def shutdown() -> Message:
    return Message("shutdown")


# ---- encoding ---------------------------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        raise ProtocolError("numpy arrays go in the message's arrays, not in its JSON fields")
    raise ProtocolError(f"cannot send a {type(value).__name__} in a message header")


def _wire_array(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    dtype = array.dtype
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
        array = array.astype(dtype)
    if dtype.str not in WIRE_DTYPES:
        raise ProtocolError(f"array {name!r} has dtype {array.dtype}, which the protocol does not carry")
    # not np.ascontiguousarray: it turns 0-d arrays into 1-d ones
    return array if array.flags.c_contiguous else array.copy(order="C")


def _pad(n: int) -> int:
    return -n % ALIGN


def encode(msg: Message) -> list[bytes | memoryview]:
    """The frame as a list of buffers (prefix + header, then padding and array bytes), without copying arrays."""
    if msg.kind not in _SCHEMA:
        raise ProtocolError(f"unknown message kind {msg.kind!r}")
    table, buffers, offset = [], [], 0
    for name, value in msg.arrays.items():
        array = _wire_array(name, value)
        table.append({"name": str(name), "dtype": array.dtype.str, "shape": list(array.shape), "offset": offset})
        if array.nbytes:
            buffers.append(memoryview(array.reshape(-1).view(np.uint8)))
            offset += array.nbytes
            pad = _pad(offset)
            if pad:
                buffers.append(bytes(pad))
                offset += pad
    header = {"msg": msg.kind, "id": msg.id, **msg.fields, "arrays": table}
    try:
        header_bytes = json.dumps(header, default=_json_default, allow_nan=False,
                                  separators=(",", ":")).encode("utf-8")
    except ValueError as exc:  # NaN / inf in a field
        raise ProtocolError(f"message header is not valid JSON: {exc}") from None
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ProtocolError(f"message header of {len(header_bytes)} bytes exceeds {MAX_HEADER_BYTES}")
    return [_PREFIX.pack(MAGIC, len(header_bytes), offset) + header_bytes, *buffers]


def write_message(stream: BinaryIO, msg: Message) -> None:
    """Write one frame and flush (callers hold their own lock when several threads write)."""
    for buffer in encode(msg):
        stream.write(buffer)
    stream.flush()


# ---- decoding ---------------------------------------------------------------------------------------------

def _read_exact(stream: BinaryIO, n: int, what: str, allow_eof: bool = False) -> bytes | None:
    data = stream.read(n)
    if not data and allow_eof:
        return None
    if data is None:
        data = b""
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            raise FrameError(f"stream ended inside a frame's {what} ({len(data)} of {n} bytes)", in_sync=False)
        data += more
    return data


def _read_body(stream: BinaryIO, n: int) -> np.ndarray:
    # np.empty does not touch the pages, so a large declared body costs nothing until its bytes arrive.
    try:
        body = np.empty(n, np.uint8)
    except MemoryError:   # a system without overcommit refuses even untouched pages
        raise FrameError(f"cannot allocate a {n}-byte frame body", in_sync=False) from None
    view = memoryview(body)
    got = 0
    readinto = getattr(stream, "readinto", None)
    while got < n:
        want = min(_READ_CHUNK, n - got)
        if readinto is not None:
            k = readinto(view[got:got + want])
        else:
            chunk = stream.read(want)
            k = len(chunk) if chunk else 0
            view[got:got + k] = chunk
        if not k:
            raise FrameError(f"stream ended inside a frame's body ({got} of {n} bytes)", in_sync=False)
        got += k
    return body


def _decode_arrays(table: Any, body: np.ndarray, request_id: int | None) -> dict[str, np.ndarray]:
    def bad(text: str) -> FrameError:
        return FrameError(text, in_sync=True, request_id=request_id)

    if not isinstance(table, list):
        raise bad("the array table is not a list")
    arrays: dict[str, np.ndarray] = {}
    for entry in table:
        if not isinstance(entry, dict) or set(entry) != {"name", "dtype", "shape", "offset"}:
            raise bad(f"array entry {entry!r} is not {{name, dtype, shape, offset}}")
        name, dtype, shape, offset = entry["name"], entry["dtype"], entry["shape"], entry["offset"]
        if not isinstance(name, str) or name in arrays:
            raise bad(f"array name {name!r} is not a new string")
        if not isinstance(dtype, str) or dtype not in WIRE_DTYPES:
            raise bad(f"array {name!r} has dtype {dtype!r}; the protocol carries {sorted(WIRE_DTYPES)}")
        if (not isinstance(shape, list) or len(shape) > 32
                or not all(type(d) is int and 0 <= d <= MAX_BODY_BYTES for d in shape)):
            raise bad(f"array {name!r} has a bad shape {shape!r}")
        if type(offset) is not int or offset < 0 or offset % ALIGN:
            raise bad(f"array {name!r} has a bad offset {offset!r}")
        count = 1
        for d in shape:
            count *= d
        itemsize = np.dtype(dtype).itemsize
        if offset + count * itemsize > body.size:
            raise bad(f"array {name!r} ({shape} × {dtype}) at offset {offset} does not fit in the "
                      f"{body.size}-byte body")
        arrays[name] = np.frombuffer(body, np.dtype(dtype), count=count, offset=offset).reshape(tuple(shape))
    return arrays


def decode_header(header_bytes: bytes) -> tuple[dict[str, Any], int | None]:
    """Parse and validate a header; returns it with its request id (FrameError, in sync, if it is bad)."""
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"frame header is not UTF-8 JSON: {exc}", in_sync=True) from None
    if not isinstance(header, dict):
        raise FrameError("frame header is not a JSON object", in_sync=True)
    request_id = header.get("id")
    if type(request_id) is not int:
        request_id = None
    kind = header.get("msg")
    if not isinstance(kind, str) or kind not in _SCHEMA:
        raise FrameError(f"unknown message kind {kind!r}", in_sync=True, request_id=request_id)
    required, needs_id = _SCHEMA[kind]
    if needs_id and request_id is None:
        raise FrameError(f"{kind} message without an integer id", in_sync=True)
    if header.get("id") is not None and request_id is None:
        raise FrameError(f"{kind} message id {header.get('id')!r} is not an integer", in_sync=True)
    for name, types in required.items():
        value = header.get(name)
        if not isinstance(value, types) or isinstance(value, bool):
            raise FrameError(f"{kind} message field {name!r} is {value!r}, not {types[0].__name__}",
                             in_sync=True, request_id=request_id)
    return header, request_id


def read_message(stream: BinaryIO, max_body_bytes: int = MAX_BODY_BYTES) -> Message | None:
    """Read one frame; None on a clean end of stream (EOF between frames), FrameError if it is malformed."""
    prefix = _read_exact(stream, PREFIX_BYTES, "prefix", allow_eof=True)
    if prefix is None:
        return None
    magic, header_len, body_len = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise FrameError(f"bad frame magic {magic!r} (expected {MAGIC!r}): the stream is not this protocol",
                         in_sync=False)
    if header_len > MAX_HEADER_BYTES:
        raise FrameError(f"frame header of {header_len} bytes exceeds the {MAX_HEADER_BYTES}-byte cap",
                         in_sync=False)
    if body_len > max_body_bytes:
        raise FrameError(f"frame body of {body_len} bytes exceeds the {max_body_bytes}-byte cap", in_sync=False)
    header_bytes = _read_exact(stream, header_len, "header")
    body = _read_body(stream, body_len)
    header, request_id = decode_header(header_bytes)
    arrays = _decode_arrays(header.get("arrays", []), body, request_id)
    fields = {k: v for k, v in header.items() if k not in ("msg", "id", "arrays")}
    return Message(header["msg"], request_id, fields, arrays)
