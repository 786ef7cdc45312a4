"""A scene's SAGA affinity features: one unit vector per Gaussian, the scale gate that picks a granularity's
band of them (set in closed form), and their cache on disk by the scene's hash."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...atomic_files import atomic_write
from ...errors import AnimateGaussiansError

# 28 feature channels + colour (3) + depth (1) fill exactly one of gsplat's 32-channel rasterization passes.
FEATURE_DIM = 28
ARTEFACT = "saga_features.npz"
FORMAT_VERSION = 2   # 2: banded features and a closed-form gate (threshold 0.5)
# Gated cosine similarity above which a Gaussian belongs to the clicked segment: the lifted initial features
# give a segment's Gaussians cosine ~1 and other segments' ~0 (orthogonal codes), and the contrastive loss
# pulls positives to 1 and pushes negatives to <= 0, so the midpoint 0.5 has equal margin on both sides.
CLICK_THRESHOLD = 0.5
SCALE_QUANTILES = 257
# The feature dimensions form BANDS equal bands; band b holds, for every pixel, the identity of its smallest
# mask of at least the mask-scale quantile b/BANDS, and the gate at granularity q keeps band floor(q·BANDS).
BANDS = 4
# The gate's weight on the bands of other granularities (so their cosine adds at most ~OFF_GATE²).
OFF_GATE = 0.05
# Granularities whose gated features are kept on the device (the slider's last few; 4 bytes·D·N each).
GATED_KEPT = 2


class SagaError(AnimateGaussiansError):
    """The affinity features cannot be trained or queried as asked."""

    hint = "train the segmentation features first (Segment > Train), or use direct lifting"


class ScaleGate(torch.nn.Module):
    """Granularity (a scale quantile in [0, 1]) -> a weight in (0, 1) per feature dimension."""

    def __init__(self, dim: int = FEATURE_DIM, hidden: int = 32) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, dim),
                                       torch.nn.Sigmoid())

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.net(q.reshape(-1, 1).float())


@dataclass
class AffinityFeatures:
    """A scene's trained features: one unit vector per Gaussian, the gate, and the masks' scale quantiles."""

    features: np.ndarray                 # (N, D) float32, L2-normalised
    gate_state: dict[str, np.ndarray]    # ScaleGate state_dict as numpy
    scale_quantiles: np.ndarray          # (SCALE_QUANTILES,) 3D mask scales at quantiles 0..1 (scene units)
    iterations: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)   # training's seconds per phase (not saved)
    _device_cache: dict = field(default_factory=dict, repr=False)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def gate_module(self, device: torch.device | str = "cpu") -> ScaleGate:
        gate = ScaleGate(self.dim, int(self.gate_state["net.0.weight"].shape[0]))
        gate.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in self.gate_state.items()})
        return gate.to(device).eval()

    def device_tensors(self, device: torch.device) -> tuple[torch.Tensor, ScaleGate]:
        """(features on `device`, gate on `device`), kept for repeated queries (the slider)."""
        key = ("features", str(device))
        if key not in self._device_cache:
            self._device_cache[key] = (torch.from_numpy(self.features).to(device), self.gate_module(device))
        return self._device_cache[key]

    @torch.no_grad()
    def similarity(self, query: torch.Tensor, granularity: float, device: torch.device) -> torch.Tensor:
        """gated_similarity of the query (D,) with every Gaussian's feature, with the gated, normalised
        features kept per granularity (the last GATED_KEPT): a click at the granularity of the one before is
        one product. The same bits as gated_similarity."""
        feats, gate = self.device_tensors(device)
        level = float(np.clip(granularity, 0.0, 1.0))
        key = ("gated", str(device), level)
        if key not in self._device_cache:
            kept = [k for k in self._device_cache if k[0] == "gated"]
            for old in kept[:max(0, len(kept) - GATED_KEPT + 1)]:    # the oldest go
                del self._device_cache[old]
            self._device_cache[key] = gated_features(feats, gate, level)
        return similarity_to_gated(*self._device_cache[key], query)

    @classmethod
    def from_labels(cls, labels: np.ndarray, seed: int = 0, noise: float = 0.05) -> "AffinityFeatures":
        """A trained state with known answers, without training: each label a random unit code, in every band
        (so every granularity selects the label), plus a little noise; the closed-form gate. For the click's
        tests and its benchmark (its cost does not depend on how the features came)."""
        rng = np.random.default_rng(seed)
        labels = np.asarray(labels, np.int64)
        codes = rng.standard_normal((int(labels.max()) + 1, FEATURE_DIM)).astype(np.float32)
        feats = codes[labels] + noise * rng.standard_normal((len(labels), FEATURE_DIM)).astype(np.float32)
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        gate = band_gate(FEATURE_DIM)
        return cls(features=feats, gate_state={k: v.detach().numpy() for k, v in gate.state_dict().items()},
                   scale_quantiles=np.linspace(0.0, 1.0, SCALE_QUANTILES))

    def scale_of(self, granularity: float) -> float:
        """The 3D scale (scene units) a granularity stands for."""
        q = np.linspace(0.0, 1.0, len(self.scale_quantiles))
        return float(np.interp(np.clip(granularity, 0.0, 1.0), q, self.scale_quantiles))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_write(path) as tmp:
            np.savez(tmp, version=FORMAT_VERSION, features=self.features.astype(np.float16),
                     scale_quantiles=self.scale_quantiles, iterations=self.iterations, seconds=self.seconds,
                     **{"gate." + k: v for k, v in self.gate_state.items()})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "AffinityFeatures":
        with np.load(path) as data:
            if int(data["version"]) != FORMAT_VERSION:
                raise SagaError(f"the cached features at {path} are from another version")
            gate = {k[5:]: data[k] for k in data.files if k.startswith("gate.")}
            return cls(features=F.normalize(torch.from_numpy(data["features"].astype(np.float32)), dim=1).numpy(),
                       gate_state=gate, scale_quantiles=data["scale_quantiles"],
                       iterations=int(data["iterations"]), seconds=float(data["seconds"]))


def features_path(scene) -> Path:
    return scene.artefact_path(ARTEFACT)


def features_ready(scene) -> bool:
    """True when features were trained for this scene's content (in memory or on disk)."""
    return "saga_features" in scene.derived or features_path(scene).is_file()


