"""Robust scale + shift alignment of relative depth (or disparity) maps to the engine's rendered depth.

A monocular depth model knows shape, not units: we fit `reference ≈ s·relative + t` (in depth or in
disparity, as the model predicts) on pixels that are static, so the lifted trajectory is in scene units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import AnimateGaussiansError

DEPTH_KINDS = ("depth", "disparity")
# Pixels used per fit: the two unknowns need few; a subsample keeps RANSAC and IRLS cheap at any size.
MAX_SAMPLES = 20000
RANSAC_HYPOTHESES = 256
IRLS_ITERATIONS = 12


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

    def apply(self, relative: np.ndarray) -> np.ndarray:
        """Metric depth from a relative map; 0 where it is unknown (NaN in, a depth ≤ 0 in or out)."""
        relative = np.asarray(relative, np.float64)
        value = self.scale * relative + self.shift
        value = np.where(np.isfinite(value), value, 0.0)
        if self.kind == "depth":  # a depth map marks "unknown" with 0 (or less): keep it unknown
            return np.where((value > 0) & (relative > 0), value, 0.0).astype(np.float32)
        with np.errstate(divide="ignore"):
            return np.where(value > 1e-12, 1.0 / np.maximum(value, 1e-12), 0.0).astype(np.float32)


def _weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    sw = w.sum()
    mx, my = (w * x).sum() / sw, (w * y).sum() / sw
    var = (w * (x - mx) ** 2).sum()
    if var <= 1e-20:
        return 0.0, float(my)
    s = (w * (x - mx) * (y - my)).sum() / var
    return float(s), float(my - s * mx)


def fit_scale_shift(relative: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None,
                    kind: str = "depth", seed: int = 0) -> DepthAlignment:
    """Robustly fit the relative map to the reference depth over `mask` (pixels with reference > 0).

    RANSAC over pixel pairs finds the dominant (static) surface fit, then iteratively reweighted least
    squares with Tukey weights refines it; moving objects and depth-model failures are outliers.
    """
    if kind not in DEPTH_KINDS:
        raise ValueError(f"depth kind must be one of {DEPTH_KINDS}, got {kind!r}")
    rel = np.asarray(relative, np.float64).ravel()
    ref = np.asarray(reference, np.float64).ravel()
    ok = (ref > 0) & np.isfinite(ref) & np.isfinite(rel)
    if kind == "depth":
        ok &= rel > 0
    if mask is not None:
        ok &= np.asarray(mask, bool).ravel()
    idx = np.flatnonzero(ok)
    if idx.size < 16:
        raise DepthAlignmentError(f"only {idx.size} static pixels with rendered depth to align the depth to")
    rng = np.random.default_rng(seed)
    if idx.size > MAX_SAMPLES:
        idx = rng.choice(idx, MAX_SAMPLES, replace=False)
    # The model's map is the noisy one and the render the clean one, so the line is fitted as
    # relative = a·reference + b (noise in the regressand does not bias the slope), then inverted.
    y = rel[idx]
    x = ref[idx] if kind == "depth" else 1.0 / ref[idx]

    # RANSAC: lines through random pixel pairs, scored by the number of points within a band.
    i, j = rng.integers(0, x.size, (2, RANSAC_HYPOTHESES))
    dx = x[i] - x[j]
    good = np.abs(dx) > 1e-9 * (np.abs(x).max() + 1e-12)
    a_h = np.where(good, (y[i] - y[j]) / np.where(good, dx, 1.0), 0.0)
    b_h = y[i] - a_h * x[i]
    good &= np.abs(a_h) > 0
    lo, hi = np.percentile(y, [5, 95])
    band = 0.05 * (hi - lo) + 1e-9 * (np.abs(y).max() + 1e-12)
    chunk = max(1, (1 << 22) // max(1, x.size))
    counts = np.concatenate([(np.abs(y[None] - (a_h[k:k + chunk, None] * x[None] + b_h[k:k + chunk, None])) < band)
                             .sum(1) for k in range(0, RANSAC_HYPOTHESES, chunk)])
    counts[~good] = -1
    best = int(np.argmax(counts))
    if counts[best] < 2:
        raise DepthAlignmentError("the depth map does not vary with the scene's depth (a flat or empty map)")
    a, b = float(a_h[best]), float(b_h[best])

    # IRLS with Tukey's biweight; its cut-off follows the robust spread (MAD) of the current inliers.
    inlier = np.abs(y - (a * x + b)) < band
    sigma = band
    for _ in range(IRLS_ITERATIONS):
        r = y - (a * x + b)
        sigma = max(1.4826 * float(np.median(np.abs(r[inlier]))), 1e-6 * band)
        u = r / (4.685 * sigma)
        w = np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0)
        if (w > 0).sum() < 8:
            break
        a_new, b_new = _weighted_line(x, y, w)
        if a_new == 0.0:
            break
        a, b = a_new, b_new
        inlier = w > 0
    r = y - (a * x + b)
    inliers = np.abs(r) < 3 * sigma
    residual = float(1.4826 * np.median(np.abs(r[inliers])) / abs(a)) if inliers.any() else float("inf")
    return DepthAlignment(scale=1.0 / a, shift=-b / a, kind=kind, inlier_fraction=float(inliers.mean()),
                          residual=residual)


def align_depth_video(relative: np.ndarray, reference_depth: np.ndarray, static_mask: np.ndarray | None = None,
                      kind: str = "depth", per_frame: bool = True) -> tuple[np.ndarray, list[DepthAlignment]]:
    """Metric depth (F, H, W) float32 for a relative depth video, aligned to the first frame's rendered depth.

    `static_mask` (H, W) marks pixels that may be used (e.g. not the moving segment at rest); the object's
    pixels in later frames are rejected as outliers by the robust fit. Per-frame alignment suits
    single-image depth models (their scale drifts frame to frame); `per_frame=False` fits frame 0 only and
    applies it to all (video depth models with a consistent scale).
    """
    rel = np.asarray(relative, np.float32)
    if rel.ndim != 3 or rel.shape[1:] != np.asarray(reference_depth).shape:
        raise ValueError(f"relative depth {rel.shape} does not match the reference {np.shape(reference_depth)}")
    alignments: list[DepthAlignment] = []
    out = np.empty_like(rel)
    for f in range(rel.shape[0]):
        if per_frame or f == 0:
            alignment = fit_scale_shift(rel[f], reference_depth, static_mask, kind, seed=f)
        alignments.append(alignment)
        out[f] = alignment.apply(rel[f])
    return out, alignments
