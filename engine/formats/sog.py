"""PlayCanvas SOG (meta.json version 2 + lossless WebP images), as a folder or a `.sog` zip, read only.

meta.json names the images and holds the decoding constants: `count`; `means` (mins/maxs of the log-transformed
positions sign(x)·ln(|x|+1), two images means_l/means_u with the low/high bytes of 16-bit x y z); `scales`
(a 256-entry codebook of log-scales, indices in r g b); `quats` (smallest three: r g b = (v·√2 + 1)/2·255 of the
three others in w x y z order, a = 252 + index of the largest); `sh0` (codebook of f_dc in r g b, a =
sigmoid(opacity)·255); optional `shN` (bands, palette count, codebook; centroids image of 64 palette entries a
row × K coefficients, labels image with the 16-bit palette index in r g). Pixel i (row-major) is Gaussian i.
Frame: RDF, as the .ply it came from. Quantisation: positions 1/65535 of the log range, the rest per codebook.

WebP decoding is the caller's: `read(path, decode_webp)` takes a function bytes -> (H, W, 4) uint8 top row
first. The engine passes Pillow's (`pillow_webp`); the add-on passes one built on bpy.data.images (Blender
decodes WebP itself, and Blender's Python has no Pillow), so this module stays numpy only and testable.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SplatFormatError
from ..ply import GaussianArrays
from .common import check_finite, fail, from_smallest_three, logit, sh_degree_for_coefficients

WebpDecoder = Callable[[bytes], np.ndarray]
_SQRT1_2 = np.float32(np.sqrt(0.5))


def pillow_webp(data: bytes) -> np.ndarray:
    from PIL import Image   # engine requirement (pillow); the add-on never calls this

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGBA"), dtype=np.uint8)


def _entries(path: Path) -> Callable[[str], bytes]:
    """A loader of the SOG's member files by name, from a folder, a meta.json beside its images, or a zip."""
    if path.is_dir():
        root = path
    elif path.name == "meta.json":
        root = path.parent
    else:
        try:
            archive = zipfile.ZipFile(path)
            names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError, NotImplementedError) as exc:   # a zip version or method we lack
            raise fail(path, f"is not a readable .sog zip ({exc})") from None

        def from_zip(name: str) -> bytes:
            if name not in names:
                raise fail(path, f"has no {name!r} inside")
            try:
                return archive.read(name)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
                raise fail(path, f"member {name!r} is damaged ({exc})") from None
        return from_zip

    def from_folder(name: str) -> bytes:
        member = root / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not member.is_file():
            raise fail(path, f"has no {name!r} beside its meta.json")
        return member.read_bytes()
    return from_folder


def _image(load: Callable[[str], bytes], meta: dict, key: str, index: int, count: int, decode: WebpDecoder,
           path: Path) -> np.ndarray:
    try:
        name = meta[key]["files"][index]
    except (KeyError, IndexError, TypeError):
        raise fail(path, f"meta.json has no {key}.files[{index}]") from None
    try:
        pixels = np.asarray(decode(load(name)))
    except SplatFormatError:
        raise
    except Exception as exc:   # whatever the decoder raises on damaged bytes: one clear error
        raise fail(path, f"image {name!r} cannot be decoded as WebP ({exc})") from None
    if pixels.ndim != 3 or pixels.shape[2] != 4 or pixels.dtype != np.uint8:
        raise fail(path, f"image {name!r} is not an RGBA 8-bit image")
    flat = pixels.reshape(-1, 4)
    if count and len(flat) < count:
        raise fail(path, f"image {name!r} has {len(flat):,} pixels for {count:,} Gaussians")
    return flat