def load_features(scene) -> AffinityFeatures:
    """The scene's trained features (from memory, else from the on-disk cache)."""
    def make():
        path = features_path(scene)
        if not path.is_file():
            raise SagaError("no segmentation features have been trained for this scene")
        features = AffinityFeatures.load(path)
        if len(features.features) != scene.gaussians.count:
            raise SagaError(f"the cached features hold {len(features.features)} Gaussians, the scene "
                            f"{scene.gaussians.count}", hint="train the features again")
        return features
    return scene.cached("saga_features", make)


def band_gate(dim: int, hidden: int = 32, ramp: float = 0.02) -> ScaleGate:
    """The gate that keeps band floor(q·BANDS) at granularity q (weight ~1) and the others at OFF_GATE, set in
    closed form: the logits are piecewise linear in q with ramps of ±`ramp` at the band edges, which the
    gate's ReLU layer represents exactly (two units per edge)."""
    gate = ScaleGate(dim, hidden)
    edges = [k / BANDS for k in range(1, BANDS)]
    knots = [t for e in edges for t in (e - ramp, e + ramp)]
    if len(knots) > hidden or dim % BANDS:
        raise SagaError(f"a gate of {hidden} hidden units cannot hold {BANDS} bands of {dim} dimensions")
    high, low = float(np.log(0.999 / 0.001)), float(np.log(OFF_GATE / (1 - OFF_GATE)))
    w1, b1 = torch.zeros(hidden, 1), torch.zeros(hidden)
    w1[:len(knots), 0] = 1.0
    b1[:len(knots)] = -torch.tensor(knots)
    w2, b2 = torch.zeros(dim, hidden), torch.zeros(dim)
    slope = (high - low) / (2 * ramp)
    band_dim = dim // BANDS
    for band in range(BANDS):
        rows = slice(band * band_dim, (band + 1) * band_dim)
        b2[rows] = high if band == 0 else low
        if band > 0:            # ramps up across its lower edge
            w2[rows, 2 * (band - 1)] += slope
            w2[rows, 2 * (band - 1) + 1] -= slope
        if band < BANDS - 1:    # ramps down across its upper edge
            w2[rows, 2 * band] -= slope
            w2[rows, 2 * band + 1] += slope
    with torch.no_grad():
        gate.net[0].weight.copy_(w1)
        gate.net[0].bias.copy_(b1)
        gate.net[2].weight.copy_(w2)
        gate.net[2].bias.copy_(b2)
    return gate


def gated_features(features: torch.Tensor, gate: ScaleGate, granularity: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(the gate at `granularity` (D,), every Gaussian's feature gated by it and normalised (N, D))."""
    g = gate(torch.tensor([float(np.clip(granularity, 0.0, 1.0))], device=features.device))[0]
    return g, F.normalize(features * g, dim=1)


def similarity_to_gated(gate_values: torch.Tensor, gated: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the query feature (D,), gated alike, with features gated by gated_features."""
    return gated @ F.normalize(F.normalize(query, dim=0) * gate_values, dim=0)


def gated_similarity(features: torch.Tensor, gate: ScaleGate, query: torch.Tensor, granularity: float
                     ) -> torch.Tensor:
    """Cosine similarity, after gating at `granularity`, of the query feature (D,) with every Gaussian's."""
    return similarity_to_gated(*gated_features(features, gate, granularity), query)
