"""The language feature field of a Gaussian sequence: one compressed video-language code per Gaussian per
(sampled) timestep, built from clips rendered around the sequence, and saved per scene.

Build: render every frame from orbit views → per timestep and view, features of a crop pyramid of the clip
centred there → autoencoder over all crop features → per-pixel code images → contribution-weighted lifting onto
the Gaussians posed at that timestep, summed over views, pooled with colour-alike neighbours → Gaussians that no
view saw (or only faintly) at a timestep filled from their well-seen colour-alike neighbours there (`fill_unseen`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic_files import atomic_write
from ..dynamic import DynamicGaussians
from ..neighbours import MovingNeighbours
from ..render.contributions import lift_views
from ..render.splats import SplatTensors
from .autoencoder import train_autoencoder
from .clips import clip_frames, render_all_frames, sequence_views, to_device, view_tensors
from .features import FeatureExtractor, clip_crop_features, crop_boxes, crop_membership

# 4: unseen and faintly seen Gaussians filled from well-seen neighbours (`filled`); 5: `neighbours` (query growth)
FIELD_VERSION = 5


@dataclass
class FieldOptions:
    views: int = 8
    width: int = 224
    height: int = 224
    scales: tuple[float, ...] = (1.0, 0.5, 0.25)
    code_dim: int = 16
    time_stride: int = 1
    ae_iterations: int = 400
    knn: int = 32         # neighbours pooled into each Gaussian's lifted feature (0: none)
    colour_sigma: float = 0.2   # RGB distance scale of the neighbours' weights in pooling (0: all weigh 1)
    # kNN hops over which unseen Gaussians take seen neighbours' codes (0: none). Off by default: on the H200
    # benchmark (300k × 300) 8 rounds cost 7 s of the build and moved the mid-span IoU 0.823 → 0.825.
    fill_rounds: int = 0
    fill_below: float = 0.5     # seen with less than this × its colour-alike neighbours' mean weight: filled too
    backend: str = "auto"

    def key(self, extractor_name: str) -> str:
        d = asdict(self)
        d.pop("backend")
        d.update(extractor=extractor_name, version=FIELD_VERSION)
        return json.dumps(d, sort_keys=True)


@dataclass
class FeatureField:
    codes: torch.Tensor            # (S, N, d) float16, unit rows; zero where the Gaussian has no code
    seen: torch.Tensor             # (S, N) bool: observed by a view (after neighbour pooling)
    timesteps: np.ndarray          # (S,) int: the sampled timesteps, increasing, first 0 and last T − 1
    total_timesteps: int
    decoder_weight: torch.Tensor   # (D, d)
    decoder_bias: torch.Tensor     # (D,)
    extractor: str
    stats: dict = field(default_factory=dict)   # seconds per stage, autoencoder fit
    derived: dict = field(default_factory=dict, repr=False)   # what queries share, made once (not saved)
    # (S, N) bool: code taken from well-seen neighbours (unseen, or seen only faintly); None: no fills
    filled: torch.Tensor | None = None
    # (N, k) int64: each Gaussian's nearest neighbours at the first timestep (a query grows its masks along
    # them, query.grow_masks); None: a field built without neighbour pooling, or saved before version 5
    neighbours: torch.Tensor | None = None

    @property
    def count(self) -> int:
        return int(self.codes.shape[1])

    @property
    def has_code(self) -> torch.Tensor:
        """(S, N) bool: observed or filled; a query gives the rest relevancy 0.5 (no evidence either way)."""
        return self.seen if self.filled is None else self.seen | self.filled

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            filled = self.filled if self.filled is not None else torch.zeros_like(self.seen)
            extra = {} if self.neighbours is None else {"neighbours": self.neighbours.cpu().numpy()}
            np.savez(f, codes=self.codes.cpu().numpy(), seen=self.seen.cpu().numpy(), **extra,
                     filled=filled.cpu().numpy(), timesteps=self.timesteps,
                     total_timesteps=self.total_timesteps, decoder_weight=self.decoder_weight.cpu().numpy(),
                     decoder_bias=self.decoder_bias.cpu().numpy(), extractor=self.extractor,
                     stats=json.dumps(self.stats))
        return path

    @classmethod
    def load(cls, path: str | Path, device) -> "FeatureField":
        with np.load(path, allow_pickle=False) as z:
            # Fields saved before version 4 have no fills: their unseen Gaussians stay without a code.
            filled = torch.from_numpy(z["filled"]).to(device) if "filled" in z.files else None
            neighbours = torch.from_numpy(z["neighbours"]).to(device) if "neighbours" in z.files else None
            return cls(codes=torch.from_numpy(z["codes"]).to(device), seen=torch.from_numpy(z["seen"]).to(device),
                       timesteps=z["timesteps"].astype(np.int64), total_timesteps=int(z["total_timesteps"]),
                       decoder_weight=torch.from_numpy(z["decoder_weight"]).to(device),
                       decoder_bias=torch.from_numpy(z["decoder_bias"]).to(device), extractor=str(z["extractor"]),
                       stats=json.loads(str(z["stats"])), filled=filled, neighbours=neighbours)


def neighbourhood_sums(index: torch.Tensor, num: torch.Tensor, den: torch.Tensor,
                       weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Add the lifted sums of each Gaussian's nearest neighbours (index (N, k)) to its own. Lifting is noisy
    where views see a Gaussian at a glancing angle, through a neighbour's edge or not at all; a surface's
    neighbours see the same thing, so pooling their contribution-weighted sums fills gaps and evens out mixed
    edge pixels, with well-seen Gaussians weighing most. `weights` (N, k) scales each neighbour's sums."""
    if weights is None:
        weights = den.new_ones(index.shape)
    out_num, out_den = num.clone(), den.clone()
    for j in range(index.shape[1]):      # one neighbour at a time: no (N, k, d) gather at 300k Gaussians
        out_num += weights[:, j, None] * num[index[:, j]]
        out_den += weights[:, j] * den[index[:, j]]
    return out_num, out_den


