"""PLY sequences in Blender: import a folder or numbered pattern of .ply frames as one animated Gaussian object,
and export any animated Gaussian object (keyframes, a Gaussians rig, a dynamic sequence) as one .ply per frame.

Import reuses the Dynamic 3D Gaussians path (dynamic_import): the frames become a params.npz in the engine cache
(per-frame positions, rotations, colours), the first frame's file is the object's base (every attribute, SH
included), and the playback modifier plays it. Export evaluates the scene frame by frame and writes what the
engine would render: the object's transform, the rig's linear blend skinning (means blended, orientation, scale
and SH following the heaviest handle, as engine/render/skinning.py) and the dynamic timestep's positions and
rotations.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np

from engine.dynamic import write_dynamic
from engine.formats.sequence import frame_paths, read_sequence
from engine.formats import PLY
from engine.ply import write_ply
from engine.scene_cache import cache_dir

from .. import notices
from ..animate import rig
from . import dynamic_import
from .gaussian_layout import attribute_specs, from_buffer, relative_transform
from .gaussian_object import (_read_attribute, apply_transform, file_to_world, object_layout, object_to_vertices,
                              target_axis_conversion)

SEQUENCE_KEY = "gaussians_ply_sequence"     # the pattern or folder a sequence object was imported from


def import_sequence(spec: str | os.PathLike, context: bpy.types.Context | None = None,
                    frame_start: int | None = None, points_only: bool | None = None) -> tuple[bpy.types.Object, list[str]]:
    """Import the frames as one animated object; returns it and notes on what the timeline does not keep."""
    import hashlib

    context = context or bpy.context
    seq, files, notes = read_sequence(spec)     # validates every frame before anything is made
    key = hashlib.sha1("\n".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
                       .encode()).hexdigest()[:16]
    npz = cache_dir() / "sequences" / f"{files[0].stem}_{key}.npz"
    if not npz.exists():
        npz.parent.mkdir(parents=True, exist_ok=True)
        partial = npz.with_name(npz.name + ".partial")
        write_dynamic(partial, seq)
        os.replace(partial, npz)
    obj = dynamic_import.import_dynamic(npz, context, frame_start=frame_start, points_only=points_only,
                                        base_ply=files[0])
    spec_path = Path(spec)
    obj.name = obj.data.name = (spec_path.name if spec_path.is_dir() else files[0].parent.name or files[0].stem)
    obj[SEQUENCE_KEY] = str(spec)
    for note in notes:   # never silent: the panel, the operator and the batch report show it
        notices.add("import", "sequence_first_frame", note)
    return obj, notes


def _skin(columns: dict[str, np.ndarray], layout, handles: np.ndarray, weights: np.ndarray,
          transforms: np.ndarray) -> None:
    """Linear blend skinning of file-frame columns by per-handle file-frame transforms (K, 4, 4), in place."""
    means = np.stack([columns[c] for c in "xyz"], axis=1).astype(np.float64)
    homogeneous = np.concatenate([means, np.ones((len(means), 1))], axis=1)
    blended = np.zeros_like(means)
    for m in range(handles.shape[1]):
        moved = np.einsum("nij,nj->ni", transforms[handles[:, m]], homogeneous)[:, :3]
        blended += weights[:, m:m + 1] * moved
    heaviest = handles[np.arange(len(handles)), np.argmax(weights, axis=1)]
    for k in np.unique(heaviest):
        rows = heaviest == k
        part = {name: values[rows] for name, values in columns.items()}
        apply_transform(part, layout, transforms[k])
        for name, values in part.items():
            columns[name][rows] = values
    total = weights.sum(axis=1, keepdims=True)
    blended = np.where(total > 0, blended / np.where(total > 0, total, 1.0), means)
    for i, c in enumerate("xyz"):
        columns[c] = blended[:, i].astype(columns[c].dtype)


def frame_vertices(obj: bpy.types.Object, depsgraph) -> np.ndarray:
    """The object's Gaussians at the current scene frame, as a structured array in its layout and file frame."""
    layout = object_layout(obj)
    world = file_to_world(obj, obj.evaluated_get(depsgraph).matrix_world)
    raw, _ = object_to_vertices(obj, axis_conversion=world)    # identity transform: the file-frame values
    columns = {name: np.array(raw[name]) for name in raw.dtype.names}
    if dynamic_import.is_dynamic(obj):
        t = dynamic_import.timestep_for_frame(obj, bpy.context.scene.frame_current)
        mesh, n = obj.data, len(obj.data.vertices)
        for spec in attribute_specs(layout.properties):
            if spec.name in ("position", "rotation"):
                prefix = dynamic_import.POSITION_PREFIX if spec.name == "position" else dynamic_import.ROTATION_PREFIX
                named = type(spec)(f"{prefix}{t}", spec.data_type, spec.properties, spec.encoding)
                columns.update(from_buffer(spec, _read_attribute(mesh, named, n), layout.codes))
    arm = rig.rig_of(obj)
    skin = rig.skinning(obj) if arm is not None else None
    if skin is not None:
        transforms = rig.handle_transforms_now(obj, arm, depsgraph, world)
        _skin(columns, layout, skin[0], skin[1], transforms)
    matrix = relative_transform(target_axis_conversion(obj, PLY), world)   # into the .ply (RDF) frame
    apply_transform(columns, layout, matrix)
    out = np.empty(len(raw), dtype=layout.structured_dtype())
    for name in raw.dtype.names:
        out[name] = columns[name]
    return out


def export_sequence(obj: bpy.types.Object, target: str | os.PathLike, frames: list[int] | None = None,
                    scene: bpy.types.Scene | None = None) -> list[Path]:
    """Write one .ply per scene frame (default: the scene's frame range) named by `target` (a folder or a
    '####' pattern); the current frame is restored afterwards."""
    scene = scene or bpy.context.scene
    frames = frames if frames is not None else list(range(scene.frame_start, scene.frame_end + 1))
    paths = frame_paths(target, frames)
    Path(paths[0]).parent.mkdir(parents=True, exist_ok=True)
    layout = object_layout(obj)
    original = (scene.frame_current, scene.frame_subframe)
    try:
        for frame, path in zip(frames, paths):
            scene.frame_set(frame)
            vertices = frame_vertices(obj, bpy.context.evaluated_depsgraph_get())
            write_ply(path, vertices, fmt=layout.fmt, comments=layout.comments)
    finally:
        scene.frame_set(original[0], subframe=original[1])
    return paths
