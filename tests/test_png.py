"""The device PNG encoder: lossless for any decoder (Pillow, OpenCV, zlib), complete Huffman codes, and the
same bytes on a GPU as on the CPU."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from engine.render.png import (MAX_RUN, PendingPng, canonical_codes, encode_png, huffman_lengths, paeth_rows,
                               write_png)


def _png_bytes(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    encoded = encode_png(torch.from_numpy(np.ascontiguousarray(image)))
    out.writelines(encoded.file_parts(encoded.deflate.numpy()))
    return out.getvalue()


def _decoded(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The pixels as Pillow and as OpenCV read them (OpenCV's BGR(A) turned back to RGB(A))."""
    pil = np.asarray(Image.open(io.BytesIO(data)))
    cv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    cv = cv[..., [2, 1, 0, 3][:cv.shape[2]]]
    return pil, cv


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:37, 0:53]
    runs = np.repeat(rng.integers(0, 3, (23, 301, 1), dtype=np.uint8), 3, axis=2)   # runs of every length
    long_runs = np.zeros((9, 700, 4), np.uint8)
    long_runs[:, 300:] = 200
    long_runs[4, 517:519] = 7                       # leftovers of one and two bytes after full matches
    return {
        "noise rgb": rng.integers(0, 256, (31, 47, 3), dtype=np.uint8),
        "noise rgba": rng.integers(0, 256, (17, 29, 4), dtype=np.uint8),
        "gradient": np.dstack([xx * 4, yy * 6, (xx + yy) % 256]).astype(np.uint8),
        "black": np.zeros((40, 64, 4), np.uint8),
        "one pixel": np.array([[[1, 2, 3]]], np.uint8),
        "one row": rng.integers(0, 256, (1, 300, 3), dtype=np.uint8),
        "one column": rng.integers(0, 256, (300, 1, 4), dtype=np.uint8),
        "runs": runs,
        "long runs": long_runs,
    }


@pytest.mark.parametrize("name", list(_images()))
def test_png_decodes_to_the_same_pixels(name):
    image = _images()[name]
    data = _png_bytes(image)
    pil, cv = _decoded(data)
    assert pil.shape == image.shape and pil.dtype == np.uint8
    assert np.array_equal(pil, image)
    assert np.array_equal(cv, image)
    # The chunk layout is plain: IHDR (8-bit RGB/RGBA), one IDAT holding a zlib stream, IEND.
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, color) == (image.shape[1], image.shape[0], 8, 6 if image.shape[2] == 4 else 2)
    idat_len = struct.unpack(">I", data[33:37])[0]
    assert data[37:41] == b"IDAT"
    raw = zlib.decompress(data[41:41 + idat_len])   # zlib checks the Adler-32 made on the device
    assert raw == paeth_rows(torch.from_numpy(image)).numpy().tobytes()
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82"


def test_runs_compress():
    flat = np.full((270, 480, 3), 90, np.uint8)
    assert len(_png_bytes(flat)) < flat.nbytes / 200            # matches of up to MAX_RUN bytes
    assert MAX_RUN == 258
    noise = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert len(_png_bytes(noise)) < noise.nbytes * 1.01         # incompressible data barely grows


def test_huffman_lengths_give_complete_codes_within_the_limit():
    rng = np.random.default_rng(2)
    for trial in range(300):
        n = int(rng.choice([2, 19, 286]))
        counts = (rng.pareto(rng.uniform(0.3, 2.0), n) * rng.integers(1, 10 ** 6)).astype(np.int64)
        counts[rng.integers(0, n, rng.integers(0, n))] = 0
        limit = 7 if n == 19 else 15
        lengths = huffman_lengths(counts, limit)
        assert lengths.max() <= limit and (lengths > 0).sum() >= 2
        assert ((counts > 0) <= (lengths > 0)).all()                         # every used symbol has a code
        assert sum(2.0 ** -float(x) for x in lengths[lengths > 0]) == 1.0    # complete, as inflate requires
    # Fibonacci counts make the deepest Huffman tree: 20 symbols would need 19 bits.
    fib = [1, 1]
    while len(fib) < 20:
        fib.append(fib[-1] + fib[-2])
    lengths = huffman_lengths(np.array(fib), 15)
    assert lengths.max() == 15 and sum(2.0 ** -float(x) for x in lengths) == 1.0


