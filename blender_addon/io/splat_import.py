"""Import of every splat format into the one Gaussian object model (gaussian_object), and Blender's WebP decoder.

A non-PLY file is decoded with engine.formats (numpy) into the INRIA property layout (float32, no normals), so
the object, export, segmentation and the engine treat it like an imported .ply; its values stay in the file's
frame, and the format's frame (RUB for .spz) goes into the object's axis conversion. SOG's WebP images are
decoded by Blender itself (bpy.data.images): Blender's Python has no Pillow, and numba-based gsply is too heavy
to bundle.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

from engine.formats import PLY, SOG, read_scene
from engine.formats.detect import detect
from engine.ply import PlyHeader, read_groups, read_header, rest_names_channel_major, sh_degree_from_rest_count

from .gaussian_layout import AttributeSpec, attribute_specs, read_dtypes, source_hash

FORMAT_KEY = "gaussians_source_format"    # which format the object was imported from (engine.formats name)


@dataclass
class ParsedPly:
    """A validated file, all its attribute buffers in memory, nothing yet in Blender."""

    header: PlyHeader
    specs: list[AttributeSpec]
    groups: dict[str, np.ndarray]       # attribute name -> (N, len(properties)) in the read dtype
    source_hash: str
    display_extent: float               # robust scene size (file units), for the display's size clamp

    @property
    def count(self) -> int:
        return self.header.vertex_count


def parse_ply(path: str | os.PathLike) -> ParsedPly:
    """Read and validate a 3DGS .ply completely (raises PlyFormatError/InputFileError naming the problem)."""
    header = read_header(path)
    specs = attribute_specs(header.properties)
    groups = read_groups(header, {s.name: s.properties for s in specs}, dtype=read_dtypes(specs))
    return ParsedPly(header=header, specs=specs, groups=groups,
                     source_hash=source_hash(header.path, header.data_offset),
                     display_extent=display_extent(groups["position"]))


def display_extent(positions: np.ndarray) -> float:
    """A robust size of the scene (2nd to 98th percentile of a sample of the positions), for the display's clamp."""
    sample = positions[:: max(1, len(positions) // 100_000)]
    low, high = np.percentile(sample, [2.0, 98.0], axis=0)
    return float(np.max(high - low)) or 1.0


def blender_webp(data: bytes) -> np.ndarray:
    """WebP bytes -> (H, W, 4) uint8, top row first, the stored values (no colour management, straight alpha)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image.webp"
        path.write_bytes(data)
        image = bpy.data.images.load(str(path), check_existing=False)
        try:
            image.colorspace_settings.name = "Non-Color"
            image.alpha_mode = "CHANNEL_PACKED"
            width, height = image.size
            if width == 0 or height == 0 or image.channels != 4 and image.channels != 3:
                raise ValueError("Blender could not decode the image")
            pixels = np.empty(width * height * image.channels, np.float32)
            image.pixels.foreach_get(pixels)
        finally:
            bpy.data.images.remove(image)
    rgba = np.round(pixels.reshape(height, width, -1) * 255.0).astype(np.uint8)[::-1]
    if rgba.shape[2] == 3:
        rgba = np.concatenate([rgba, np.full((height, width, 1), 255, np.uint8)], axis=2)
    return np.ascontiguousarray(rgba)


def object_name(path: str | os.PathLike) -> str:
    """The object's name: the file stem without '.compressed', a SOG folder's name for its meta.json."""
    path = Path(path)
    if path.name == "meta.json" or path.is_dir():
        return (path.parent if path.name == "meta.json" else path).resolve().name
    name = path.name
    for ending in (".compressed.ply", ".ply", ".splat", ".spz", ".sog"):
        if name.lower().endswith(ending):
            return name[:-len(ending)] or name
    return path.stem


def _hash(path: Path) -> str:
    if path.is_dir():   # a SOG folder: its meta.json names and sizes every image
        path = path / "meta.json"
    stat = path.stat()
    digest = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def parse_any(path: str | os.PathLike):
    """(ParsedPly, format name, 4×4 file frame -> INRIA frame) for any supported file, validated completely."""
    path = Path(path)
    fmt = detect(path)
    if fmt == PLY:
        return parse_ply(path), PLY, np.eye(4)
    coefficients: list[np.ndarray] = []   # the SH of .spz / compressed .ply, one array per coefficient

    def sh_into(k: int, n: int) -> list[np.ndarray]:
        coefficients.extend(np.empty((n, 3), np.float32) for _ in range(k))
        return coefficients

    scene = read_scene(path, decode_webp=blender_webp if fmt == SOG else None, sh_into=sh_into)
    g = scene.gaussians
    if not coefficients:
        coefficients = [g.sh_rest[:, j, :] for j in range(g.sh_rest.shape[1])]
    degree = sh_degree_from_rest_count(3 * len(coefficients))
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", *rest_names_channel_major(degree), "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    header = PlyHeader(path=path, fmt="binary_little_endian", vertex_count=g.count,
                       properties=[(n, "f4") for n in names], data_offset=0,
                       comments=[f"imported from {fmt} by Animate Gaussians"])
    specs = attribute_specs(header.properties)
    groups = {"position": g.means, "f_dc": g.sh_dc, "opacity": g.opacity_logit.reshape(-1, 1),
              "scale": g.log_scales, "rotation": g.quats_wxyz}
    for k, values in enumerate(coefficients, start=1):
        groups[f"sh_{k}"] = values
    del coefficients[:]   # the groups hold the only references: build_object frees each after its copy
    parsed = ParsedPly(header=header, specs=specs, groups=groups, source_hash=_hash(path),
                       display_extent=display_extent(g.means))
    return parsed, fmt, scene.axis_to_rdf()


__all__ = ["FORMAT_KEY", "ParsedPly", "blender_webp", "display_extent", "object_name", "parse_any", "parse_ply"]
