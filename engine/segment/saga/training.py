"""Training SAGA's affinity features: the closed-form start (initialisation), then SAGA's contrastive loss
through feature rendering; the "segment_train" request."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...adam import Adam
from ...neighbours import scene_knn
from ...render.contributions import RasterizedView
from ..views import View
from .features import BANDS, FEATURE_DIM, SCALE_QUANTILES, AffinityFeatures, SagaError, band_gate, features_path
from .initialisation import associate, band_normalise, segment_features, segment_votes
from .masks import band_identities, pixel_identity, prepare_masks, sam_view_masks, sample_scales
from .rendering import NullContext, as_device, scene_splats, training_backend, view_contributions

# Contrastive fine-tuning steps after the closed-form initialisation, per device. On CUDA 100: at 1M Gaussians
# and 60 views (benchmarks/saga_speed.py, oracle masks) 75, 150 and 300 steps gave the same click IoU (H200: min
# 0.994, mean 0.9977 each); a step is 33–60 ms there, so 100 keeps a margin over 75 for SAM's noisier masks.
ITERATIONS = {"cuda": 100, "cpu": 40}
PIXELS_PER_STEP = {"cuda": 2048, "cpu": 256}
SCALES_PER_STEP = 4
# A step renders the view's features at 1/STEP_STRIDE of its resolution (gsplat only) and samples its pixels on
# that grid: the same loss over pairs from the whole view, on a feature map of a quarter the pixels at 2.
STEP_STRIDE = 1


def contrastive_loss(features: torch.Tensor, gates: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
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


def coherence_loss(rendered: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Unit features blended with weights summing to alpha have norm alpha only when they agree: pulling the
    norm up makes every Gaussian's own feature point like the pixels it is seen in (a click compares them)."""
    solid = alpha > 0.5
    ratio = rendered.norm(dim=1) / alpha.clamp_min(1e-6)
    return ((1.0 - ratio) * solid).sum() / solid.sum().clamp_min(1)


