"""What a video frame is compared on when a rigid motion is fitted: the segment seen from a moved camera over
the static background, at a working scale, through a colour transfer, on a blurred image pyramid.

A user's video was not made by our renderer: its splat footprints, antialiasing, colour response and
compression differ. Blurred, downsampled images and a per-channel gain + bias (fitted on the first frame,
where the pose is known) make those differences vanish, so the fit moves the object only to explain motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as tF

from ..render.rasterizer import render_gaussians
from .lifting import Background, LiftTargets, SegmentGaussians

_BINOMIAL = torch.tensor([1.0, 2.0, 1.0]) / 4.0


def blur(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) with a separable 3×3 binomial blur (edges replicated)."""
    c = images.shape[1]
    k = _BINOMIAL.to(images)
    x = tF.pad(images, (1, 1, 1, 1), mode="replicate")
    x = tF.conv2d(x, k.view(1, 1, 1, 3).repeat(c, 1, 1, 1), groups=c)
    return tF.conv2d(x, k.view(1, 1, 3, 1).repeat(c, 1, 1, 1), groups=c)


def pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Blurred levels of (B, C, H, W): the blurred image, then halved `levels − 1` times (while ≥ 4 pixels)."""
    out = [blur(images)]
    for _ in range(levels - 1):
        if min(out[-1].shape[-2:]) < 8:
            break
        out.append(blur(tF.avg_pool2d(out[-1], 2, ceil_mode=True)))
    return out


def render_views(seg: SegmentGaussians, viewmats: torch.Tensor, K: torch.Tensor, width: int, height: int,
                 backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The segment from B cameras (B, 4, 4): rgb (B, H, W, 3) premultiplied, depth (B, H, W), alpha (B, H, W).
    On gsplat one batched call (the cameras are the batch); on the CPU one render each."""
    if backend == "gsplat":
        from gsplat import rasterization

        render, alpha, _ = rasterization(seg.means, seg.quats, seg.scales, seg.opacities, seg.colors, viewmats,
                                         K[None].expand(len(viewmats), 3, 3), width, height, near_plane=0.01,
                                         render_mode="RGB+ED")
        return render[..., :3], render[..., 3], alpha[..., 0]
    outs = [render_gaussians(seg.means, seg.quats, seg.scales, seg.opacities, seg.colors, v, K, width, height,
                             backend="cpu") for v in viewmats]
    return (torch.stack([o.rgb for o in outs]), torch.stack([o.depth for o in outs]),
            torch.stack([o.alpha for o in outs]))


@dataclass
class Window:
    """A crop of the working-scale image: rows y0:y1, columns x0:x1, and the intrinsics of the crop."""

    x0: int
    y0: int
    x1: int
    y1: int
    K: torch.Tensor


