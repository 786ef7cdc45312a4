"""SAGA (Segment Any 3D GAussians): a scale-gated affinity feature per Gaussian, trained contrastively from
multi-granularity 2D masks through feature rendering, then queried by a click or by text in milliseconds.

Training starts in closed form: the feature dimensions are BANDS scale bands; per band every pixel's identity
is its smallest mask of at least the band's scale; masks of different views are associated into 3D segments
by the overlap of their footprints on the Gaussians (random sketches rendered once per view); each Gaussian
takes its segment per band by direct lifting (lifting.assign_labels on per-view weight shares, i.e. the
backward pass of feature rendering) and its feature is the segments' orthonormal codes. The gate is set in
closed form to keep the band of the granularity. Then SAGA's contrastive loss fine-tunes the features through
feature rendering (gsplat on CUDA; on the CPU, the torch rasterizer's compositing weights as sparse matrices).
Scales are handled as quantiles of all masks' 3D scales, so granularity 0..1 is the gate's input itself."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic_files import atomic_write
from ..errors import AnimateGaussiansError
from ..render import cpu_rasterizer
from ..render.rasterizer import gsplat_available, render_gaussians
from .views import View

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
# Masks of two views whose 3D footprints have at least this cosine are one 3D segment (see _associate);
# SKETCH_DIM random dimensions estimate the cosine to about ±1/sqrt(SKETCH_DIM) (124 + colour + depth fill
# gsplat's 128-channel pass exactly).
ASSOCIATION_COSINE = 0.4
SKETCH_DIM = 124
# Contrastive fine-tuning steps after the closed-form initialisation, per device.
ITERATIONS = {"cuda": 300, "cpu": 40}
PIXELS_PER_STEP = {"cuda": 2048, "cpu": 256}
SCALES_PER_STEP = 4
# Elements (pixels × Gaussians) composited at once when the CPU path extracts its weights.
_WEIGHT_BATCH = 1 << 25


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
        key = str(device)
        if key not in self._device_cache:
            self._device_cache[key] = (torch.from_numpy(self.features).to(device), self.gate_module(device))
        return self._device_cache[key]

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


# ----------------------------------------------------------------------------------------- cache by scene hash

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


# ------------------------------------------------------------------------------------------- rendering

def _tensors(scene, device: torch.device):
    from .lifting import splat_tensors

    return scene.cached(f"saga_splats_{device}", lambda: splat_tensors(scene.gaussians, device))


def _view_mats(view: View, device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.as_tensor(np.asarray(view.viewmat), dtype=torch.float32, device=device),
            torch.as_tensor(np.asarray(view.K), dtype=torch.float32, device=device))


def _camera_depths(means: torch.Tensor, viewmat: torch.Tensor) -> torch.Tensor:
    return means @ viewmat[2, :3] + viewmat[2, 3]


class _GsplatFeatureRenderer:
    """Renders (H·W, D) feature maps with gsplat; depth and alpha from the same call."""

    def __init__(self, g, views: Sequence[View]) -> None:
        self.g, self.views = g, views
        self.zeros = torch.zeros(g.count, 3, device=g.means.device)

    def render(self, features: torch.Tensor, v: int, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (P, D), alpha (P,)) at the given pixel indices (row-major) of view v."""
        view = self.views[v]
        viewmat, K = _view_mats(view, self.g.means.device)
        out = render_gaussians(self.g.means, self.g.quats, self.g.scales, self.g.opacities, self.zeros, viewmat, K,
                               view.width, view.height, features=features, backend="gsplat")
        return out.features.reshape(-1, features.shape[1])[pixels], out.alpha.reshape(-1)[pixels]

    @torch.no_grad()
    def depth_alpha(self, v: int) -> tuple[torch.Tensor, torch.Tensor]:
        view = self.views[v]
        viewmat, K = _view_mats(view, self.g.means.device)
        out = render_gaussians(self.g.means, self.g.quats, self.g.scales, self.g.opacities, self.zeros, viewmat, K,
                               view.width, view.height, backend="gsplat")
        return out.depth, out.alpha


