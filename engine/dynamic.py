"""Dynamic (4D) Gaussian sequences: Dynamic 3D Gaussians' params.npz read, validated, written, and one frame
as GaussianArrays. numpy only, so the add-on (import) and the engine (render, query4d) share it.

Layout (JonathonLuiten/Dynamic3DGaussians `save_params`, what 4-LEGS trains on): per timestep `means3D`
(T, N, 3), `unnorm_rotations` (T, N, 4, w x y z, not normalised) and `rgb_colors` (T, N, 3, colours, not SH);
shared `logit_opacities` (N, 1), `log_scales` (N, 3), `seg_colors` (N, 3, foreground in channel 0); the
per-camera colour corrections `cam_m`/`cam_c` are ignored. The world frame is the capture's (y down, like
COLMAP), so the add-on's axis conversion applies unchanged. Our own files may add `labels` (N,) int.
"""

from __future__ import annotations

import os
import tokenize
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AnimateGaussiansError, InputFileError
from .gaussian_transform import quat_multiply
from .ply import SH_C0, GaussianArrays

REQUIRED_KEYS = ("means3D", "unnorm_rotations", "rgb_colors", "logit_opacities", "log_scales")


class DynamicFormatError(AnimateGaussiansError):
    """The file is not a readable Dynamic 3D Gaussians params.npz."""

    hint = ("give the params.npz that Dynamic 3D Gaussians (or 4-LEGS' train_d3dgs.py) writes: per-timestep "
            "means3D and unnorm_rotations, logit_opacities, log_scales and rgb_colors")


class SequenceShape:
    """`timesteps` and `count` of a sequence whose `means` are (T, N, 3): the file's arrays and their tensors on
    the device (query4d.clips.DeviceSequence) alike."""

    @property
    def timesteps(self) -> int:
        return int(self.means.shape[0])

    @property
    def count(self) -> int:
        return int(self.means.shape[1])


@dataclass
class DynamicGaussians(SequenceShape):
    """A Gaussian sequence in its file frame. Arrays with a leading time axis of length 1 are constant."""

    means: np.ndarray                    # (T, N, 3) float32
    quats_wxyz: np.ndarray               # (T, N, 4) or (1, N, 4), as stored
    rgb: np.ndarray                      # (T, N, 3) or (1, N, 3): colours (not SH)
    opacity_logit: np.ndarray            # (N,)
    log_scales: np.ndarray               # (N, 3)
    seg_colors: np.ndarray | None = None # (N, 3)
    labels: np.ndarray | None = None     # (N,) int32, synthetic ground truth

    def _at(self, array: np.ndarray, t: int) -> np.ndarray:
        return array[min(t, array.shape[0] - 1)]

    def check_timestep(self, t: int) -> int:
        if not 0 <= t < self.timesteps:
            raise IndexError(f"timestep {t} outside the sequence's 0..{self.timesteps - 1}")
        return int(t)

    def frame(self, t: int) -> GaussianArrays:
        """The Gaussians at timestep t as a degree-0 3DGS scene (colours become SH DC)."""
        t = self.check_timestep(t)
        rgb = self._at(self.rgb, t).astype(np.float32)
        return GaussianArrays(
            means=np.ascontiguousarray(self.means[t], np.float32),
            sh_dc=((rgb - 0.5) / SH_C0).astype(np.float32),
            sh_rest=np.zeros((self.count, 0, 3), np.float32),
            opacity_logit=self.opacity_logit.astype(np.float32),
            log_scales=self.log_scales.astype(np.float32),
            quats_wxyz=np.ascontiguousarray(self._at(self.quats_wxyz, t), np.float32))

    def quats_at(self, t: int) -> np.ndarray:
        return self._at(self.quats_wxyz, self.check_timestep(t))

    def rgb_at(self, t: int) -> np.ndarray:
        return self._at(self.rgb, self.check_timestep(t))


def _per_timestep(name: str, a: np.ndarray, T: int, N: int, width: int) -> np.ndarray:
    if a.ndim == 2 and a.shape == (N, width):
        return a[None]
    if a.ndim != 3 or a.shape[1:] != (N, width) or a.shape[0] not in (1, T):
        raise DynamicFormatError(f"{name} has shape {a.shape}; expected ({T}, {N}, {width}) or ({N}, {width})")
    return a


def validate(d: DynamicGaussians, name: str = "the sequence") -> DynamicGaussians:
    """Check shapes and values; raise DynamicFormatError naming what is wrong."""
    if d.means.ndim != 3 or d.means.shape[2] != 3:
        raise DynamicFormatError(f"{name}: means3D has shape {d.means.shape}; expected (timesteps, N, 3)")
    T, N = d.means.shape[:2]
    if T == 0 or N == 0:
        raise DynamicFormatError(f"{name} holds no Gaussians ({T} timesteps of {N})")
    d.quats_wxyz = _per_timestep("unnorm_rotations", d.quats_wxyz, T, N, 4)
    d.rgb = _per_timestep("rgb_colors", d.rgb, T, N, 3)
    d.opacity_logit = np.asarray(d.opacity_logit).reshape(-1)
    if d.opacity_logit.shape != (N,):
        raise DynamicFormatError(f"{name}: logit_opacities has {d.opacity_logit.size} values for {N} Gaussians")
    if d.log_scales.shape != (N, 3):
        raise DynamicFormatError(f"{name}: log_scales has shape {d.log_scales.shape}; expected ({N}, 3)")
    if d.seg_colors is not None and d.seg_colors.shape != (N, 3):
        raise DynamicFormatError(f"{name}: seg_colors has shape {d.seg_colors.shape}; expected ({N}, 3)")
    if d.labels is not None and d.labels.shape != (N,):
        raise DynamicFormatError(f"{name}: labels has shape {d.labels.shape}; expected ({N},)")
    for key, a in (("means3D", d.means), ("unnorm_rotations", d.quats_wxyz), ("rgb_colors", d.rgb),
                   ("logit_opacities", d.opacity_logit), ("log_scales", d.log_scales)):
        if not np.isfinite(a).all():
            raise DynamicFormatError(f"{name}: {key} holds NaN or infinite values",
                                     hint="the training diverged; re-train or export the sequence again")
    if (np.abs(d.quats_wxyz).sum(axis=-1) == 0).any():
        raise DynamicFormatError(f"{name}: some rotations are all zero (not a quaternion)")
    return d