def colour_weights(index: torch.Tensor, rgb: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, k) similarity of each Gaussian's colour to its neighbours' (a neighbour of another colour is likely
    another object: the hidden underside of a ball touches the floor, whose sums must not flood it)."""
    d2 = ((rgb[index] - rgb[:, None]) ** 2).sum(-1)
    return torch.exp(-d2 / (2 * sigma ** 2))


def fill_unseen(index: torch.Tensor, codes: torch.Tensor, known: torch.Tensor, weights: torch.Tensor | None,
                rounds: int, min_weight: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes (N, d) with unit codes given to Gaussians without one, filled (N,) bool): each round, a Gaussian
    still without a code takes the weighted mean of its coded neighbours' codes (index (N, k), `weights` (N, k)
    colour similarities) when they weigh at least `min_weight`, so codes spread one kNN hop per round into what
    no view saw (a ball's underside, Gaussians behind others) from the same object at the same moment.

    Spatial, not temporal: a code carries the action as well as the object, and only neighbours at the same
    timestep share the action (a ball at rest whose underside is first seen once it rolls would carry
    "rolling" before the roll began, stretching the event's span). Colour-aware with a floor on the weight:
    the floor touching a ball's underside weighs ~0.006 at σ 0.2, so it cannot give the ball its code, and a
    Gaussian whose only coded neighbours are of another colour keeps none (relevancy 0.5) rather than a wrong
    one. Fixed rounds, no test of whether any is left: no host sync inside the build's per-timestep loop."""
    known = known.clone()
    filled = torch.zeros_like(known)
    for _ in range(rounds):
        num, den = neighbourhood_sums(index, codes * known[:, None], known.to(codes.dtype), weights)
        new = ~known & (den >= min_weight)
        codes = torch.where(new[:, None], F.normalize(num, dim=-1), codes)
        known |= new
        filled |= new
    return codes, filled


def sampled_timesteps(total: int, stride: int) -> np.ndarray:
    steps = np.arange(0, total, max(1, stride))
    return steps if steps[-1] == total - 1 else np.append(steps, total - 1)