class PhaseClock:
    """Seconds per phase of a training, each taken when the device has finished the phase's work (one
    synchronisation per phase: the loops themselves never wait)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, {}
        self.last = time.perf_counter()

    def mark(self, phase: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.seconds[phase] = now - self.last
        self.last = now


def on_grid(pixels: torch.Tensor, width: int, stride: int) -> torch.Tensor:
    """The row-major pixel indices among `pixels` whose column and row are multiples of `stride`."""
    if stride == 1:
        return pixels
    return pixels[((pixels % width) % stride == 0) & ((pixels // width) % stride == 0)]


def fill_unseen(features: np.ndarray, seen: np.ndarray, means: np.ndarray, k: int = 8) -> np.ndarray:
    """Gaussians no view showed take the mean feature of their k nearest seen Gaussians."""
    if seen.all() or not seen.any():
        return features
    from ...neighbours import nearest

    idx, _ = nearest(means[seen], means[~seen], min(k, int(seen.sum())))
    filled = features.copy()
    filled[~seen] = features[seen][idx].mean(1)
    return filled


def train_features(scene, views: Sequence[View], ctx=None, device="auto", masks: list | None = None,
                   iterations: int | None = None, feature_dim: int = FEATURE_DIM, pixels_per_step: int | None = None,
                   scales_per_step: int = SCALES_PER_STEP, lr: float = 0.005, coherence: float = 1.0, sam=None, seed: int = 0,
                   save: bool = True, backend: str = "auto", step_stride: int = STEP_STRIDE) -> AffinityFeatures:
    """Train the scene's affinity features from per-view masks (given: (M, H, W) bool or (H, W) int label maps,
    −1 = none; else SAM automatic masks of the views), cache them by the scene's hash and return them.
    `backend` "gsplat" | "contributions" | "auto" (gsplat on CUDA when available); `step_stride` > 1 renders
    the contrastive steps' features at that fraction of the views' resolution (gsplat only). The result's
    `phases` holds the seconds of each phase."""
    ctx = ctx or NullContext()
    device = as_device(device)
    start_time = time.perf_counter()
    phases = PhaseClock(device)
    if not views:
        raise SagaError("no views to train the features from", hint="give the capture's images or orbit views")
    g = scene_splats(scene, device)
    ctx.progress(0.0, "preparing views")
    contributions = view_contributions(
        g, views, training_backend(device) if backend == "auto" else backend,
        progress=lambda f: (ctx.check_cancelled(), ctx.progress(0.1 * f, "compositing weights")))
    if masks is None:
        masks = sam_view_masks(scene, views, device, sam=sam, ctx=ctx)
    if len(masks) != len(views):
        raise SagaError(f"{len(masks)} mask sets for {len(views)} views")
    phases.mark("views")
    prepared = prepare_masks(masks, contributions, views, device)
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
    # onto the Gaussians by their compositing weights (per view: a depth render, then one lifting pass for the
    # association and one for all bands' segments).
    ctx.progress(0.1, "lifting the masks onto the Gaussians")
    band_scales = quantiles_t[(torch.arange(BANDS, device=device) * (SCALE_QUANTILES - 1)) // BANDS]
    band_scales = band_scales.clone()
    band_scales[0] = -float("inf")          # band 0: every pixel's smallest mask
    identities = [band_identities(vm, band_scales) if v in usable else None for v, vm in enumerate(prepared)]
    phases.mark("masks")
    knn, _ = scene_knn(scene)               # built once per scene (on the GPU when there is one), then cached
    phases.mark("knn")
    components, counts = associate(contributions, prepared, identities, usable, g.count, generator)
    phases.mark("associate")
    ctx.check_cancelled()
    segments = [max(c, 1) for c in counts]
    votes = segment_votes(contributions, prepared, identities, usable, components, segments, g.count)
    phases.mark("lift")
    lifted = segment_features(votes, segments, knn, g, band_dim, generator)
    del votes
    phases.mark("labels")
    seen = lifted.norm(dim=1) > 0
    features = band_normalise(lifted, band_dim).requires_grad_(True)
    gate = band_gate(feature_dim).to(device)
    # Contrastive fine-tuning (SAGA's loss through feature rendering); Adam only moves rows that got gradients.
    # The gate stays as set: its bands are the granularity semantics, and the masks' scales define them.
    gate.requires_grad_(False)
    optimiser = Adam([features], lr=lr)
    stride = int(step_stride)
    if stride > 1 and not isinstance(contributions[0], RasterizedView):
        raise SagaError(f"step_stride {stride} renders coarse views, which only gsplat's path does",
                        hint="use step_stride 1 on the CPU")
    step_pixels = {v: on_grid(prepared[v].candidates, views[v].width, stride) for v in usable}
    stepped = [v for v in usable if len(step_pixels[v]) > 1]
    if not stepped:
        raise SagaError(f"no view has mask pixels on a grid of stride {stride}", hint="use step_stride 1")
    for it in range(iterations):
        v = stepped[int(torch.randint(len(stepped), (1,), generator=generator))]
        vm, candidates = prepared[v], step_pixels[v]
        pick = torch.randint(len(candidates), (min(pixels, len(candidates)),), generator=generator)
        pix = candidates[pick.to(device)]
        scales, q = sample_scales(vm, pix, scales_per_step, generator, grid, quantiles_t)
        identity = pixel_identity(vm, pix, scales)
        if stride > 1:
            rendered, alpha = contributions[v].render(F.normalize(features, dim=1), pix, stride)
        else:
            rendered, alpha = contributions[v].render(F.normalize(features, dim=1), pix)
        loss = contrastive_loss(rendered, gate(q), identity) + coherence * coherence_loss(rendered, alpha)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if (it + 1) % 25 == 0 or it + 1 == iterations:
            ctx.check_cancelled()
            ctx.progress(0.3 + 0.7 * (it + 1) / iterations,
                         f"training features: step {it + 1} of {iterations}, loss {float(loss.detach()):.3f}")
    phases.mark("steps")
    result = F.normalize(features.detach(), dim=1).cpu().numpy()
    result = fill_unseen(result, seen.cpu().numpy(), scene.gaussians.means)
    affinity = AffinityFeatures(
        features=F.normalize(torch.from_numpy(result), dim=1).numpy().astype(np.float32),
        gate_state={k: v.detach().cpu().numpy() for k, v in gate.state_dict().items()},
        scale_quantiles=quantiles, iterations=iterations, seconds=time.perf_counter() - start_time,
        phases=phases.seconds)
    if save:
        affinity.save(features_path(scene))
    phases.mark("finish")
    scene.derived["saga_features"] = affinity
    return affinity


def handle_segment_train(ctx, params: dict, arrays: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """The "segment_train" request: params {ply_path, device, iterations?, views {source, path, count, width,
    height}, sam_variant?}; arrays {masks (V, H, W) int32 label maps, view_viewmats (V, 4, 4), view_Ks (V, 3, 3)}
    optional (given masks replace SAM). Result {count, iterations, seconds, cached}."""
    from ...scene_cache import load_scene
    from .. import views as views_mod

    scene = load_scene(params["ply_path"])
    device = as_device(params.get("device", "auto"))
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
        from ..sam_masks import load_sam

        sam = load_sam(params.get("sam_variant"), device, progress=lambda f, s: ctx.progress(0.0, s))
    result = train_features(scene, views, ctx, device, masks=masks, iterations=params.get("iterations"), sam=sam)
    return ({"count": scene.gaussians.count, "iterations": result.iterations, "seconds": result.seconds,
             "cached": str(features_path(scene))}, {})