class FrameModel:
    """The targets and the static background at the working scale (every `scale`-th pixel, area-averaged),
    and the data loss of poses: colour on a blurred pyramid through the colour transfer, Charbonnier depth
    in object sizes, and the silhouette when masks are given."""

    def __init__(self, seg: SegmentGaussians, bg: Background, targets: LiftTargets, K: np.ndarray, scale: int,
                 size: float, backend: str, levels: int = 3, depth_weight: float = 1.0, mask_weight: float = 1.0):
        self.seg, self.size, self.backend, self.levels = seg, size, backend, levels
        self.depth_weight, self.mask_weight = depth_weight, mask_weight
        s = scale
        self.scale = s

        def pool(x: torch.Tensor) -> torch.Tensor:          # (F, H, W, C) -> area-averaged by s
            return x if s == 1 else tF.avg_pool2d(x.permute(0, 3, 1, 2), s, ceil_mode=True).permute(0, 2, 3, 1)

        self.rgb = pool(targets.rgb)
        self.height, self.width = self.rgb.shape[1:3]
        # Depth is not averaged across edges (a mix of object and floor is neither): every s-th sample.
        self.depth = None if targets.depth is None else targets.depth[:, ::s, ::s][:, :self.height, :self.width]
        self.masks = None if targets.masks is None else pool(targets.masks[..., None])[..., 0]
        self.bg_rgb = pool(bg.rgb[None])[0]
        self.bg_alpha = pool(bg.alpha[None, ..., None])[0, ..., 0]
        self.bg_depth = bg.depth[::s, ::s][:self.height, :self.width]
        Ks = np.array(K, np.float64)
        Ks[:2] /= s
        self.K = Ks
        device = self.rgb.device
        self.gain = torch.ones(3, device=device)
        self.bias = torch.zeros(3, device=device)
        self.depth_bias = 0.0

    def window(self, points: np.ndarray, viewmats: np.ndarray, margin: float) -> Window:
        """The crop holding the points seen from every camera of `viewmats` (B, 4, 4), plus a margin."""
        cam = np.einsum("bij,nj->bni", viewmats[:, :3, :3], points) + viewmats[:, None, :3, 3]
        z = np.maximum(cam[..., 2], 1e-6)
        u = (cam[..., 0] / z * self.K[0, 0] + self.K[0, 2]).ravel()
        v = (cam[..., 1] / z * self.K[1, 1] + self.K[1, 2]).ravel()
        u0, u1, v0, v1 = np.percentile(u, 0.5), np.percentile(u, 99.5), np.percentile(v, 0.5), np.percentile(v, 99.5)
        pad = margin * max(u1 - u0, v1 - v0) + 4
        x0 = int(np.clip(np.floor(u0 - pad), 0, self.width - 1))
        x1 = int(np.clip(np.ceil(u1 + pad), x0 + 1, self.width))
        y0 = int(np.clip(np.floor(v0 - pad), 0, self.height - 1))
        y1 = int(np.clip(np.ceil(v1 + pad), y0 + 1, self.height))
        Kc = self.K.copy()
        Kc[0, 2] -= x0
        Kc[1, 2] -= y0
        return Window(x0, y0, x1, y1, torch.tensor(Kc, dtype=torch.float32, device=self.rgb.device))

    def composite(self, viewmats: torch.Tensor, win: Window):
        """(rgb, depth, alpha) of the segment from each camera over the background, in the window."""
        rgb, depth, alpha = render_views(self.seg, viewmats, win.K, win.x1 - win.x0, win.y1 - win.y0,
                                         self.backend)
        ys, xs = slice(win.y0, win.y1), slice(win.x0, win.x1)
        rgb = rgb + self.bg_rgb[ys, xs] * (1 - alpha[..., None])
        depth = depth * alpha + self.bg_depth[ys, xs] * (1 - alpha)
        return rgb, depth, alpha

    def target_pyramid(self, frames: torch.Tensor, win: Window) -> list[torch.Tensor]:
        t = self.rgb[frames, win.y0:win.y1, win.x0:win.x1].permute(0, 3, 1, 2)
        return pyramid(t, self.levels)

    def fit_colour_transfer(self, viewmat: torch.Tensor, win: Window) -> None:
        """Gain and bias per channel taking our render of the rest pose to the first frame (least squares on
        the blurred window; the gain is kept within [0.5, 2] so a dark frame cannot flatten the image)."""
        with torch.no_grad():
            rgb, _, _ = self.composite(viewmat[None], win)
            ours = blur(rgb.permute(0, 3, 1, 2))[0].reshape(3, -1)
            theirs = self.target_pyramid(torch.zeros(1, dtype=torch.long, device=rgb.device), win)[0][0]
            theirs = theirs.reshape(3, -1)
            mo, mt = ours.mean(1), theirs.mean(1)
            var = ((ours - mo[:, None]) ** 2).mean(1)
            cov = ((ours - mo[:, None]) * (theirs - mt[:, None])).mean(1)
            gain = torch.where(var > 1e-6, cov / var.clamp_min(1e-6), torch.ones_like(var)).clamp(0.5, 2.0)
            self.gain, self.bias = gain, mt - gain * mo

    def fit_footprint(self, viewmat: torch.Tensor, win: Window, factors=(0.25, 0.32, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.12, 1.25, 1.4)
                      ) -> float:
        """Scale the segment's splats by the factor under which our render of the rest pose best matches the
        first frame (a parabola through the best of `factors` and its neighbours). Another renderer's
        footprints are wider or narrower than ours; left alone, the fit would move the object along the view
        ray to change its apparent size."""
        frame = torch.zeros(1, dtype=torch.long, device=self.rgb.device)
        target = self.target_pyramid(frame, win)
        base = self.seg.scales
        losses = []
        with torch.no_grad():
            for k in factors:
                self.seg.scales = base * k
                losses.append(float(self.data_loss(viewmat[None], frame, win, target)[0][0]))
        i = int(np.clip(np.argmin(losses), 1, len(factors) - 2))
        x, y = np.asarray(factors[i - 1:i + 2]), np.asarray(losses[i - 1:i + 2])
        a, b, _ = np.polyfit(x, y, 2)
        k = float(np.clip(-b / (2 * a), x[0], x[2])) if a > 0 else float(factors[int(np.argmin(losses))])
        self.seg.scales = base * k
        return k

    def fit_depth_offset(self, viewmat: torch.Tensor, win: Window) -> float:
        """How much nearer or farther the video's depth puts the segment than our render does at rest (median
        over the segment's pixels of the first frame); the depth term then compares the segment's depth
        minus it. Another renderer (or a depth model) blends an object's front and back surfaces otherwise."""
        if self.depth is None:
            return 0.0
        with torch.no_grad():
            _, depth, alpha = self.composite(viewmat[None], win)
            target = self.depth[0, win.y0:win.y1, win.x0:win.x1]
            on = (alpha[0] > 0.5) & (target > 0) & (depth[0] > 0)
            if int(on.sum()) >= 4:
                self.depth_bias = float((depth[0] - target)[on].median())
        return self.depth_bias

    def residuals(self, viewmats: torch.Tensor, frames: torch.Tensor, win: Window,
                  target: list[torch.Tensor] | None = None, colour_soft: float = 0.0) -> "Residuals":
        """The data terms of S sets of B poses (viewmats (S, B, 4, 4)) against `frames` (B,), as residual
        vectors: a pose and its perturbed copies in one render, so a Jacobian costs no backward pass.
        `colour_soft` rounds the colour's L1 near zero (Charbonnier), which caps the reweighted least squares'
        weight of a residual that is already small (|r|'s 1/|r| has no cap, and a few pixels that match
        exactly would otherwise outweigh the rest); the losses reported and compared elsewhere keep plain L1."""
        S, B = viewmats.shape[:2]
        rgb, depth, alpha = self.composite(viewmats.reshape(S * B, 4, 4), win)
        ours = pyramid((rgb * self.gain + self.bias).permute(0, 3, 1, 2), self.levels)
        target = target if target is not None else self.target_pyramid(frames, win)
        values, weights, spans, start = [], [], {}, 0

        def add(name: str, r: torch.Tensor, w: torch.Tensor, soft: float) -> None:
            nonlocal start
            values.append(r)
            weights.append(w)
            spans[name] = (slice(start, start + r.shape[-1]), soft)
            start += r.shape[-1]

        # Colour: the mean absolute difference per level, averaged over the levels.
        for level, (o, t) in enumerate(zip(ours, target)):
            r = o.reshape(S, B, -1) - t.reshape(1, B, -1)
            add(f"colour{level}", r, r.new_full((B, r.shape[-1]), 1.0 / (len(ours) * r.shape[-1])), colour_soft)
        h, w = rgb.shape[1:3]
        ys, xs = slice(win.y0, win.y1), slice(win.x0, win.x1)
        if self.depth is not None:
            # Charbonnier in object sizes over the pixels where both depths are known (at the first set's pose).
            target_depth = self.depth[frames, ys, xs]
            depth, seg_alpha = depth.reshape(S, B, h, w), alpha.reshape(S, B, h, w)
            d = (depth - target_depth - self.depth_bias * seg_alpha) / self.size
            valid = ((target_depth > 0) & (depth[0] > 0)).float().reshape(B, -1)
            add("depth", d.reshape(S, B, -1),
                self.depth_weight * valid / valid.sum(1, keepdim=True).clamp_min(1.0), 1e-2)
        if self.masks is not None:
            r = (alpha.reshape(S, B, h, w) - self.masks[frames, ys, xs]).reshape(S, B, -1)
            add("mask", r, r.new_full((B, r.shape[-1]), self.mask_weight / r.shape[-1]), 0.0)
        return Residuals(torch.cat(values, -1), torch.cat(weights, -1), spans)

    def data_loss(self, viewmats: torch.Tensor, frames: torch.Tensor, win: Window,
                  target: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
        """(B,) data loss of the segment seen from `viewmats` (B, 4, 4) against `frames` (B,), and its terms."""
        return self.residuals(viewmats[None], frames, win, target).losses()


@dataclass
class Residuals:
    """Data terms as residuals: the loss of pose b in set s is Σ_m weights[b, m] · ρ(values[s, b, m]), with
    ρ(r) = sqrt(r² + soft²) − soft over each term's span of columns (|r| where soft is 0)."""

    values: torch.Tensor                        # (S, B, M)
    weights: torch.Tensor                       # (B, M), from the first set's pose
    spans: dict[str, tuple[slice, float]]       # term -> (columns, soft)

    def losses(self, s: int = 0) -> tuple[torch.Tensor, dict]:
        """(B,) losses of set `s` and their terms (colour, depth, mask)."""
        terms: dict[str, torch.Tensor] = {}
        for name, (cols, soft) in self.spans.items():
            r = self.values[s, :, cols]
            rho = (torch.sqrt(r * r + soft * soft) - soft) if soft else r.abs()
            key = "colour" if name.startswith("colour") else name
            part = (self.weights[:, cols] * rho).sum(1)
            terms[key] = terms[key] + part if key in terms else part
        loss = sum(terms.values())
        return loss, terms

    def slope_and_curvature(self, floor: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M) each, at the first set: the loss's derivative in each residual, weight · ρ'(r), and the
        curvature of iteratively reweighted least squares, weight · ρ'(r) / r: the quadratic through r that
        touches ρ there and lies above it, so a step that lowers it lowers the loss too. ρ'' would be the
        exact curvature, but it vanishes on outliers (a silhouette edge in depth) that still pull through
        their slope, and the steps overshoot. For |r|, ρ'/r is 1/|r|, held below 1/floor."""
        slope, curvature = torch.empty_like(self.weights), torch.empty_like(self.weights)
        for cols, soft in self.spans.values():
            r, w = self.values[0, :, cols], self.weights[:, cols]
            if soft:
                root = torch.sqrt(r * r + soft * soft)
                slope[:, cols] = w * r / root
                curvature[:, cols] = w / root
            else:
                slope[:, cols] = w * torch.sign(r)
                curvature[:, cols] = w / r.abs().clamp_min(floor)
        return slope, curvature