def build_feature_field(seq: DynamicGaussians, extractor: FeatureExtractor, options: FieldOptions, device,
                        progress: Callable[[float, str], None] | None = None) -> FeatureField:
    """Compute the field (progress fractions: rendering 0–0.2, features 0.2–0.6, autoencoder, lifting 0.7–1)."""
    def report(fraction: float, stage: str) -> None:
        if progress is not None:
            progress(fraction, stage)

    stats: dict = {}
    clock = time.perf_counter()
    dev = to_device(seq, device)
    views = sequence_views(seq, options.views, options.width, options.height)
    steps = sampled_timesteps(seq.timesteps, options.time_stride)
    frames = render_all_frames(dev, views, with_aux=extractor.name == "oracle", backend=options.backend,
                               progress=lambda f, s: report(0.2 * f, s),
                               timesteps=clip_frames(steps, seq.timesteps, extractor.clip_length))
    stats["render_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    boxes = crop_boxes(options.height, options.width, options.scales)
    crop_feats = None
    for i, t in enumerate(steps.tolist()):
        rgb, aux = frames.clip(t, None, extractor.clip_length)          # every view's clip at once
        f = clip_crop_features(extractor, rgb, aux, boxes).to(device)   # (V, C, D)
        if crop_feats is None:
            crop_feats = torch.empty((len(steps),) + tuple(f.shape), dtype=torch.float16, device=device)
        crop_feats[i] = f.half()
        report(0.2 + 0.4 * (i + 1) / len(steps), f"video features: timestep {t + 1} of {seq.timesteps}")
    del frames
    stats["features_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    report(0.6, "training the feature autoencoder")
    flat = crop_feats.reshape(-1, crop_feats.shape[-1]).float()
    # A fixed sample: the same field for the same clips, whatever random state the process is in.
    sample = flat[torch.randperm(len(flat), generator=torch.Generator().manual_seed(0))[:100_000].to(flat.device)]
    fit = train_autoencoder(sample, options.code_dim, options.ae_iterations)
    with torch.no_grad():
        crop_codes = torch.cat([fit.model.encode(flat[i:i + 65536]) for i in range(0, len(flat), 65536)])
    crop_codes = crop_codes.reshape(crop_feats.shape[:3] + (-1,))
    stats.update(autoencoder_s=time.perf_counter() - clock, autoencoder_cosine=fit.cosine)
    del crop_feats, flat

    clock = time.perf_counter()
    member_w = crop_membership(boxes, options.height, options.width, device)        # (C, H·W)
    norm = member_w.sum(0).clamp_min(1e-8)                                          # (H·W,)
    viewmats, Ks = view_tensors(views, device)
    d = crop_codes.shape[-1]
    codes = torch.zeros((len(steps), seq.count, d), dtype=torch.float16, device=device)
    seen = torch.zeros((len(steps), seq.count), dtype=torch.bool, device=device)
    filled = torch.zeros_like(seen)
    neighbours = MovingNeighbours(options.knn)
    first_neighbours = None
    for i, t in enumerate(steps.tolist()):
        means, quats, rgb = dev.at(t)
        posed = SplatTensors(means, quats, dev.scales, dev.opacities, rgb)
        pixel_codes = torch.matmul(member_w.T, crop_codes[i].float()) / norm[:, None]    # (V, H·W, d)
        num, den = lift_views(posed, viewmats, Ks, options.width, options.height, pixel_codes,
                              backend=options.backend)
        if options.knn > 0:
            index = neighbours.at(means)
            if first_neighbours is None:
                first_neighbours = index.clone()
            w = colour_weights(index, rgb, options.colour_sigma) if options.colour_sigma > 0 else None
            num, den = neighbourhood_sums(index, num, den, w)
        ok = den > 1e-4
        unit = torch.where(ok[:, None], F.normalize(num, dim=-1), torch.zeros_like(num))
        if options.knn > 0 and options.fill_rounds > 0:
            # Gaussians seen only faintly against their colour-alike neighbours (at a glancing angle, through the
            # silhouette against the floor) carry codes mixed with what lies behind them: they take their
            # well-seen neighbours' codes as the unseen ones do, and keep their own where no such neighbour is
            # within reach. Against the neighbours, not the scene: a small object's Gaussians all weigh little.
            local_sum, local_weight = neighbourhood_sums(index, den[:, None], torch.ones_like(den), w)
            typical = local_sum[:, 0] / local_weight
            trusted = ok & (den >= options.fill_below * typical)
            spread, filled[i] = fill_unseen(index, unit * trusted[:, None], trusted, w, options.fill_rounds)
            unit = torch.where(filled[i][:, None], spread, unit)
        codes[i] = unit.half()
        seen[i] = ok
        report(0.7 + 0.3 * (i + 1) / len(steps), f"lifting features: timestep {t + 1} of {seq.timesteps}")
    stats["lifting_s"] = time.perf_counter() - clock
    stats["neighbour_graphs"] = neighbours.builds
    stats["seen_fraction"] = float(seen.float().mean())
    stats["filled_fraction"] = float(filled.float().mean())
    return FeatureField(codes=codes, seen=seen, filled=filled, timesteps=steps, total_timesteps=seq.timesteps,
                        decoder_weight=fit.model.decoder.weight.detach().clone(),
                        decoder_bias=fit.model.decoder.bias.detach().clone(), extractor=extractor.name, stats=stats,
                        neighbours=first_neighbours)