def _floats(meta: dict, key: str, field: str, length: int, path: Path) -> np.ndarray:
    try:
        values = np.asarray(meta[key][field], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise fail(path, f"meta.json has no numeric {key}.{field}") from None
    if values.shape != (length,) or not np.isfinite(values).all():
        raise fail(path, f"meta.json {key}.{field} must be {length} finite numbers")
    return values


def read(path: str | os.PathLike, decode_webp: WebpDecoder = pillow_webp) -> GaussianArrays:
    path = Path(path)
    load = _entries(path)
    try:
        meta = json.loads(load("meta.json").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise fail(path, f"meta.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise fail(path, "meta.json is not a JSON object")
    if meta.get("version") != 2:
        raise fail(path, f"is SOG version {meta.get('version')!r}; version 2 is supported")
    n = meta.get("count")
    if not isinstance(n, int) or n <= 0:
        raise fail(path, f"meta.json count {n!r} is not a positive number of Gaussians")

    lo = _image(load, meta, "means", 0, n, decode_webp, path)[:n, :3].astype(np.uint32)
    hi = _image(load, meta, "means", 1, n, decode_webp, path)[:n, :3].astype(np.uint32)
    low, high = _floats(meta, "means", "mins", 3, path), _floats(meta, "means", "maxs", 3, path)
    t = (lo | (hi << 8)).astype(np.float64) / 65535.0
    log_means = low + t * (high - low)
    means = (np.sign(log_means) * np.expm1(np.abs(log_means))).astype(np.float32)

    scales_book = _floats(meta, "scales", "codebook", 256, path).astype(np.float32)
    log_scales = scales_book[_image(load, meta, "scales", 0, n, decode_webp, path)[:n, :3]]

    quat_pixels = _image(load, meta, "quats", 0, n, decode_webp, path)[:n]
    tag = quat_pixels[:, 3].astype(np.int64)
    if ((tag < 252) | (tag > 255)).any():
        raise fail(path, f"quats image has an invalid largest-component tag at Gaussian "
                         f"{int(np.flatnonzero((tag < 252) | (tag > 255))[0]):,}")
    others = (quat_pixels[:, :3].astype(np.float32) / 255.0 * 2.0 - 1.0) * _SQRT1_2
    quats = from_smallest_three(tag - 252, others)

    sh0_book = _floats(meta, "sh0", "codebook", 256, path).astype(np.float32)
    sh0_pixels = _image(load, meta, "sh0", 0, n, decode_webp, path)[:n]
    sh_dc = sh0_book[sh0_pixels[:, :3]]
    opacity = logit(sh0_pixels[:, 3].astype(np.float32) / 255.0)

    rest = np.zeros((n, 0, 3), np.float32)
    if "shN" in meta:
        sh_meta = meta["shN"]
        bands = sh_meta.get("bands") if isinstance(sh_meta, dict) else None
        if bands not in (1, 2, 3):
            raise fail(path, f"meta.json shN.bands {bands!r} is not 1, 2 or 3")
        k = (bands + 1) ** 2 - 1
        sh_degree_for_coefficients(k, path)
        palette = sh_meta.get("count")
        if not isinstance(palette, int) or palette <= 0:
            raise fail(path, f"meta.json shN.count {palette!r} is not a positive palette size")
        book = _floats(meta, "shN", "codebook", 256, path).astype(np.float32)
        centroids_img = _image(load, meta, "shN", 0, 0, decode_webp, path)
        width = 64 * k
        if len(centroids_img) % width or len(centroids_img) // width * 64 < palette:
            raise fail(path, f"shN centroids image does not hold {palette:,} palette entries of {k} coefficients")
        centroids = book[centroids_img[:, :3]].reshape(-1, k, 3)[:palette]   # entry e at pixels e·K..e·K+K−1
        labels_px = _image(load, meta, "shN", 1, n, decode_webp, path)[:n]
        labels = labels_px[:, 0].astype(np.int64) | (labels_px[:, 1].astype(np.int64) << 8)
        if (labels >= palette).any():
            raise fail(path, f"shN label {int(labels.max())} is outside the palette of {palette:,}")
        rest = np.ascontiguousarray(centroids[labels])
    g = GaussianArrays(means=means, sh_dc=np.ascontiguousarray(sh_dc), sh_rest=rest, opacity_logit=opacity,
                       log_scales=np.ascontiguousarray(log_scales), quats_wxyz=quats)
    check_finite(path, g)
    return g
