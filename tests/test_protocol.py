"""engine.protocol: every message round-trips with its arrays; malformed frames raise FrameError, never hang."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import protocol
from engine.errors import CameraError, EngineError, InputFileError, ProtocolError
from engine.protocol import FrameError


def roundtrip(msg: protocol.Message) -> protocol.Message:
    stream = io.BytesIO()
    protocol.write_message(stream, msg)
    stream.seek(0)
    out = protocol.read_message(stream)
    assert protocol.read_message(stream) is None  # exactly one frame, then a clean end
    return out


def frame(header: dict | bytes, body: bytes = b"", magic: bytes = protocol.MAGIC,
          header_len: int | None = None, body_len: int | None = None) -> io.BytesIO:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    prefix = struct.pack("<4sIQ", magic, len(raw) if header_len is None else header_len,
                         len(body) if body_len is None else body_len)
    return io.BytesIO(prefix + raw + body)


ARRAYS = {
    "bool_mask": np.array([True, False, True]),
    "u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
    "i8": np.array([-3, 4], dtype=np.int8),
    "u16": np.array([65535], dtype=np.uint16),
    "i16": np.array([[-1, 2]], dtype=np.int16),
    "u32": np.array([2**32 - 1], dtype=np.uint32),
    "i32": np.arange(-6, 6, dtype=np.int32).reshape(2, 3, 2),
    "u64": np.array([2**64 - 1], dtype=np.uint64),
    "i64": np.array([-(2**63)], dtype=np.int64),
    "f16": np.array([0.5, -2.0], dtype=np.float16),
    "f32": np.linspace(0, 1, 7, dtype=np.float32),
    "f64": np.array([[np.pi]]),
    "scalar_0d": np.array(3.25, dtype=np.float32),
    "empty": np.zeros((0, 4, 4), dtype=np.float32),
    "empty_1d": np.zeros(0, dtype=np.uint8),
    "nan_inf": np.array([np.nan, np.inf, -np.inf], dtype=np.float32),
}


def test_every_message_kind_round_trips():
    msgs = [
        protocol.hello("0.1.0", "3.11.7", 1234, "2.13.0+cpu", None),
        protocol.request(7, "render", {"width": 64, "frames": [1, 2], "background": [0.0, 0.5, 1.0]}, ARRAYS),
        protocol.progress(7, 0.25, "frame 1 of 4"),
        protocol.result(7, {"frames": ["/tmp/a.png"], "video": None}, ARRAYS),
        protocol.error(7, "CameraError", "no camera", "add one"),
        protocol.error(None, "ProtocolError", "bad frame", ""),
        protocol.cancel(7),
        protocol.shutdown(),
    ]
    assert {m.kind for m in msgs} == set(protocol.MESSAGE_KINDS)
    for msg in msgs:
        out = roundtrip(msg)
        assert (out.kind, out.id, out.fields) == (msg.kind, msg.id, msg.fields)
        assert list(out.arrays) == list(msg.arrays)
        for name, array in msg.arrays.items():
            got = out.arrays[name]
            assert got.dtype == array.dtype and got.shape == array.shape, name
            np.testing.assert_array_equal(got, array)
    assert roundtrip(msgs[0])["protocol"] == protocol.PROTOCOL_VERSION


def test_arrays_are_aligned_views_of_the_body_and_writable():
    out = roundtrip(protocol.result(1, {}, ARRAYS))
    for name, array in out.arrays.items():
        if array.size:
            assert array.ctypes.data % array.dtype.itemsize == 0, name
    out.arrays["f32"][0] = 9.0  # handlers may work in place
    assert out.arrays["f32"][0] == 9.0


def test_non_contiguous_big_endian_and_numpy_scalars_are_converted():
    base = np.arange(24, dtype=">f4").reshape(4, 6)
    out = roundtrip(protocol.request(1, "echo", {"n": np.int64(5), "x": np.float32(0.5)},
                                     {"strided": base[:, ::2].T}))
    np.testing.assert_array_equal(out.arrays["strided"], base[:, ::2].T)
    assert out.arrays["strided"].dtype == np.dtype("<f4")
    assert out["params"] == {"n": 5, "x": 0.5}


@pytest.mark.parametrize("bad", [
    lambda: protocol.request(1, "echo", {"a": np.zeros(2)}),          # arrays are not JSON
    lambda: protocol.request(1, "echo", {"a": float("nan")}),         # not valid JSON
    lambda: protocol.request(1, "echo", {"a": object()}),
    lambda: protocol.request(1, "echo", {}, {"s": np.array(["text"])}),
    lambda: protocol.request(1, "echo", {}, {"c": np.zeros(2, np.complex64)}),
    lambda: protocol.Message("gossip"),
])
def test_unsendable_messages_are_refused_at_encode(bad):
    with pytest.raises(ProtocolError):
        protocol.encode(bad())


def test_errors_cross_with_their_type_message_and_hint():
    exc = protocol.exception_from_error(roundtrip(protocol.error_from_exception(3, CameraError("no camera"))))
    assert type(exc) is CameraError and str(exc) == "no camera" and exc.hint == CameraError.hint
    exc = protocol.exception_from_error(protocol.error(3, "InputFileError", "gone", "look"))
    assert type(exc) is InputFileError and exc.hint == "look"
    exc = protocol.exception_from_error(protocol.error(3, "KeyError", "x", ""))  # not one of ours
    assert type(exc) is EngineError
    exc = protocol.exception_from_error(protocol.error(3, "annotations", "x", ""))  # a module attribute
    assert type(exc) is EngineError
    wrapped = protocol.error_from_exception(4, ValueError("boom"))
    assert wrapped["error_type"] == "EngineError" and "ValueError: boom" in wrapped["message"]


def test_eof_mid_frame_is_an_error_and_between_frames_is_none():
    stream = io.BytesIO()
    protocol.write_message(stream, protocol.result(1, {}, {"x": np.ones(100, np.float32)}))
    data = stream.getvalue()
    assert protocol.read_message(io.BytesIO(b"")) is None
    for cut in (3, protocol.PREFIX_BYTES + 5, len(data) - 1):
        with pytest.raises(FrameError) as info:
            protocol.read_message(io.BytesIO(data[:cut]))
        assert not info.value.in_sync


def _array_entry(**kw):
    entry = {"name": "a", "dtype": "<f4", "shape": [2], "offset": 0}
    entry.update(kw)
    return entry


@pytest.mark.parametrize("stream, in_sync, text", [
    (frame({"msg": "shutdown"}, magic=b"XXXX"), False, "magic"),
    (frame({"msg": "shutdown"}, header_len=protocol.MAX_HEADER_BYTES + 1), False, "header"),
    (frame({"msg": "shutdown"}, body_len=2**62), False, "cap"),
    (frame(b"{not json"), True, "JSON"),
    (frame(b"\xff\xfe"), True, "UTF-8"),
    (frame(b"[1, 2]"), True, "object"),
    (frame({"msg": "gossip", "id": 1}), True, "unknown message kind"),
    (frame({"msg": "request", "request": "echo", "params": {}}), True, "id"),
    (frame({"msg": "request", "id": True, "request": "echo", "params": {}}), True, "id"),
    (frame({"msg": "request", "id": 1.5, "request": "echo", "params": {}}), True, "id"),
    (frame({"msg": "request", "id": 1, "request": 5, "params": {}}), True, "request"),
    (frame({"msg": "progress", "id": 1, "fraction": "half", "stage": ""}), True, "fraction"),
    (frame({"msg": "error", "id": 1, "message": "x", "hint": ""}), True, "error_type"),
    (frame({"msg": "hello", "protocol": True, "engine_version": "1"}), True, "protocol"),
    (frame({"msg": "result", "id": 1, "params": {}, "arrays": {"a": 1}}), True, "table"),
    (frame({"msg": "result", "id": 1, "params": {}, "arrays": [_array_entry(dtype="|O")]}, bytes(8)), True,
     "dtype"),
    (frame({"msg": "result", "id": 1, "params": {}, "arrays": [_array_entry(dtype=">f4")]}, bytes(8)), True,
     "dtype"),
    (frame({"msg": "result", "id": 1, "params": {}, "arrays": [_array_entry(dtype="<c8")]}, bytes(8)), True,
     "dtype"),
    (frame({"msg": "result", "id": 1, "params": {}, "arrays": [_array_entry(shape=[3])]}, bytes(8)), True,
     "does not fit"),
    (frame({"msg": "result", "id": 1, "params": {}, "arrays": [_array_entry(shape=[2**30, 2**30, 2**30])]}, bytes(8)),
     True, "does not fit"),
    (frame({"msg": "result", "id": 1, "params": {}, "arrays": [_array_entry(shape=[-1])]}, bytes(8)), True,
     "shape"),
    (frame({"msg": "result", "id": 1, "params": {}, "arrays": [_array_entry(shape="2")]}, bytes(8)), True,
     "shape"),
    (frame({"msg": "result", "id": 1, "params": {}, "arrays": [_array_entry(offset=3)]}, bytes(72)), True,
     "offset"),
    (frame({"msg": "result", "id": 1, "params": {}, "arrays": [_array_entry(offset=-64)]}, bytes(72)), True,
     "offset"),
    (frame({"msg": "result", "id": 1, "params": {}, "arrays": [_array_entry(), _array_entry()]}, bytes(8)),
     True, "name"),
    (frame({"msg": "result", "id": 1, "params": {}, "arrays": [{"name": "a"}]}, bytes(8)), True, "entry"),
])
def test_malformed_frames_raise_frame_errors(stream, in_sync, text):
    with pytest.raises(FrameError) as info:
        protocol.read_message(stream)
    assert info.value.in_sync is in_sync
    assert text in str(info.value)


def test_a_frame_error_in_sync_leaves_the_next_frame_readable():
    bad = frame({"msg": "result", "id": 9, "params": {}, "arrays": [_array_entry(dtype="|O")]}, bytes(8))
    good = io.BytesIO()
    protocol.write_message(good, protocol.cancel(4))
    stream = io.BytesIO(bad.getvalue() + good.getvalue())
    with pytest.raises(FrameError) as info:
        protocol.read_message(stream)
    assert info.value.request_id == 9
    assert protocol.read_message(stream).id == 4


def _valid_frame_bytes() -> bytes:
    stream = io.BytesIO()
    protocol.write_message(stream, protocol.request(5, "echo", {"k": [1, 2]},
                                                    {"m": np.ones((3, 5), bool), "f": np.arange(4.0)}))
    return stream.getvalue()


VALID = _valid_frame_bytes()


def _decode_or_frame_error(data: bytes) -> None:
    try:
        while protocol.read_message(io.BytesIO(data), max_body_bytes=1 << 20) is not None:
            break
    except FrameError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_decoder(data):
    _decode_or_frame_error(data)
    _decode_or_frame_error(protocol.MAGIC + data)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, len(VALID)))
def test_mutated_frames_decode_or_raise_frame_error(flips, cut):
    data = bytearray(VALID)
    for index, value in flips:
        data[index] = value
    _decode_or_frame_error(bytes(data))
    _decode_or_frame_error(bytes(data[:cut]))


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["msg", "id", "request", "params", "arrays", "fraction", "stage",
                                        "error_type", "message", "hint", "protocol", "engine_version"]),
                       json_values | st.sampled_from(list(protocol.MESSAGE_KINDS))),
       st.binary(max_size=128))
def test_random_headers_decode_or_raise_frame_error(header, body):
    _decode_or_frame_error(frame(header, body).getvalue())
