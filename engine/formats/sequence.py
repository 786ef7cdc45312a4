"""PLY sequences, the way 4DGS tools exchange dynamic scenes: one INRIA .ply per frame, as a folder or a numbered
pattern (`frame_####.ply`, `frame_%04d.ply` or a `*` glob). Read into a DynamicGaussians (the Dynamic 3D Gaussians
model the add-on already imports and the engine renders), and name the files of an exported sequence. numpy only.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import numpy as np

from ..dynamic import DynamicGaussians, validate
from ..errors import InputFileError, SplatFormatError
from ..ply import SH_C0, read_gaussians

_HASHES = re.compile(r"#+")
_PRINTF = re.compile(r"%0?(\d*)d")


def _number(path: Path) -> tuple[int, str]:
    digits = re.findall(r"\d+", path.stem)
    return (int(digits[-1]) if digits else -1, path.name)


def is_sequence_spec(path: str | os.PathLike) -> bool:
    """A folder that is not a SOG (no meta.json), or a name with '#', '%d' or '*' in it."""
    text = str(path)
    name = Path(text).name
    if "#" in name or "*" in name or _PRINTF.search(name):
        return True
    p = Path(text)
    return p.is_dir() and not (p / "meta.json").is_file()


def is_sequence_target(path: str | os.PathLike) -> bool:
    """Whether an export path asks for a PLY sequence: a folder (existing, or ending in a separator) or a name
    with '#', '%d' or '*'."""
    return str(path).endswith(("/", os.sep)) or is_sequence_spec(path)


def sequence_files(spec: str | os.PathLike) -> list[Path]:
    """The frame files of a sequence spec in frame order (by the last number in each name)."""
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".ply"]
        where = f"folder {path}"
    else:
        pattern = _PRINTF.sub("*", _HASHES.sub(lambda m: "[0-9]" * len(m.group()), path.name))
        files = [Path(p) for p in glob.glob(str(path.parent / pattern)) if Path(p).is_file()]
        where = f"pattern {text}"
    if not files:
        raise InputFileError(f"no .ply frames in {where}",
                             hint="give a folder of .ply files or a pattern such as frames/frame_####.ply")
    return sorted(files, key=_number)


def read_sequence(spec: str | os.PathLike) -> tuple[DynamicGaussians, list[Path], list[str]]:
    """(the sequence, its files, notes on what the timeline does not keep) — validated completely.

    Positions, rotations and base colours are per frame; opacity, scale and view-dependent SH come from the
    first frame (the Dynamic 3D Gaussians model): when later frames change them, a note says so.
    """
    files = sequence_files(spec)
    first = read_gaussians(files[0])
    n = first.count
    T = len(files)
    means = np.empty((T, n, 3), np.float32)
    quats = np.empty((T, n, 4), np.float32)
    rgb = np.empty((T, n, 3), np.float32)
    varying: set[str] = set()
    for t, file in enumerate(files):
        g = first if t == 0 else read_gaussians(file)
        if g.count != n:
            raise SplatFormatError(f"{file.name} has {g.count:,} Gaussians but {files[0].name} has {n:,}; a PLY "
                                   "sequence needs the same Gaussians in every frame",
                                   hint="export the sequence with a constant Gaussian count")
        if g.sh_degree != first.sh_degree:
            raise SplatFormatError(f"{file.name} has SH degree {g.sh_degree}, {files[0].name} {first.sh_degree}")
        means[t], quats[t] = g.means, g.quats_wxyz
        rgb[t] = 0.5 + SH_C0 * g.sh_dc     # unclipped, so frame 0 renders exactly as its file
        for name, a, b in (("opacity", g.opacity_logit, first.opacity_logit), ("scale", g.log_scales, first.log_scales),
                           ("view-dependent colour (SH)", g.sh_rest, first.sh_rest)):
            if t and not np.array_equal(a, b):
                varying.add(name)
    seq = validate(DynamicGaussians(means=means, quats_wxyz=quats, rgb=rgb, opacity_logit=first.opacity_logit,
                                    log_scales=first.log_scales), str(spec))
    notes = [f"the sequence changes {name} between frames; the timeline keeps frame 0's" for name in sorted(varying)]
    return seq, files, notes


def frame_paths(target: str | os.PathLike, frames: list[int]) -> list[Path]:
    """Where each frame of an exported sequence goes: '#'s (or %0Nd) in the name become the frame number,
    zero-padded; a folder (existing, or a path ending in a separator) gets frame_0001.ply and so on."""
    text = str(target)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return [path / f"frame_{f:04d}.ply" for f in frames]
    if "#" in path.name:
        return [path.with_name(_HASHES.sub(lambda m: f"{f:0{len(m.group())}d}", path.name, count=1)) for f in frames]
    if _PRINTF.search(path.name):
        return [path.with_name(path.name % f) for f in frames]
    raise InputFileError(f"{text} does not say where each frame goes",
                         hint="give a folder (ending in /) or a name with #### for the frame number")

