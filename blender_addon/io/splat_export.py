"""Export a Gaussian object in the format its file name asks for: .ply (the imported layout, bit for bit when
unmoved), .compressed.ply, .splat or .spz (engine.formats encoders; quantisation per format in docs/formats.md).

Values are written in the target format's frame: the object's axis conversion says how its file frame maps to
Blender, the source format's frame (FORMAT_KEY) how that file frame maps to the INRIA one, so an .spz imported
object exports to .ply in RDF and a .ply exports to .spz in RUB.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy

from engine.errors import InputFileError
from engine.formats import PLY, write_scene
from engine.formats.detect import export_format
from engine.formats.sequence import frame_paths, is_sequence_target
from engine.ply import structured_to_gaussians, write_ply

from .gaussian_object import object_to_vertices, target_axis_conversion
from .ply_sequence import export_sequence


def object_vertices_for(obj: bpy.types.Object, fmt: str):
    """(structured vertices in the object's layout, Layout), in the frame of format `fmt`."""
    return object_to_vertices(obj, axis_conversion=target_axis_conversion(obj, fmt))


def export_gaussians(obj: bpy.types.Object, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write the object (edits and transform included) to `path` as `fmt` (default: from the extension)."""
    path = Path(path)
    fmt = fmt or export_format(path)
    if not path.parent.is_dir():
        raise InputFileError(f"cannot write {path}: folder {path.parent} does not exist")
    vertices, layout = object_vertices_for(obj, fmt)
    if fmt == PLY:
        write_ply(path, vertices, fmt=layout.fmt, comments=layout.comments)
        return path
    return write_scene(path, structured_to_gaussians(vertices), fmt)


def export_target(obj: bpy.types.Object, target: str | os.PathLike) -> list[Path]:
    """`--export`: a folder (ending in /) or a '####' name writes the scene's frame range as a PLY sequence
    (ply_sequence); anything else one file in the format of its extension. Returns the files written."""
    if is_sequence_target(target):
        frame_paths(target, [0])   # refuses a target that names no frame slot before any frame is evaluated
        return export_sequence(obj, target)
    return [export_gaussians(obj, target)]
