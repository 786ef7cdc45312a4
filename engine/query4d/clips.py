"""Clips of a 4D Gaussian sequence: the sequence on the device, orbit views around it, and every frame rendered
from every view (colour, plus label/speed channels that only the oracle extractor reads).

A clip is the run of frames centred on a timestep (clamped at the ends); features of the clip belong to that
timestep, as 4-LEGS extracts one video feature per timestep window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..dynamic import DynamicGaussians, SequenceShape
from ..render.gsplat_backend import render_gsplat_views
from ..render.rasterizer import choose_backend, render_gaussians
from ..segment.views import View, orbit_views


@dataclass
class DeviceSequence(SequenceShape):
    """A DynamicGaussians as torch tensors on one device (time-constant arrays keep a time axis of 1)."""

    means: torch.Tensor          # (T, N, 3)
    quats: torch.Tensor          # (T|1, N, 4)
    rgb: torch.Tensor            # (T|1, N, 3)
    scales: torch.Tensor         # (N, 3) linear
    opacities: torch.Tensor      # (N,)
    labels_onehot: torch.Tensor | None   # (N, L) float, when the sequence carries labels

    @property
    def device(self) -> torch.device:
        return self.means.device

    def at(self, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(means, quats, rgb) at timestep t."""
        return self.means[t], self.quats[min(t, self.quats.shape[0] - 1)], self.rgb[min(t, self.rgb.shape[0] - 1)]

    def speed(self, t: int) -> torch.Tensor:
        """(N,) central-difference speed at t (as engine.dynamic.speeds)."""
        a, b = max(t - 1, 0), min(t + 1, self.timesteps - 1)
        if a == b:
            return self.means.new_zeros(self.count)
        return torch.linalg.norm(self.means[b] - self.means[a], dim=1) / (b - a)


def to_device(d: DynamicGaussians, device: torch.device | str) -> DeviceSequence:
    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(device)

    onehot = None
    if d.labels is not None:
        labels = torch.from_numpy(d.labels.astype(np.int64)).to(device)
        onehot = torch.nn.functional.one_hot(labels, int(labels.max()) + 1).float()
    return DeviceSequence(means=t(d.means), quats=t(d.quats_wxyz), rgb=t(d.rgb), scales=t(np.exp(d.log_scales)),
                          opacities=t(1.0 / (1.0 + np.exp(-d.opacity_logit))), labels_onehot=onehot)


def sequence_views(d: DynamicGaussians, count: int, width: int, height: int) -> list[View]:
    """Orbit views framing where the Gaussians go over the whole sequence (a sample of timesteps)."""
    sample = d.means[np.linspace(0, d.timesteps - 1, min(d.timesteps, 8)).round().astype(int)]
    points = sample.reshape(-1, 3)
    points = points[:: max(1, len(points) // 200_000)]
    return orbit_views(points, count, width=width, height=height)


def clip_timesteps(t: int, timesteps: int, length: int) -> np.ndarray:
    """The `length` frames of the clip centred on t (t at index length // 2), clamped to the sequence."""
    return np.clip(np.arange(length) - length // 2 + t, 0, timesteps - 1)


@dataclass
class RenderedFrames:
    """Every rendered frame from every view: rgb (T', V, H, W, 3) in [0, 1] (float16), alpha (T', V, H, W),
    and for labelled sequences aux (T', V, H, W, 2L): per label its coverage, then coverage × speed."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    aux: torch.Tensor | None
    rows: np.ndarray          # (T,) row of each timestep in the arrays above, −1 where not rendered

    def clip(self, t: int, view: int | None, length: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The clip centred on t seen from `view` ((length, H, W, …)), or from every view when None."""
        rows = self.rows[clip_timesteps(t, len(self.rows), length)]
        if (rows < 0).any():
            raise ValueError(f"the clip at timestep {t} needs frames that were not rendered")
        idx = torch.from_numpy(rows).to(self.rgb.device)
        if view is None:   # every view's clip: (V, length, H, W, …)
            rgb = self.rgb[idx].transpose(0, 1).float()
            return rgb, self.aux[idx].transpose(0, 1).float() if self.aux is not None else None
        rgb = self.rgb[idx, view].float()
        aux = self.aux[idx, view].float() if self.aux is not None else None
        return rgb, aux


def view_tensors(views: list[View], device) -> tuple[torch.Tensor, torch.Tensor]:
    viewmats = torch.tensor(np.stack([v.viewmat for v in views]), dtype=torch.float32, device=device)
    Ks = torch.tensor(np.stack([v.K for v in views]), dtype=torch.float32, device=device)
    return viewmats, Ks


def clip_frames(centres: np.ndarray, timesteps: int, length: int) -> np.ndarray:
    """The timesteps the clips centred on `centres` need (sorted, unique)."""
    return np.unique(np.concatenate([clip_timesteps(int(t), timesteps, length) for t in centres]))


def render_all_frames(seq: DeviceSequence, views: list[View], with_aux: bool, backend: str = "auto",
                      progress: Callable[[float, str], None] | None = None,
                      timesteps: np.ndarray | None = None) -> RenderedFrames:
    """Render the given timesteps (default all) from each view (clips are assembled from these frames)."""
    steps = np.arange(seq.timesteps) if timesteps is None else np.asarray(timesteps, np.int64)
    rows = np.full(seq.timesteps, -1, np.int64)
    rows[steps] = np.arange(len(steps))
    T, V = len(steps), len(views)
    width, height = views[0].width, views[0].height
    viewmats, Ks = view_tensors(views, seq.device)
    rgb = torch.empty((T, V, height, width, 3), dtype=torch.float16, device=seq.device)
    alpha = torch.empty((T, V, height, width), dtype=torch.float16, device=seq.device)
    aux = None
    if with_aux and seq.labels_onehot is not None:
        aux = torch.empty((T, V, height, width, 2 * seq.labels_onehot.shape[1]), dtype=torch.float16,
                          device=seq.device)
    with torch.no_grad():
        for row, t in enumerate(steps.tolist()):
            means, quats, colors = seq.at(t)
            feats = None
            if aux is not None:
                feats = torch.cat([seq.labels_onehot, seq.labels_onehot * seq.speed(t)[:, None]], 1)
            if choose_backend(backend, seq.device) == "gsplat":   # every view in one launch
                channels = colors if feats is None else torch.cat([colors, feats], 1)
                image, a = render_gsplat_views(means, quats, seq.scales, seq.opacities, channels, viewmats, Ks,
                                               width, height)
                rgb[row] = image[..., :3].clamp(0, 1).half()
                alpha[row] = a.half()
                if aux is not None:
                    aux[row] = image[..., 3:].half()
            else:
                for v in range(V):
                    out = render_gaussians(means, quats, seq.scales, seq.opacities, colors, viewmats[v], Ks[v],
                                           width, height, features=feats, backend=backend)
                    rgb[row, v] = out.rgb.clamp(0, 1).half()
                    alpha[row, v] = out.alpha.half()
                    if aux is not None:
                        aux[row, v] = out.features.half()
            if progress is not None:
                progress((row + 1) / T, f"rendering clips: frame {row + 1} of {T}")
    return RenderedFrames(rgb=rgb, alpha=alpha, aux=aux, rows=rows)