def compositing_weights(proj, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (pixel, Gaussian) weight alpha × transmittance with which cpu_rasterizer.composite blends
    Gaussian `proj.ids[j]` into pixel p (row-major p = y·width + x), as sparse triplets (pixels, ids, weights).

    The same rules as composite (gsplat's): alpha = min(0.999, o·exp(−σ)), alphas below 1/255 skipped, a pixel
    stops before the Gaussian that would take its transmittance to 1e-4 or below; tiles of 16×16 with their
    depth-sorted lists from cpu_rasterizer.bin_tiles. Only the weights, never a channel: a tile costs
    256 × (its list), however many channels are rendered through it later."""
    T = cpu_rasterizer.TILE
    tiles_x, tiles_y = -(-width // T), -(-height // T)
    gauss, starts, per_tile = cpu_rasterizer.bin_tiles(proj, tiles_x, tiles_y)
    device = proj.means2d.device
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if gauss.numel() == 0:
        return empty, empty, torch.zeros(0, device=device)
    tiles = torch.nonzero(per_tile > 0).squeeze(1)
    tiles = tiles[torch.argsort(per_tile[tiles])]
    local = torch.arange(T * T, device=device)
    lx, ly = (local % T).float() + 0.5, (local // T).float() + 0.5
    rows, cols, vals = [], [], []
    counts = per_tile[tiles].tolist()
    i = 0
    while i < len(tiles):  # batches of tiles of similar list length within an element budget
        j = i + 1
        while j < len(tiles) and (j + 1 - i) * counts[j] * T * T <= _WEIGHT_BATCH:
            j += 1
        batch = tiles[i:j]
        L = counts[j - 1]
        slot = torch.arange(L, device=device)
        valid = slot[None] < per_tile[batch][:, None]                                   # (B, L)
        g = gauss[(starts[batch][:, None] + slot).clamp_max(len(gauss) - 1)]
        cx, cy = (batch % tiles_x).float() * T, (batch // tiles_x).float() * T
        m, con = proj.means2d[g], proj.conics[g]                                          # (B, L, ·)
        dx = m[:, None, :, 0] - (cx[:, None, None] + lx[None, :, None])                   # (B, 256, L)
        dy = m[:, None, :, 1] - (cy[:, None, None] + ly[None, :, None])
        sigma = 0.5 * (con[:, None, :, 0] * dx * dx + con[:, None, :, 2] * dy * dy) + con[:, None, :, 1] * dx * dy
        alpha = torch.clamp(proj.opacities[g][:, None, :] * torch.exp(-sigma.clamp(max=cpu_rasterizer.SIGMA_CUTOFF)),
                            max=cpu_rasterizer.MAX_ALPHA)
        keep = valid[:, None, :] & (sigma >= 0) & (alpha >= cpu_rasterizer.ALPHA_THRESHOLD)
        alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
        t_incl = torch.cumprod(1.0 - alpha, dim=-1)
        t_excl = torch.cat([torch.ones_like(t_incl[..., :1]), t_incl[..., :-1]], dim=-1)
        w = torch.where(t_incl > cpu_rasterizer.MIN_TRANSMITTANCE, alpha * t_excl, torch.zeros_like(alpha))
        b, p, l = torch.nonzero(w > 0, as_tuple=True)
        x = cx[b].long() + (p % T)
        y = cy[b].long() + (p // T)
        inside = (x < width) & (y < height)
        rows.append((y * width + x)[inside])
        cols.append(proj.ids[g[b, l]][inside])
        vals.append(w[b, p, l][inside])
        i = j
    return torch.cat(rows), torch.cat(cols), torch.cat(vals)


class _ContributionFeatureRenderer:
    """The CPU path: each view's compositing weights (sparse triplets) once; a feature map is then a
    weighted gather-sum of the Gaussians' features (rendering is linear in them), exact to float rounding."""

    def __init__(self, g, views: Sequence[View], progress=None) -> None:
        self.g, self.views = g, views
        self.weights: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []   # (row pointers, ids, weights)
        self.depths: list[torch.Tensor] = []
        self.alphas: list[torch.Tensor] = []
        self._matrices: dict = {}
        for i, view in enumerate(views):
            viewmat, K = _view_mats(view, g.means.device)
            with torch.no_grad():
                proj = cpu_rasterizer.project_gaussians(g.means, g.quats, g.scales, g.opacities, viewmat, K,
                                                        view.width, view.height, 0.01, 1e10)
                rows, cols, vals = compositing_weights(proj, view.width, view.height)
            hw = view.width * view.height
            z = _camera_depths(g.means, viewmat)
            alpha = torch.zeros(hw, device=g.means.device).index_add_(0, rows, vals)
            depth = torch.zeros(hw, device=g.means.device).index_add_(0, rows, vals * z[cols])
            order = torch.argsort(rows, stable=True)   # by pixel: a pixel's weights are one slice
            rowptr = torch.zeros(hw + 1, dtype=torch.long, device=g.means.device)
            rowptr[1:] = torch.cumsum(torch.bincount(rows, minlength=hw), 0)
            self.weights.append((rowptr, cols[order], vals[order]))
            self.alphas.append(alpha.reshape(view.height, view.width))
            self.depths.append((depth / alpha.clamp_min(1e-10)).reshape(view.height, view.width))
            if progress is not None:
                progress((i + 1) / len(views))

    def render(self, features: torch.Tensor, v: int, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (P, D), alpha (P,)) at the given pixel indices: only those pixels' weights are used."""
        if len(pixels) * 8 > len(self.weights[v][0]):   # many pixels: one sparse product (differentiable)
            key = (v, "coo")
            if key not in self._matrices:
                self._matrices[key] = self.matrix(v).to_sparse_coo()
            return torch.sparse.mm(self._matrices[key], features)[pixels], self.alphas[v].reshape(-1)[pixels]
        rowptr, cols, vals = self.weights[v]
        first, count = rowptr[pixels], rowptr[pixels + 1] - rowptr[pixels]
        owner = torch.repeat_interleave(torch.arange(len(pixels), device=pixels.device), count)
        entry = first[owner] + torch.arange(len(owner), device=pixels.device) - (torch.cumsum(count, 0) - count)[owner]
        out = features.new_zeros(len(pixels), features.shape[1]).index_add(0, owner, vals[entry, None] * features[cols[entry]])
        return out, self.alphas[v].reshape(-1)[pixels]

    def depth_alpha(self, v: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.depths[v], self.alphas[v]

    def matrix(self, v: int, transpose: bool = False) -> torch.Tensor:
        """View v's compositing weights as a sparse (H·W, N) CSR matrix (or its transpose), cached: a whole
        feature map is one sparse product, far faster than gathers for every pixel."""
        key = (v, transpose)
        if key not in self._matrices:
            rowptr, cols, vals = self.weights[v]
            hw = len(rowptr) - 1
            with warnings.catch_warnings():      # "sparse CSR support is in beta": the product is exact here
                warnings.simplefilter("ignore", UserWarning)
                m = torch.sparse_csr_tensor(rowptr, cols, vals, (hw, self.g.count))
            self._matrices[key] = m.t().to_sparse_csr() if transpose else m
        return self._matrices[key]


# ---------------------------------------------------------------------------------------------- masks

@dataclass
class _ViewMasks:
    masks: torch.Tensor       # (M, H·W) bool, ascending scale
    scales: torch.Tensor      # (M,) 3D scales
    candidates: torch.Tensor  # (P,) pixel indices inside at least one mask, drawn where something was rendered


def _as_mask_stack(masks) -> np.ndarray:
    from .sam_masks import label_map_to_masks

    masks = np.asarray(masks)
    return label_map_to_masks(masks) if masks.ndim == 2 else masks.astype(bool)


def _prepare_masks(view_masks: list, renderer, views: Sequence[View], device) -> list[_ViewMasks]:
    from .sam_masks import mask_scales

    out = []
    for v, masks in enumerate(view_masks):
        view = views[v]
        stack = torch.from_numpy(_as_mask_stack(masks)).to(device)
        if stack.shape[1:] != (view.height, view.width):
            raise SagaError(f"the masks of view {view.name} are {tuple(stack.shape[1:])}, the view is "
                            f"{view.height}×{view.width}", hint="give masks at the views' resolution")
        depth, alpha = renderer.depth_alpha(v)
        scales = mask_scales(stack, depth, view.K, alpha)
        keep = torch.isfinite(scales) & (scales > 0)
        stack, scales = stack[keep], scales[keep]
        order = torch.argsort(scales)
        stack, scales = stack[order].reshape(len(order), -1), scales[order]
        covered = stack.any(0) & (alpha.reshape(-1) > 0.5)
        out.append(_ViewMasks(stack, scales, torch.nonzero(covered).squeeze(1)))
    return out


def _pixel_identity(vm: _ViewMasks, pixels: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(S, P) index of each pixel's smallest mask whose scale is at least each sampled scale; −1 if none."""
    member = vm.masks[:, pixels]                                   # (M, P)
    ok = member[None] & (vm.scales[None, :] >= scales[:, None])[:, :, None]   # (S, M, P)
    has = ok.any(1)
    first = torch.argmax(ok.to(torch.uint8), dim=1)                # first True along ascending scale
    return torch.where(has, first, torch.full_like(first, -1))


def _contrastive_loss(features: torch.Tensor, gates: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """Positives (same identity) toward cosine 1, negatives toward ≤ 0, each side averaged on its own.
    features (P, D) rendered, gates (S, D), identity (S, P)."""
    f = F.normalize(features, dim=-1)
    fg = F.normalize(f[None] * gates[:, None], dim=-1)            # (S, P, D)
    sim = fg @ fg.transpose(1, 2)                                  # (S, P, P)
    valid = (identity >= 0)
    pair = valid[:, :, None] & valid[:, None, :]
    same = (identity[:, :, None] == identity[:, None, :]) & pair
    diff = pair & ~same
    pos = ((1.0 - sim) * same).sum() / same.sum().clamp_min(1)
    neg = (F.relu(sim) * diff).sum() / diff.sum().clamp_min(1)
    return pos + neg


def _coherence_loss(rendered: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Unit features blended with weights summing to alpha have norm alpha only when they agree: pulling the
    norm up makes every Gaussian's own feature point like the pixels it is seen in (a click compares them)."""
    solid = alpha > 0.5
    ratio = rendered.norm(dim=1) / alpha.clamp_min(1e-6)
    return ((1.0 - ratio) * solid).sum() / solid.sum().clamp_min(1)


# ---------------------------------------------------------------------------------------------- training

class _NullContext:
    def progress(self, fraction: float, stage: str) -> None:
        pass

    def check_cancelled(self) -> None:
        pass


def _resolve_device(device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    from ..render.job import resolve_device

    return resolve_device(device or "auto")


def _render_view_images(scene, views: Sequence[View], device) -> list[np.ndarray]:
    """Each view's photo, or the Gaussians rendered from it (float RGB in [0, 1])."""
    from .views import view_image

    g = scene.gaussians
    sh = None
    images = []
    for view in views:
        photo = view_image(view)
        if photo is not None:
            images.append(photo)
            continue
        if sh is None:
            sh = torch.from_numpy(np.concatenate([g.sh_dc[:, None], g.sh_rest], 1).astype(np.float32)).to(device)
        t = _tensors(scene, device)
        viewmat, K = _view_mats(view, device)
        with torch.no_grad():
            out = render_gaussians(t.means, t.quats, t.scales, t.opacities, sh, viewmat, K, view.width, view.height,
                                   background=torch.ones(3, device=device))
        images.append(out.rgb.clamp(0, 1).cpu().numpy())
    return images


def sam_view_masks(scene, views: Sequence[View], device, sam=None, ctx=None, **generator_options) -> list[np.ndarray]:
    """SAM automatic masks of every view (photo or render) -> per view (M, H, W) bool."""
    from .sam_masks import automatic_masks, load_sam, mask_generator

    ctx = ctx or _NullContext()
    if sam is None:
        sam = load_sam(device=device, progress=lambda f, s: ctx.progress(0.0, s))
    generator = mask_generator(sam, **generator_options)
    images = _render_view_images(scene, views, device)
    out = []
    for i, image in enumerate(images):
        ctx.check_cancelled()
        out.append(automatic_masks(image, generator))
        ctx.progress(0.3 * (i + 1) / len(images), f"SAM masks of view {i + 1} of {len(images)}")
    return out


def _fill_unseen(features: np.ndarray, seen: np.ndarray, means: np.ndarray, k: int = 8) -> np.ndarray:
    """Gaussians no view showed take the mean feature of their k nearest seen Gaussians."""
    if seen.all() or not seen.any():
        return features
    from ..neighbours import nearest

    idx, _ = nearest(means[seen], means[~seen], min(k, int(seen.sum())))
    filled = features.copy()
    filled[~seen] = features[seen][idx].mean(1)
    return filled


# ------------------------------------------------------------------------------ closed-form initialisation

def _band_identities(vm: _ViewMasks, band_scales: torch.Tensor) -> torch.Tensor:
    """(BANDS, P) each candidate pixel's smallest mask of at least each band's lower scale (index into the
    view's masks; −1 none)."""
    return _pixel_identity(vm, vm.candidates, band_scales)


def _pull_back(renderer, v: int, pixels: torch.Tensor, values: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_p w(p, i)·values[p] (N, D), Σ_p w(p, i) (N,)) over the given pixels of view v: the backward pass of
    feature rendering (rendering is linear in the features, so the VJP is the transpose of compositing)."""
    dim = values.shape[1]
    if isinstance(renderer, _ContributionFeatureRenderer):
        hw = renderer.views[v].width * renderer.views[v].height
        full = values.new_zeros(hw, dim + 1)
        full[pixels, :dim] = values
        full[pixels, dim] = 1.0
        out = renderer.matrix(v, transpose=True) @ full
        return out[:, :dim], out[:, dim]
    probe = torch.zeros(count, dim + 1, device=values.device, requires_grad=True)
    rendered, _ = renderer.render(probe, v, pixels)
    grad, = torch.autograd.grad(rendered, probe, torch.cat([values, values.new_ones(len(pixels), 1)], 1))
    return grad[:, :dim], grad[:, dim]


def _render_pixels(renderer, features: torch.Tensor, v: int, pixels: torch.Tensor) -> torch.Tensor:
    """Features (P, D) rendered at the pixels of view v (no gradient)."""
    if isinstance(renderer, _ContributionFeatureRenderer):
        return (renderer.matrix(v) @ features)[pixels]
    return renderer.render(features, v, pixels)[0]


def _band_normalise(features: torch.Tensor, band_dim: int) -> torch.Tensor:
    return F.normalize(features.reshape(len(features), BANDS, band_dim), dim=2).reshape(len(features), -1)


def _associate(renderer, prepared: list[_ViewMasks], identities: list[torch.Tensor], usable: list[int],
               count: int, band_dim: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Codes (per view (BANDS, M_v, band_dim)) that are the same for the masks of one 3D segment in every view
    and orthogonal between segments (random when a band has more segments than dimensions).

    A mask's 3D footprint is the share of each Gaussian's weight in its view that falls in the mask; its
    sketch is that footprint times a random vector per Gaussian (rendered: one pass per view), so sketch
    cosines estimate footprint cosines (Johnson-Lindenstrauss). Masks of different views whose footprints
    overlap (cosine >= ASSOCIATION_COSINE) are linked; the connected components are the 3D segments."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from .lifting import VIEW_SUPPORT_FLOOR

    device = identities[usable[0]].device
    randoms = torch.randn(count, SKETCH_DIM, generator=generator).to(device)
    sketches, owners = [[] for _ in range(BANDS)], [[] for _ in range(BANDS)]
    for v in usable:
        pix = prepared[v].candidates
        _, support = _pull_back(renderer, v, pix, randoms.new_zeros(len(pix), 0), count)
        shown = support > 0
        if not bool(shown.any()):
            continue
        denom = support.clamp_min(VIEW_SUPPORT_FLOOR * float(support[shown].median()))
        with torch.no_grad():
            rendered = _render_pixels(renderer, randoms / denom[:, None], v, pix)       # (P, K)
        for b in range(BANDS):
            ident = identities[v][b]
            ok = ident >= 0
            sums = rendered.new_zeros(len(prepared[v].scales), SKETCH_DIM).index_add_(0, ident[ok], rendered[ok])
            present = torch.nonzero(torch.bincount(ident[ok], minlength=len(prepared[v].scales))).squeeze(1)
            sketches[b].append(F.normalize(sums[present], dim=1))
            owners[b] += [(v, int(m)) for m in present.tolist()]
    components = [None if v not in usable else torch.full((BANDS, len(prepared[v].scales)), -1, dtype=torch.long,
                                                          device=device) for v in range(len(prepared))]
    counts = [0] * BANDS
    for b in range(BANDS):
        if not owners[b]:
            continue
        sk = torch.cat(sketches[b])
        view_of = torch.tensor([v for v, _ in owners[b]], device=device)
        linked = (sk @ sk.T >= ASSOCIATION_COSINE) & (view_of[:, None] != view_of[None, :])
        i, j = torch.nonzero(linked, as_tuple=True)
        n = len(owners[b])
        graph = coo_matrix((np.ones(len(i)), (i.cpu().numpy(), j.cpu().numpy())), shape=(n, n))
        counts[b], component = connected_components(graph, directed=False)
        for (v, m), c in zip(owners[b], component.tolist()):
            components[v][b, m] = c
    return components, counts


def _segment_codes(count: int, band_dim: int, generator: torch.Generator) -> torch.Tensor:
    """(count, band_dim) unit codes of a band's 3D segments: orthonormal while they fit, else random."""
    basis = torch.randn(max(count, band_dim), band_dim, generator=generator)
    if count <= band_dim:
        basis = torch.linalg.qr(basis[:band_dim])[0]
    return F.normalize(basis[:max(count, 1)], dim=1)


def _lift_segments(renderer, prepared: list[_ViewMasks], identities: list[torch.Tensor], usable: list[int],
                   components: list[torch.Tensor], counts: list[int], scene, g, band_dim: int,
                   generator: torch.Generator) -> torch.Tensor:
    """Band by band, each Gaussian's 3D segment by direct lifting (lifting.assign_labels on the per-view
    shares of its compositing weight in each segment's masks: smoothing over neighbours, stray fragments and
    unseen Gaussians decided by their neighbours), and its feature the segment's code: (N, D)."""
    from .lifting import VIEW_SUPPORT_FLOOR, assign_labels
    from ..neighbours import scene_knn

    knn, _ = scene_knn(scene)
    device = g.means.device
    features = torch.zeros(g.count, BANDS * band_dim, device=device)
    for b in range(BANDS):
        k = max(counts[b], 1)
        votes = torch.zeros(g.count, k, device=device)
        for v in usable:
            seg = components[v][b][identities[v][b].clamp_min(0)]
            seg = torch.where(identities[v][b] >= 0, seg, -1)
            ok = seg >= 0
            values = torch.zeros(len(seg), k, device=device)
            values[ok, seg[ok]] = 1.0
            pulled, support = _pull_back(renderer, v, prepared[v].candidates, values, g.count)
            shown = support > 0
            if bool(shown.any()):
                votes += pulled / support.clamp_min(VIEW_SUPPORT_FLOOR * float(support[shown].median()))[:, None]
        result = assign_labels(votes, knn, g.rgb.cpu().numpy(), means=g.means.cpu().numpy())
        labels = torch.from_numpy(result.labels).to(device)
        codes = _segment_codes(k, band_dim, generator).to(device)
        features[:, b * band_dim:(b + 1) * band_dim] = torch.where((labels >= 0)[:, None], codes[labels.clamp_min(0)], 0.0)
    return features


def _band_gate(dim: int, hidden: int = 32, ramp: float = 0.02) -> ScaleGate:
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


def train_features(scene, views: Sequence[View], ctx=None, device="auto", masks: list | None = None,
                   iterations: int | None = None, feature_dim: int = FEATURE_DIM, pixels_per_step: int | None = None,
                   scales_per_step: int = SCALES_PER_STEP, lr: float = 0.005, coherence: float = 1.0, sam=None, seed: int = 0,
                   save: bool = True, backend: str = "auto") -> AffinityFeatures:
    """Train the scene's affinity features from per-view masks (given: (M, H, W) bool or (H, W) int label maps,
    −1 = none; else SAM automatic masks of the views), cache them by the scene's hash and return them.
    `backend` "gsplat" | "contributions" | "auto" (gsplat on CUDA when available)."""
    ctx = ctx or _NullContext()
    device = _resolve_device(device)
    start_time = time.perf_counter()
    if not views:
        raise SagaError("no views to train the features from", hint="give the capture's images or orbit views")
    g = _tensors(scene, device)
    if backend == "auto":
        backend = "gsplat" if device.type == "cuda" and gsplat_available() else "contributions"
    ctx.progress(0.0, "preparing views")
    if backend == "gsplat":
        renderer = _GsplatFeatureRenderer(g, views)
    else:
        renderer = _ContributionFeatureRenderer(
            g, views, progress=lambda f: (ctx.check_cancelled(), ctx.progress(0.1 * f, "compositing weights")))
    if masks is None:
        masks = sam_view_masks(scene, views, device, sam=sam, ctx=ctx)
    if len(masks) != len(views):
        raise SagaError(f"{len(masks)} mask sets for {len(views)} views")
    prepared = _prepare_masks(masks, renderer, views, device)
    usable = [v for v, vm in enumerate(prepared) if len(vm.scales) and len(vm.candidates) > 1]
    if not usable:
        raise SagaError("no view has a usable mask (every mask missed the rendered scene)",
                        hint="check that the views look at the scene")
    all_scales = torch.cat([prepared[v].scales for v in usable]).float().cpu()
    quantiles = torch.quantile(all_scales, torch.linspace(0, 1, SCALE_QUANTILES)).numpy().astype(np.float32)
    quantiles_t = torch.from_numpy(quantiles).to(device)

    kind = "cuda" if device.type == "cuda" else "cpu"
    iterations = ITERATIONS[kind] if iterations is None else int(iterations)
    pixels = int(pixels_per_step or PIXELS_PER_STEP[kind])
    generator = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)
    if feature_dim % BANDS:
        raise SagaError(f"the feature dimension {feature_dim} is not a multiple of {BANDS} bands")
    band_dim = feature_dim // BANDS
    grid = torch.linspace(0, 1, SCALE_QUANTILES, device=device)
    # Closed-form start: masks associated across views, each 3D segment an orthogonal code per band, lifted
    # onto the Gaussians by their compositing weights (one backward pass of feature rendering per view).
    ctx.progress(0.1, "lifting the masks onto the Gaussians")
    band_scales = quantiles_t[(torch.arange(BANDS, device=device) * (SCALE_QUANTILES - 1)) // BANDS]
    band_scales = band_scales.clone()
    band_scales[0] = -float("inf")          # band 0: every pixel's smallest mask
    identities = [_band_identities(vm, band_scales) if v in usable else None for v, vm in enumerate(prepared)]
    components, counts = _associate(renderer, prepared, identities, usable, g.count, band_dim, generator)
    ctx.check_cancelled()
    lifted = _lift_segments(renderer, prepared, identities, usable, components, counts, scene, g, band_dim, generator)
    seen = lifted.norm(dim=1) > 0
    features = _band_normalise(lifted, band_dim).requires_grad_(True)
    gate = _band_gate(feature_dim).to(device)
    # Contrastive fine-tuning (SAGA's loss through feature rendering); Adam only moves rows that got gradients.
    # The gate stays as set: its bands are the granularity semantics, and the masks' scales define them.
    gate.requires_grad_(False)
    optimiser = torch.optim.Adam([features], lr=lr)
    for it in range(iterations):
        v = usable[int(torch.randint(len(usable), (1,), generator=generator))]
        vm = prepared[v]
        pick = torch.randint(len(vm.candidates), (min(pixels, len(vm.candidates)),), generator=generator)
        pix = vm.candidates[pick.to(device)]
        scales, q = _sample_scales(vm, pix, scales_per_step, generator, grid, quantiles_t)
        identity = _pixel_identity(vm, pix, scales)
        rendered, alpha = renderer.render(F.normalize(features, dim=1), v, pix)
        loss = _contrastive_loss(rendered, gate(q), identity) + coherence * _coherence_loss(rendered, alpha)
        optimiser.zero_grad(set_to_none=False)
        loss.backward()
        optimiser.step()
        if (it + 1) % 25 == 0 or it + 1 == iterations:
            ctx.check_cancelled()
            ctx.progress(0.3 + 0.7 * (it + 1) / iterations,
                         f"training features: step {it + 1} of {iterations}, loss {float(loss.detach()):.3f}")
    result = F.normalize(features.detach(), dim=1).cpu().numpy()
    result = _fill_unseen(result, seen.cpu().numpy(), scene.gaussians.means)
    affinity = AffinityFeatures(
        features=F.normalize(torch.from_numpy(result), dim=1).numpy().astype(np.float32),
        gate_state={k: v.detach().cpu().numpy() for k, v in gate.state_dict().items()},
        scale_quantiles=quantiles, iterations=iterations, seconds=time.perf_counter() - start_time)
    if save:
        affinity.save(features_path(scene))
    scene.derived["saga_features"] = affinity
    return affinity


def _sample_scales(vm: _ViewMasks, pixels: torch.Tensor, count: int, generator: torch.Generator,
                   grid: torch.Tensor, quantiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scales, their quantiles q) for one step: half the scale of a mask holding a sampled pixel (so small,
    rare masks are trained as often as their pixels are drawn), half uniform in q."""
    device = pixels.device
    anchors = count // 2
    q_uniform = torch.rand(count - anchors, generator=generator).to(device)
    picked = []
    for _ in range(anchors):
        p = pixels[int(torch.randint(len(pixels), (1,), generator=generator))]
        holding = torch.nonzero(vm.masks[:, p]).squeeze(1)
        if len(holding):
            picked.append(vm.scales[holding[int(torch.randint(len(holding), (1,), generator=generator))]])
    mask_scales = torch.stack(picked).float() if picked else quantiles.new_zeros(0)
    # q of a mask's scale: where it falls in the quantile table.
    q_masks = torch.searchsorted(quantiles.contiguous(), mask_scales.contiguous()).float() / (len(quantiles) - 1)
    return torch.cat([mask_scales, _interp(q_uniform, grid, quantiles)]), torch.cat([q_masks.clamp(0, 1), q_uniform])


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation (torch has no interp) on an increasing uniform grid xp."""
    pos = x.clamp(0, 1) * (len(xp) - 1)
    lo = pos.floor().long().clamp(max=len(xp) - 2)
    t = pos - lo
    return fp[lo] * (1 - t) + fp[lo + 1] * t


# ---------------------------------------------------------------------------------------------- queries

def _gated_similarity(features: torch.Tensor, gate: ScaleGate, query: torch.Tensor, granularity: float
                      ) -> torch.Tensor:
    """Cosine similarity, after gating at `granularity`, of the query feature (D,) with every Gaussian's."""
    g = gate(torch.tensor([float(np.clip(granularity, 0.0, 1.0))], device=features.device))[0]
    q = F.normalize(F.normalize(query, dim=0) * g, dim=0)
    return F.normalize(features * g, dim=1) @ q


@torch.no_grad()
def render_feature_map(features: AffinityFeatures, scene, view: View, device="auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(features (H, W, D), alpha (H, W)) rendered from a view (file frame)."""
    device = _resolve_device(device)
    t = _tensors(scene, device)
    feats, _ = features.device_tensors(device)
    viewmat, K = _view_mats(view, device)
    zeros = scene.cached(f"saga_zeros_{device}", lambda: torch.zeros(t.count, 3, device=device))
    out = render_gaussians(t.means, t.quats, t.scales, t.opacities, zeros, viewmat, K, view.width, view.height,
                           features=feats)
    return out.features, out.alpha


@torch.no_grad()
def click_scores(features: AffinityFeatures, scene, view: View, x: float, y: float, granularity: float,
                 device="auto") -> np.ndarray:
    """(N,) float32 gated cosine similarity of each Gaussian's feature to the feature rendered at pixel (x, y)
    of the view (image coordinates, origin top-left). The segment is scores > CLICK_THRESHOLD."""
    device = _resolve_device(device)
    fmap, alpha = render_feature_map(features, scene, view, device)
    col, row = int(np.clip(np.floor(x), 0, view.width - 1)), int(np.clip(np.floor(y), 0, view.height - 1))
    if float(alpha[row, col]) < 0.05:
        raise SagaError(f"nothing of the scene is at pixel ({x:.0f}, {y:.0f})", hint="click on an object")
    feats, gate = features.device_tensors(device)
    return _gated_similarity(feats, gate, fmap[row, col], granularity).float().cpu().numpy()


@torch.no_grad()
def mask_scores(features: AffinityFeatures, scene, view: View, mask: np.ndarray, granularity: float,
                device="auto") -> np.ndarray:
    """Like click_scores for a 2D mask of the view (a box or a text match): the query is the mean rendered
    feature over the mask's pixels."""
    device = _resolve_device(device)
    fmap, alpha = render_feature_map(features, scene, view, device)
    m = torch.as_tensor(np.asarray(mask, bool), device=device) & (alpha > 0.5)
    if not bool(m.any()):
        raise SagaError("the mask covers nothing of the scene", hint="select a region that shows the object")
    query = F.normalize(fmap[m], dim=1).mean(0)
    feats, gate = features.device_tensors(device)
    return _gated_similarity(feats, gate, query, granularity).float().cpu().numpy()


def text_scores(scene, views: Sequence[View], prompt: str, granularity: float, ctx=None, device="auto",
                sam=None, clip=None, features: AffinityFeatures | None = None, max_views: int = 8,
                generator_options: dict | None = None, sam_variant: str | None = None) -> np.ndarray:
    """(N,) float32 scores of each Gaussian for a text prompt: SAM masks of up to `max_views` views, each
    crop scored by CLIP relevancy; the best mask becomes a feature query (when features are trained; scores
    are gated cosine similarities, threshold CLICK_THRESHOLD), else the best mask of every view whose
    relevancy is close to the best is lifted onto the Gaussians by contribution votes (scores = vote share)."""
    from .clip_text import load_clip, mask_relevancy
    from .sam_masks import automatic_masks, load_sam, mask_generator

    ctx = ctx or _NullContext()
    device = _resolve_device(device)
    if not views:
        raise SagaError("no views to look for the text in")
    chosen = [views[i] for i in np.linspace(0, len(views) - 1, min(max_views, len(views))).round().astype(int)]
    if clip is None:
        clip = load_clip(device, progress=lambda f, s: ctx.progress(0.0, s))
    if sam is None:
        sam = load_sam(sam_variant, device=device, progress=lambda f, s: ctx.progress(0.0, s))
    generator = mask_generator(sam, **(generator_options or {}))
    best_per_view = []
    for i, (view, image) in enumerate(zip(chosen, _render_view_images(scene, chosen, device))):
        ctx.check_cancelled()
        masks = automatic_masks(image, generator)
        rel = mask_relevancy(clip, image, masks, prompt)
        if len(rel):
            j = int(np.argmax(rel))
            best_per_view.append((float(rel[j]), view, masks[j]))
        ctx.progress((i + 1) / len(chosen), f"looking for '{prompt}' in view {i + 1} of {len(chosen)}")
    if not best_per_view:
        raise SagaError(f"no region of the views matched '{prompt}'", hint="try other words, or click instead")
    if features is None and features_ready(scene):
        features = load_features(scene)
    top = max(best_per_view, key=lambda b: b[0])
    if features is not None:
        return mask_scores(features, scene, top[1], top[2], granularity, device)
    from .lifting import contribution_votes

    picked = [b for b in best_per_view if b[0] >= 0.9 * top[0]]
    shape = (picked[0][1].height, picked[0][1].width)
    picked = [b for b in picked if (b[1].height, b[1].width) == shape]
    labels = np.stack([np.where(b[2], 0, 1) for b in picked]).astype(np.int32)
    votes = contribution_votes(_tensors(scene, device), np.stack([b[1].viewmat for b in picked]),
                               np.stack([b[1].K for b in picked]), labels, 2)
    total = votes.sum(1)
    return torch.where(total > 0, votes[:, 0] / total.clamp_min(1e-12), torch.zeros_like(total)).cpu().numpy().astype(np.float32)


# ---------------------------------------------------------------------------------------------- request

def handle_segment_train(ctx, params: dict, arrays: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """The "segment_train" request: params {ply_path, device, iterations?, views {source, path, count, width,
    height}, sam_variant?}; arrays {masks (V, H, W) int32 label maps, view_viewmats (V, 4, 4), view_Ks (V, 3, 3)}
    optional (given masks replace SAM). Result {count, iterations, seconds, cached}."""
    from . import views as views_mod
    from ..scene_cache import load_scene

    scene = load_scene(params["ply_path"])
    device = _resolve_device(params.get("device", "auto"))
    masks = None
    if "masks" in arrays:
        label_maps = np.asarray(arrays["masks"])
        viewmats, Ks = np.asarray(arrays["view_viewmats"]), np.asarray(arrays["view_Ks"])
        views = [View(f"given_{i:03d}", viewmats[i], Ks[i], label_maps.shape[2], label_maps.shape[1])
                 for i in range(len(label_maps))]
        masks = list(label_maps)
    else:
        spec = dict(params.get("views") or {"source": "orbit"})
        views = views_mod.load_views(spec.get("source", "orbit"), spec.get("path"), scene.gaussians.means,
                                     int(spec.get("count", 24)), int(spec.get("width", 512)),
                                     int(spec.get("height", 512)))
    sam = None
    if masks is None:
        from .sam_masks import load_sam

        sam = load_sam(params.get("sam_variant"), device, progress=lambda f, s: ctx.progress(0.0, s))
    result = train_features(scene, views, ctx, device, masks=masks, iterations=params.get("iterations"), sam=sam)
    return ({"count": scene.gaussians.count, "iterations": result.iterations, "seconds": result.seconds,
             "cached": str(features_path(scene))}, {})
