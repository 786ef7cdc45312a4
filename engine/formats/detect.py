"""Which splat format a path holds, from its content (the extension only breaks the tie for headerless .splat)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputFileError, SplatFormatError
from .compressed_ply import is_compressed_ply

PLY = "ply"
COMPRESSED_PLY = "compressed_ply"
SPLAT = "splat"
SPZ = "spz"
SOG = "sog"
FORMATS = (PLY, COMPRESSED_PLY, SPLAT, SPZ, SOG)
LABELS = {PLY: "3DGS .ply", COMPRESSED_PLY: "compressed .ply", SPLAT: ".splat", SPZ: ".spz", SOG: "SOG"}
# What export writes, by the end of the file name (longest first: ".compressed.ply" before ".ply").
EXPORT_EXTENSIONS = ((".compressed.ply", COMPRESSED_PLY), (".ply", PLY), (".splat", SPLAT), (".spz", SPZ))
IMPORT_EXTENSIONS = (".ply", ".splat", ".spz", ".sog", ".json")


def detect(path: str | os.PathLike) -> str:
    """The format of the file or folder at `path` (one of FORMATS); raises InputFileError/SplatFormatError."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"file not found: {path}")
    if path.is_dir():
        if (path / "meta.json").is_file():
            return SOG
        raise InputFileError(f"{path} is a folder without a meta.json (not a SOG folder)",
                             hint="give a splat file, a SOG folder, or use the PLY sequence import for a folder "
                                  "of .ply frames")
    with open(path, "rb") as fh:
        head = fh.read(64 << 10)
    if head.startswith(b"ply"):
        return COMPRESSED_PLY if is_compressed_ply(head) else PLY
    if head[:2] == b"\x1f\x8b" or head[:4] == b"NGSP":
        return SPZ
    if head[:4] == b"PK\x03\x04":
        return SOG
    if path.name == "meta.json":
        return SOG
    if path.suffix.lower() == ".splat":
        return SPLAT
    if path.suffix.lower() == ".ply":
        return PLY   # the PLY reader says what is wrong with it
    raise SplatFormatError(f"{path.name} is not a splat file this add-on reads (not .ply, compressed .ply, "
                           ".splat, .spz or SOG)", hint="give one of those formats")


def export_format(path: str | os.PathLike) -> str:
    """The format export writes for a file name; raises InputFileError for an unknown extension."""
    name = Path(path).name.lower()
    for ending, fmt in EXPORT_EXTENSIONS:
        if name.endswith(ending):
            return fmt
    raise InputFileError(f"cannot tell the export format of {Path(path).name!r}",
                         hint="end the file name in .ply, .compressed.ply, .splat or .spz")
