"""Splat file formats besides the INRIA .ply: read any of them into GaussianArrays, write them back.

Each format is a small numpy-only module (the add-on and the engine share them). `read_scene` detects the
format from the content and returns the Gaussians as the file stores them plus the file's frame (3×3 to the INRIA
RDF frame; RUB for .spz), so callers can put the axis change into a transform instead of touching the values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..ply import GaussianArrays, read_gaussians, write_gaussians
from . import compressed_ply, sog, splat, spz
from .common import RDF, SHInto
from .detect import COMPRESSED_PLY, PLY, SOG, SPLAT, SPZ, detect, export_format

FRAMES = {PLY: RDF, COMPRESSED_PLY: RDF, SPLAT: RDF, SPZ: spz.FRAME, SOG: RDF}
_WRITERS: dict[str, Callable[[str | os.PathLike, GaussianArrays], None]] = {
    PLY: write_gaussians, COMPRESSED_PLY: compressed_ply.write, SPLAT: splat.write, SPZ: spz.write}


@dataclass
class Scene:
    """A decoded splat file: its Gaussians in the file's frame, which format it was, and that frame."""

    gaussians: GaussianArrays
    format: str
    frame: np.ndarray            # (3, 3) from the file's frame to the INRIA (RDF) frame

    def axis_to_rdf(self) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = self.frame
        return out


def read_scene(path: str | os.PathLike, decode_webp: sog.WebpDecoder | None = None,
               sh_into: SHInto | None = None) -> Scene:
    """Any supported splat file or SOG folder, validated completely (raises our errors naming the problem).
    `sh_into` (see common.SHInto) takes the SH of the formats that decode them in bulk (.spz, compressed .ply);
    their sh_rest is then empty. The other formats ignore it."""
    fmt = detect(path)
    if fmt == PLY:
        g = read_gaussians(path)
    elif fmt == SOG:
        g = sog.read(path, decode_webp or sog.pillow_webp)
    elif fmt == SPLAT:
        g = splat.read(path)
    else:
        g = {COMPRESSED_PLY: compressed_ply.read, SPZ: spz.read}[fmt](path, sh_into=sh_into)
    return Scene(g, fmt, FRAMES[fmt])


def write_scene(path: str | os.PathLike, g: GaussianArrays, fmt: str | None = None) -> Path:
    """Write `g` (already in the target format's frame) as `fmt` (default: from the extension), atomically."""
    path = Path(path)
    fmt = fmt or export_format(path)
    if fmt == PLY:
        write_gaussians(path, g)   # atomic itself
        return path
    partial = path.with_name(path.name + ".partial")
    try:
        _WRITERS[fmt](partial, g)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path


__all__ = ["Scene", "read_scene", "write_scene", "detect", "export_format", "FRAMES",
           "PLY", "COMPRESSED_PLY", "SPLAT", "SPZ", "SOG"]
