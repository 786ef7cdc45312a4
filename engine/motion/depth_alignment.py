"""Robust scale + shift alignment of relative depth (or disparity) maps to the engine's rendered depth.

A monocular depth model knows shape, not units: we fit `reference ≈ s·relative + t` (in depth or in
disparity, as the model predicts) on pixels that are static, so the lifted trajectory is in scene units.

All frames of a video are fitted at once in torch, on the request's device: the reference and the static
mask are shared, so the frames share one sample of pixels and differ only in which of them are valid. A
per-frame loop of small numpy fits cost seconds per request; batched, the whole video is a few tensor ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import AnimateGaussiansError

DEPTH_KINDS = ("depth", "disparity")
# Pixels used per fit: the two unknowns need few; a subsample keeps RANSAC and IRLS cheap at any size.
MAX_SAMPLES = 20000
RANSAC_HYPOTHESES = 256
IRLS_ITERATIONS = 12
# Residuals (float64) in one RANSAC scoring chunk: near the cache on the CPU; on a GPU few launches in 128 MiB.
_CPU_CHUNK = 1 << 20
_GPU_CHUNK = 1 << 24

Array = np.ndarray | torch.Tensor


class DepthAlignmentError(AnimateGaussiansError):
    """Too few static pixels with depth to align a depth map to the scene."""

    hint = "make sure the object does not fill the whole frame and the camera sees part of the scene around it"


@dataclass
class DepthAlignment:
    """metric = s·relative + t (kind "depth"), or 1 / (s·relative + t) (kind "disparity")."""

    scale: float
    shift: float
    kind: str
    inlier_fraction: float
    residual: float           # robust (MAD-based) residual of the fit, in the fitted space

    def apply(self, relative: Array) -> np.ndarray:
        """Metric depth from a relative map; 0 where it is unknown (NaN in, a depth ≤ 0 in or out)."""
        return _apply(_tensor(relative, torch.float64, None), self.scale, self.shift, self.kind).cpu().numpy()


def _tensor(a: Array, dtype: torch.dtype, device: torch.device | str | None) -> torch.Tensor:
    if not isinstance(a, torch.Tensor):
        a = np.asarray(a)
        if not (a.flags.writeable and a.flags.c_contiguous):   # from_numpy shares memory (and warns if read-only)
            a = np.array(a)
        a = torch.from_numpy(a)
    return a.to(device=a.device if device is None else device, dtype=dtype)


def _apply(relative: torch.Tensor, scale, shift, kind: str) -> torch.Tensor:
    """float32 metric depth of `relative` (any shape; scale and shift broadcast against it)."""
    relative = relative.double()
    value = scale * relative + shift
    value = torch.where(torch.isfinite(value), value, 0.0)
    if kind == "depth":  # a depth map marks "unknown" with 0 (or less): keep it unknown
        return torch.where((value > 0) & (relative > 0), value, 0.0).float()
    return torch.where(value > 1e-12, 1.0 / value.clamp_min(1e-12), 0.0).float()


def _masked_median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Median of each row over `mask` (NaN for an empty row), as numpy's: an even count averages the middle two."""
    lower = torch.where(mask, values, torch.nan).nanmedian(1).values
    count = mask.sum(1)
    # nanmedian gives the lower middle value; the upper one is it again if it repeats past the middle,
    # else the smallest value above it. A selection each, where a sort per row would cost several times more.
    above = torch.where(mask & (values > lower[:, None]), values, torch.inf).amin(1)
    upper = torch.where((mask & (values <= lower[:, None])).sum(1) > count // 2, lower, above)
    return torch.where(count % 2 == 0, (lower + upper) / 2, lower)


def _weighted_line(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the weighted least-squares line y = a·x + b; a = 0 where x does not vary under the weights."""
    sw = w.sum(1, keepdim=True)
    mx, my = (w * x).sum(1, keepdim=True) / sw, (w * y).sum(1, keepdim=True) / sw
    dx = x - mx
    var = (w * dx * dx).sum(1)
    flat = var <= 1e-20
    a = torch.where(flat, 0.0, (w * dx * (y - my)).sum(1) / torch.where(flat, 1.0, var))
    return a, my[:, 0] - a * mx[:, 0]


def _ransac_counts(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                   band: torch.Tensor) -> torch.Tensor:
    """(F, R) number of samples within `band` of each hypothesis line (NaN samples never count)."""
    frames, hypotheses = a.shape
    samples = x.numel()
    budget = _CPU_CHUNK if x.device.type == "cpu" else _GPU_CHUNK
    hc = min(hypotheses, max(1, budget // samples))
    fc = max(1, budget // (hc * samples))
    # One buffer reused by every chunk: fresh allocations of this size cost more than the arithmetic.
    residual = torch.empty((min(fc, frames), hc, samples), dtype=x.dtype, device=x.device)
    counts = torch.empty((frames, hypotheses), dtype=x.dtype, device=x.device)
    for f0 in range(0, frames, fc):
        f1 = min(frames, f0 + fc)
        for h0 in range(0, hypotheses, hc):
            h1 = min(hypotheses, h0 + hc)
            r = residual[:f1 - f0, :h1 - h0]
            torch.mul(a[f0:f1, h0:h1, None], x, out=r)
            r.add_(b[f0:f1, h0:h1, None]).sub_(y[f0:f1, None, :]).abs_()
            # In place to 1.0 / 0.0 and a float sum (exact for counts): a bool mask is several times slower.
            counts[f0:f1, h0:h1] = r.lt_(band[f0:f1, None, None]).sum(-1)
    return counts.long()


@torch.no_grad()
def _fit_frames(relative: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor | None, kind: str, seed: int,
                name_frames: bool) -> list[DepthAlignment]:
    """Fit every row of `relative` (F, P) to the flat `reference` (P,) over `mask`, all rows at once.

    RANSAC over pixel pairs finds the dominant (static) surface fit, then iteratively reweighted least
    squares with Tukey weights refines it; moving objects and depth-model failures are outliers. Frame f
    draws its hypotheses from seed + f, so a frame fitted alone with that seed gets the same hypotheses.
    """
    if kind not in DEPTH_KINDS:
        raise ValueError(f"depth kind must be one of {DEPTH_KINDS}, got {kind!r}")
    device = relative.device

    def label(f: int) -> str:
        return f"frame {f}: " if name_frames else ""

    valid = torch.isfinite(relative)
    if kind == "depth":
        valid &= relative > 0
    ok = (reference > 0) & torch.isfinite(reference) & valid.any(0)   # pixels no frame can use would waste samples
    if mask is not None:
        ok &= mask
    idx = torch.nonzero(ok)[:, 0]
    generator = torch.Generator().manual_seed(seed)
    if idx.numel() > MAX_SAMPLES:
        idx = idx[torch.randperm(idx.numel(), generator=generator)[:MAX_SAMPLES].to(device)]
    valid = valid[:, idx]
    count = valid.sum(1)
    for f, n in enumerate(count.tolist()):
        if n < 16:
            raise DepthAlignmentError(f"{label(f)}only {n} static pixels with rendered depth to align the depth to")
    # The model's map is the noisy one and the render the clean one, so the line is fitted as
    # relative = a·reference + b (noise in the regressand does not bias the slope), then inverted.
    ref = reference[idx].double()
    x = ref if kind == "depth" else 1.0 / ref
    y = torch.where(valid, relative[:, idx].double(), torch.nan)   # NaN: fails every comparison, so never counts
    y0 = torch.nan_to_num(y, nan=0.0)                              # for sums, where the weight is 0 anyway
    x_max = torch.where(valid, x.abs(), 0.0).amax(1)
    y_max = torch.where(valid, y0.abs(), 0.0).amax(1)

    # RANSAC: lines through random pixel pairs (of each frame's valid ones), scored by the points within a band.
    draws = torch.stack([torch.rand((2, RANSAC_HYPOTHESES), generator=torch.Generator().manual_seed(seed + f),
                                    dtype=torch.float64) for f in range(len(count))]).to(device)
    nth = (draws * count[:, None, None]).long().clamp_max(count[:, None, None] - 1).flatten(1)
    pick = torch.searchsorted(valid.cumsum(1), nth + 1)                # position of each frame's nth valid sample
    xs, ys = x[pick].view(-1, 2, RANSAC_HYPOTHESES), y.gather(1, pick).view(-1, 2, RANSAC_HYPOTHESES)
    dx = xs[:, 0] - xs[:, 1]
    good = dx.abs() > 1e-9 * (x_max[:, None] + 1e-12)
    a_h = torch.where(good, (ys[:, 0] - ys[:, 1]) / torch.where(good, dx, 1.0), 0.0)
    b_h = ys[:, 0] - a_h * xs[:, 0]
    good &= a_h.abs() > 0
    lo, hi = torch.nanquantile(y, torch.tensor([0.05, 0.95], dtype=torch.float64, device=device), dim=1)
    band = 0.05 * (hi - lo) + 1e-9 * (y_max + 1e-12)
    counts = torch.where(good, _ransac_counts(x, y, a_h, b_h, band), -1)
    best_count, best = counts.max(1)
    for f, n in enumerate(best_count.tolist()):
        if n < 2:
            raise DepthAlignmentError(f"{label(f)}the depth map does not vary with the scene's depth "
                                      "(a flat or empty map)")
    a, b = a_h.gather(1, best[:, None])[:, 0], b_h.gather(1, best[:, None])[:, 0]

    # IRLS with Tukey's biweight; its cut-off follows the robust spread (MAD) of the current inliers. A frame
    # that runs out of support keeps its last line (and the spread it last measured), the others go on.
    inlier = (y - (a[:, None] * x + b[:, None])).abs() < band[:, None]
    sigma = band
    active = torch.ones_like(good[:, 0])
    for _ in range(IRLS_ITERATIONS):
        r = y - (a[:, None] * x + b[:, None])
        spread = (1.4826 * _masked_median(r.abs(), inlier)).clamp_min(1e-6 * band)
        sigma = torch.where(active, spread, sigma)
        u = r / (4.685 * sigma[:, None])
        w = torch.where(u.abs() < 1, (1 - u * u) ** 2, 0.0)
        active &= (w > 0).sum(1) >= 8
        a_new, b_new = _weighted_line(x, y0, w)
        active &= a_new != 0
        a, b = torch.where(active, a_new, a), torch.where(active, b_new, b)
        inlier = torch.where(active[:, None], w > 0, inlier)
    r = y - (a[:, None] * x + b[:, None])
    inliers = r.abs() < 3 * sigma[:, None]
    spread = 1.4826 * _masked_median(r.abs(), inliers) / a.abs()
    residual = torch.where(inliers.any(1), spread, torch.inf)
    stats = torch.stack([1.0 / a, -b / a, inliers.sum(1) / count.double(), residual], 1).cpu().tolist()
    return [DepthAlignment(scale=s, shift=t, kind=kind, inlier_fraction=fraction, residual=res)
            for s, t, fraction, res in stats]


def fit_scale_shift(relative: Array, reference: Array, mask: Array | None = None,
                    kind: str = "depth", seed: int = 0) -> DepthAlignment:
    """Robustly fit the relative map to the reference depth over `mask` (pixels with reference > 0).

    The one-frame case of the video fit (see `_fit_frames`), on the device `relative` is on.
    """
    rel = _tensor(relative, torch.float64, None).reshape(1, -1)
    ref = _tensor(reference, torch.float64, rel.device).reshape(-1)
    m = None if mask is None else _tensor(mask, torch.bool, rel.device).reshape(-1)
    return _fit_frames(rel, ref, m, kind, seed, name_frames=False)[0]


def align_depth_video(relative: Array, reference_depth: Array, static_mask: Array | None = None,
                      kind: str = "depth", per_frame: bool = True, device: torch.device | str | None = None
                      ) -> tuple[np.ndarray, list[DepthAlignment]]:
    """Metric depth (F, H, W) float32 for a relative depth video, aligned to the first frame's rendered depth.

    `static_mask` (H, W) marks pixels that may be used (e.g. not the moving segment at rest); the object's
    pixels in later frames are rejected as outliers by the robust fit. Per-frame alignment suits
    single-image depth models (their scale drifts frame to frame); `per_frame=False` fits frame 0 only and
    applies it to all (video depth models with a consistent scale). The fit runs on `device` (default: where
    `relative` is, the CPU for numpy input). Frame f is fitted as `fit_scale_shift(..., seed=f)` would fit it
    alone, but from the video's one sample of pixels (drawn with seed 0) where there are over MAX_SAMPLES.
    """
    rel = _tensor(relative, torch.float32, device)
    ref_shape = tuple(np.shape(reference_depth))
    if rel.ndim != 3 or tuple(rel.shape[1:]) != ref_shape:
        raise ValueError(f"relative depth {tuple(rel.shape)} does not match the reference {ref_shape}")
    if len(rel) == 0:
        return np.zeros(rel.shape, np.float32), []
    ref = _tensor(reference_depth, torch.float64, rel.device).reshape(-1)
    m = None if static_mask is None else _tensor(static_mask, torch.bool, rel.device).reshape(-1)
    fitted = rel if per_frame else rel[:1]
    alignments = _fit_frames(fitted.reshape(len(fitted), -1), ref, m, kind, 0, name_frames=True)
    if not per_frame:
        alignments = alignments * len(rel)
    params = torch.tensor([[a.scale, a.shift] for a in alignments], dtype=torch.float64, device=rel.device)
    out = torch.empty_like(rel)
    step = max(1, _GPU_CHUNK // max(1, rel[0].numel()))      # float64 temporaries of a long video add up
    with torch.no_grad():
        for f0 in range(0, len(rel), step):
            p = params[f0:f0 + step, :, None, None]
            out[f0:f0 + step] = _apply(rel[f0:f0 + step], p[:, 0], p[:, 1], kind)
    return out.cpu().numpy(), alignments