def test_canonical_codes_follow_rfc1951():
    # RFC 1951 3.2.2's example: lengths (3, 3, 3, 3, 3, 2, 4, 4) give 010 011 100 101 110 00 1110 1111.
    codes = canonical_codes(np.array([3, 3, 3, 3, 3, 2, 4, 4]))
    expected = ["010", "011", "100", "101", "110", "00", "1110", "1111"]
    assert [int(e[::-1], 2) for e in expected] == codes.tolist()     # bit-reversed: packed first bit first


def test_write_png_on_the_cpu_goes_through_pillow(tmp_path):
    image = np.linspace(0, 1, 5 * 7 * 4).reshape(5, 7, 4)
    back = np.asarray(Image.open(write_png(tmp_path / "a.png", image)))
    assert back.shape == (5, 7, 4) and back[0, 0, 0] == 0 and back[-1, -1, -1] == 255
    with pytest.raises(ValueError, match="H, W, 3|4"):
        write_png(tmp_path / "b.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        encode_png(torch.zeros(4, 4, 3))


@pytest.mark.gpu
def test_gpu_encoding_gives_the_cpu_bytes(tmp_path):
    for name, image in _images().items():
        cpu = encode_png(torch.from_numpy(image))
        gpu = encode_png(torch.from_numpy(image).cuda())
        assert gpu.adler32 == cpu.adler32, name
        assert torch.equal(gpu.deflate.cpu(), cpu.deflate), name
    frame = torch.randint(0, 256, (1080, 1920, 3), dtype=torch.uint8, device="cuda")
    path = write_png(tmp_path / "frame.png", frame)
    assert np.array_equal(np.asarray(Image.open(path)), frame.cpu().numpy())


@pytest.mark.gpu
def test_captured_graph_gives_the_same_bytes_with_frames_in_flight():
    """The render job's PNGs start as a CUDA graph per shape (CapturedHalf): several frames started before
    any is finished (as the job keeps them in flight) keep their own symbols, and every byte equals the
    kernels launched one by one; a second shape gets its own graph."""
    from engine.render import png

    frames = [torch.randint(0, 256, (90, 160, 3), dtype=torch.uint8, device="cuda") for _ in range(4)]
    frames[1][:, :80] = 7                                     # runs, so the symbols differ from frame to frame
    frames.append(torch.randint(0, 4, (33, 47, 4), dtype=torch.uint8, device="cuda"))   # another shape
    pending = [PendingPng(f, captured=png.captured_half(f)) for f in frames]
    assert (tuple(frames[0].shape), frames[0].device) in png._captured and png._capture_failed is None
    for f, p in zip(frames, pending):
        got, want = p.finish(), encode_png(f)
        assert got.adler32 == want.adler32 and torch.equal(got.deflate, want.deflate)
    torch.cuda.empty_cache()                                  # what is left reserved: in use, graphs included
    before = torch.cuda.memory_reserved()
    png.release_graphs()                                      # as a video model's load does
    assert not png._captured and torch.cuda.memory_reserved() < before


@pytest.mark.gpu
def test_a_failed_capture_is_said_once_and_the_pngs_stay_exact(tmp_path, monkeypatch):
    """Where the CUDA graph cannot be captured, a job's frames are encoded with the kernels one by one (same
    files) and the request's warnings say so once (the panel and the batch report show them)."""
    from engine import fallbacks
    from engine.render import png
    from engine.render.frame_sink import FrameSink

    def refuse(*args, **kwargs):
        raise RuntimeError("capture refused for the test")

    monkeypatch.setattr(png, "CapturedHalf", refuse)
    monkeypatch.setattr(png, "_captured", {})
    monkeypatch.setattr(png, "_capture_failed", None)
    frames = [torch.randint(0, 256, (40, 64, 3), dtype=torch.uint8, device="cuda") for _ in range(3)]
    with fallbacks.collecting() as warnings:
        sink = FrameSink(None, workers=2, capture_png=True)
        for i, frame in enumerate(frames):
            sink.submit(tmp_path / f"{i}.png", frame, None)
        sink.finish()
    assert [w["code"] for w in warnings] == ["png_eager"]
    assert "capture refused for the test" in warnings[0]["message"]
    for i, frame in enumerate(frames):
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"{i}.png")), frame.cpu().numpy())