def read_dynamic(path: str | os.PathLike) -> DynamicGaussians:
    """Read and validate a params.npz (float arrays become float32)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"dynamic Gaussians file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = [k for k in REQUIRED_KEYS if k not in keys]
            if missing:
                raise DynamicFormatError(f"{path.name} lacks {', '.join(missing)} (it has {', '.join(sorted(keys))})")
            f32 = {k: np.asarray(npz[k], np.float32) for k in REQUIRED_KEYS}
            seg = np.asarray(npz["seg_colors"], np.float32) if "seg_colors" in keys else None
            labels = np.asarray(npz["labels"]).astype(np.int32) if "labels" in keys else None
    # numpy's .npy header parser lets tokenize, syntax and type errors out of a damaged header, and a header
    # that declares a huge shape fails to allocate; zipfile raises NotImplementedError for an unknown version
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, tokenize.TokenError, SyntaxError, TypeError,
            MemoryError, NotImplementedError) as exc:
        raise DynamicFormatError(f"{path.name} is not a readable .npz: {exc}") from None
    return validate(DynamicGaussians(means=f32["means3D"], quats_wxyz=f32["unnorm_rotations"], rgb=f32["rgb_colors"],
                                     opacity_logit=f32["logit_opacities"], log_scales=f32["log_scales"],
                                     seg_colors=seg, labels=labels), path.name)


def write_dynamic(path: str | os.PathLike, d: DynamicGaussians) -> Path:
    """Write in the Dynamic 3D Gaussians layout (loadable by its visualize.py and 4-LEGS)."""
    validate(d)
    T = d.timesteps
    arrays = {"means3D": d.means.astype(np.float32),
              "unnorm_rotations": np.broadcast_to(d.quats_wxyz, (T, d.count, 4)).astype(np.float32),
              "rgb_colors": np.broadcast_to(d.rgb, (T, d.count, 3)).astype(np.float32),
              "logit_opacities": d.opacity_logit.reshape(-1, 1).astype(np.float32),
              "log_scales": d.log_scales.astype(np.float32)}
    if d.seg_colors is not None:
        arrays["seg_colors"] = d.seg_colors.astype(np.float32)
    if d.labels is not None:
        arrays["labels"] = d.labels.astype(np.int32)
    path = Path(path)
    with open(path, "wb") as f:   # np.savez would append ".npz" to a name without it
        np.savez(f, **arrays)
    return path


def speeds(d: DynamicGaussians, t: int) -> np.ndarray:
    """(N,) central-difference speed of each Gaussian at timestep t (one-sided at the ends), file units/frame."""
    t = d.check_timestep(t)
    a, b = max(t - 1, 0), min(t + 1, d.timesteps - 1)
    if a == b:
        return np.zeros(d.count, np.float32)
    return (np.linalg.norm(d.means[b] - d.means[a], axis=1) / (b - a)).astype(np.float32)


def make_moving_sequence(gaussians_per_object: int = 1500, timesteps: int = 40, moving_label: int = 1,
                         move_start: int = 10, move_end: int = 30, distance: float = 1.2,
                         seed: int = 0) -> DynamicGaussians:
    """The primitives scene (engine.synthetic_scene) as a sequence in which one object (label `moving_label`)
    rolls along +x between timesteps move_start and move_end and rests otherwise (ground truth for 4D queries:
    its central-difference speed is non-zero exactly on move_start..move_end)."""
    from .synthetic_scene import make_primitives_scene

    scene = make_primitives_scene(gaussians_per_object, sh_degree=0, seed=seed)
    g = scene.gaussians
    N = g.count
    moving = scene.labels == moving_label
    obj = next(o for o in scene.objects if o.label == moving_label)
    fraction = np.clip((np.arange(timesteps) - move_start) / max(move_end - move_start, 1), 0.0, 1.0)
    angle = fraction * distance / (obj.size / 2)            # rolling without slipping about the file z axis
    means = np.broadcast_to(g.means, (timesteps, N, 3)).copy()
    quats = np.broadcast_to(g.quats_wxyz, (timesteps, N, 4)).copy()
    local = g.means[moving] - obj.center
    for t in range(timesteps):
        c, s = np.cos(-angle[t]), np.sin(-angle[t])       # y is down: rolling to +x turns by −angle about z
        R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        means[t, moving] = local @ R.T + obj.center + np.array([distance * fraction[t], 0.0, 0.0])
        q = np.array([np.cos(-angle[t] / 2), 0.0, 0.0, np.sin(-angle[t] / 2)])
        quats[t, moving] = quat_multiply(q[None], g.quats_wxyz[moving])
    rgb = g.colors()[None].astype(np.float32)
    seg = np.zeros((N, 3), np.float32)
    seg[scene.labels != 0, 0] = 1.0                         # foreground in channel 0, as Dynamic 3D Gaussians
    return validate(DynamicGaussians(means=means.astype(np.float32), quats_wxyz=quats.astype(np.float32), rgb=rgb,
                                     opacity_logit=g.opacity_logit.copy(), log_scales=g.log_scales.copy(),
                                     seg_colors=seg, labels=scene.labels.astype(np.int32)))
