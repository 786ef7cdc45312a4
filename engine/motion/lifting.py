"""Lifting a motion video to 3D: the pieces shared with the rigid fit (rigid_lifting.py), and the skinned fit
of K control handles: each frame fitted by differentiable rendering of the deformed segment over the static
rest of the scene, against the frame's colour, aligned depth and (when given) silhouette.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from cuda_ext.reference import _quat_multiply as quat_multiply  # the one torch Hamilton product

from ..adam import AdamMoments, cosine_step
from ..render.cpu_rasterizer import quat_to_rotmat
from ..render.rasterizer import render_gaussians
from .lift_settings import LIFT_EFFORTS, LiftingError, check_lift_settings

Progress = Callable[[float, str], None]


@dataclass
class SegmentGaussians:
    """The segment's Gaussians at rest, file frame, on the fitting device. `colors` are fixed RGB (the SH
    evaluated towards the camera at rest: view dependence barely changes over a short motion)."""

    means: torch.Tensor       # (N, 3)
    quats: torch.Tensor       # (N, 4) wxyz, normalised
    scales: torch.Tensor      # (N, 3) linear
    opacities: torch.Tensor   # (N,)
    colors: torch.Tensor      # (N, 3)

    @property
    def count(self) -> int:
        return int(self.means.shape[0])

    def center(self) -> torch.Tensor:
        w = self.opacities[:, None]
        return (self.means * w).sum(0) / w.sum().clamp_min(1e-12)

    def size(self) -> float:
        """Robust longest bounding-box edge (1st-99th percentile), the unit of every tolerance."""
        m = self.means.detach().cpu().numpy()
        lo, hi = np.percentile(m, [1, 99], axis=0) if len(m) > 20 else (m.min(0), m.max(0))
        return float(max((hi - lo).max(), 1e-6))


@dataclass
class Background:
    """The static rest of the scene rendered once from the camera: colour, expected depth, alpha."""

    rgb: torch.Tensor         # (H, W, 3)
    depth: torch.Tensor       # (H, W), 0 where nothing
    alpha: torch.Tensor       # (H, W)


@dataclass
class LiftOptions:
    iterations: int = 20              # non-rigid: Adam steps per frame (the first after the rest pose: 2×)
    lr: float = 0.02                  # non-rigid: Adam step, radians and object sizes
    colour_weight: float = 1.0
    depth_weight: float = 1.0         # on |Δdepth| in object sizes
    mask_weight: float = 1.0
    margin: float = 0.35              # crop margin around the object, in its projected size
    arap_weight: float = 0.05         # non-rigid: as-rigid-as-possible between neighbouring handles (robust)
    smooth_weight: float = 2.0        # non-rigid: stay near the previous frame where the video says little
    nonrigid_rigid_init: bool = True  # non-rigid: also try the rigid fit of the frame as a start
    color_skinning: float = 2.0       # non-rigid: weight of colour difference in the skinning distance (0: off)
    backend: str = "auto"
    # Rigid (engine/motion/rigid_lifting.py): the fit's stand-in, scale, priors and stopping.
    proxy_gaussians: int = 0          # the segment is fitted through at most this many (0: 500 CPU, 50000 CUDA)
    working_pixels: float = 0.0       # compare at the pixel step where the segment spans this (0: 20 CPU, 160 CUDA)
    smooth_prior: float = 3.0         # on second differences of the pose (radians, object sizes)
    ray_prior: float = 0.5            # without depth: on motion along the camera's depth axis (object sizes)
    turn_prior: float = 0.01          # on the change of rotation per frame (radians), for a textured object
    textureless_turn_prior: float = 1.0   # the same for an object of one flat colour (interpolated by texture)
    bias_prior: float = 0.05          # on frame 0's pose (the video's source against our render; radians, sizes)
    tracking_steps: int = 4           # Levenberg-Marquardt evaluations per frame when tracking (frames 0, 1: 2×)
    tracking_tolerance: float = 0.1   # tracking a frame stops when a step moves it less (working pixels)
    refine_steps: int = 8             # joint evaluations of all frames under the priors (0: off)
    refine_tolerance: float = 0.01    # ... stopping when a step moves no frame more (working pixels)
    colour_soft: float = 0.03         # the solvers' colour L1 is Charbonnier with this softness (0-1 colour)

    @classmethod
    def from_request(cls, lifting: dict | None, backend: str = "auto") -> "LiftOptions":
        """The options of an animate request's `options.lifting`: any field above by name, and the two the
        panel and the batch offer an artist: `effort` (one of LIFT_EFFORTS: how many solver steps the fit may
        take) and `smoothness` (a factor on the smoothness priors, rigid and non-rigid; 0 follows every frame
        of the video, higher holds a shaky video to a steadier path). A field named too wins over effort."""
        lifting = dict(lifting or {})
        effort, smoothness = str(lifting.pop("effort", "default")), lifting.pop("smoothness", 1.0)
        if not isinstance(smoothness, (int, float)) or isinstance(smoothness, bool):
            raise LiftingError(f"lifting smoothness must be a number, got {smoothness!r}")
        check_lift_settings(effort, float(smoothness))
        fields = cls.__dataclass_fields__
        unknown = sorted(set(lifting) - set(fields) | ({"backend"} & set(lifting)))
        if unknown:
            raise LiftingError(f"unknown lifting options {unknown}; known: effort, smoothness, "
                               f"{', '.join(k for k in fields if k != 'backend')}")
        values = {**LIFT_EFFORTS[effort],
                  "smooth_prior": cls.smooth_prior * smoothness, "smooth_weight": cls.smooth_weight * smoothness}
        values.update(lifting)
        return cls(backend=backend, **values)


@dataclass
class LiftTargets:
    """What each frame shows, on the fitting device: colour in [0, 1], metric depth (0 = unknown), masks."""

    rgb: torch.Tensor                     # (F, H, W, 3)
    depth: torch.Tensor | None = None     # (F, H, W)
    masks: torch.Tensor | None = None     # (F, H, W) in [0, 1], the segment's silhouette


@dataclass
class RigidFit:
    transforms: np.ndarray                          # (F, 4, 4) float64, x_f = T_f @ x_rest, T_0 = I
    residuals: dict = field(default_factory=dict)   # per-frame losses: colour, depth, mask, total
    calibration: dict = field(default_factory=dict) # how our render was matched to the video (rigid_lifting)


@dataclass
class NonRigidFit:
    handle_rest: np.ndarray                         # (K, 3)
    handle_transforms: np.ndarray                   # (F, K, 4, 4)
    weights: np.ndarray                             # (N, K) float32, rows sum to 1
    transforms: np.ndarray                          # (F, 4, 4) the best rigid fit of each frame
    residuals: dict = field(default_factory=dict)


# ---------------------------------------------------------------- rotations (differentiable, torch)

def axis_angle_to_quat(omega: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors -> (..., 4) unit wxyz quaternions (smooth through zero)."""
    theta = torch.sqrt((omega * omega).sum(-1, keepdim=True) + 1e-12)
    half = 0.5 * theta
    return torch.cat([torch.cos(half), omega * (torch.sin(half) / theta)], dim=-1)


def params_to_matrix(params: np.ndarray, center: np.ndarray, size: float) -> np.ndarray:
    """(…, 6) [rotation vector, translation in sizes] about `center` -> (…, 4, 4) x' = R (x − c) + c + t."""
    p = torch.as_tensor(np.asarray(params, np.float64))
    R = quat_to_rotmat(axis_angle_to_quat(p[..., :3])).numpy()
    c = np.asarray(center, np.float64)
    out = np.zeros(p.shape[:-1] + (4, 4))
    out[..., :3, :3] = R
    out[..., :3, 3] = c - R @ c + p[..., 3:].numpy() * size
    out[..., 3, 3] = 1.0
    return out


def kabsch(rest: np.ndarray, moved: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The rigid (4, 4) T minimising Σ w ‖T·rest − moved‖² (no scale, det +1)."""
    w = np.ones(len(rest)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    a, b = np.asarray(rest, np.float64), np.asarray(moved, np.float64)
    ca, cb = w @ a, w @ b
    H = (a - ca).T @ ((b - cb) * w[:, None])
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(Vt.T @ U.T)) or 1.0
    R = Vt.T @ np.diag([1.0, 1.0, d]) @ U.T
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = cb - R @ ca
    return T


# ---------------------------------------------------------------- rendering the model of a frame

@dataclass
class _Crop:
    x0: int
    y0: int
    width: int
    height: int
    K: torch.Tensor


def _crop_around(points: np.ndarray, viewmat: np.ndarray, K: np.ndarray, width: int, height: int,
                 margin: float, device) -> _Crop:
    """The image window holding the projected points plus a margin (the fit never needs pixels far away)."""
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = np.maximum(cam[:, 2], 1e-6)
    u = cam[:, 0] / z * K[0, 0] + K[0, 2]
    v = cam[:, 1] / z * K[1, 1] + K[1, 2]
    u0, u1, v0, v1 = np.percentile(u, 0.5), np.percentile(u, 99.5), np.percentile(v, 0.5), np.percentile(v, 99.5)
    pad = margin * max(u1 - u0, v1 - v0) + 8
    x0 = int(np.clip(np.floor(u0 - pad), 0, width - 1))
    x1 = int(np.clip(np.ceil(u1 + pad), x0 + 1, width))
    y0 = int(np.clip(np.floor(v0 - pad), 0, height - 1))
    y1 = int(np.clip(np.ceil(v1 + pad), y0 + 1, height))
    Kc = np.array(K, np.float64)
    Kc[0, 2] -= x0
    Kc[1, 2] -= y0
    return _Crop(x0, y0, x1 - x0, y1 - y0, torch.tensor(Kc, dtype=torch.float32, device=device))


def render_background(means, quats, scales, opacities, colors, viewmat, K, width: int, height: int,
                      backend: str = "auto") -> Background:
    """The rest of the scene, rendered once (it does not move)."""
    with torch.no_grad():
        out = render_gaussians(means, quats, scales, opacities, colors, viewmat, K, width, height, backend=backend)
    return Background(rgb=out.rgb, depth=out.depth * (out.alpha > 1e-3), alpha=out.alpha)


def _composite(seg: SegmentGaussians, means: torch.Tensor, quats: torch.Tensor, viewmat: torch.Tensor,
               crop: _Crop, bg: Background, backend: str):
    """The segment rendered over the static background in the crop: (rgb, depth, seg alpha)."""
    out = render_gaussians(means, quats, seg.scales, seg.opacities, seg.colors, viewmat, crop.K,
                           crop.width, crop.height, backend=backend)
    ys, xs = slice(crop.y0, crop.y0 + crop.height), slice(crop.x0, crop.x0 + crop.width)
    # The rasterizer's colour has no background (premultiplied), its depth is normalised by alpha.
    rgb = out.rgb + bg.rgb[ys, xs] * (1 - out.alpha[..., None])
    depth = out.depth * out.alpha + bg.depth[ys, xs] * (1 - out.alpha)
    return rgb, depth, out.alpha


def _frame_loss(seg, means, quats, viewmat, crop, bg, targets: LiftTargets, f: int, size: float,
                opts: LiftOptions, backend: str) -> tuple[torch.Tensor, dict]:
    rgb, depth, alpha = _composite(seg, means, quats, viewmat, crop, bg, backend)
    ys, xs = slice(crop.y0, crop.y0 + crop.height), slice(crop.x0, crop.x0 + crop.width)
    colour = (rgb - targets.rgb[f, ys, xs]).abs().mean()
    terms = {"colour": colour}
    loss = opts.colour_weight * colour
    if targets.depth is not None:
        target_depth = targets.depth[f, ys, xs]
        valid = (target_depth > 0) & (depth > 0)
        if valid.any():
            # Charbonnier in object sizes: robust to the depth model's outliers, smooth at zero.
            d = (depth - target_depth)[valid] / size
            depth_term = (torch.sqrt(d * d + 1e-4) - 1e-2).mean()
            terms["depth"] = depth_term
            loss = loss + opts.depth_weight * depth_term
    if targets.masks is not None:
        mask_term = (alpha - targets.masks[f, ys, xs]).abs().mean()
        terms["mask"] = mask_term
        loss = loss + opts.mask_weight * mask_term
    return loss, terms


def _adam_fit(params: torch.Tensor, closure, iterations: int, lr: float) -> tuple[float, dict, torch.Tensor]:
    """Adam (engine/adam.py) with a cosine-decaying step; returns the best loss seen and its terms (params end at
    the best)."""
    moments = AdamMoments(params)
    best = (math.inf, {}, params.detach().clone())
    for i in range(iterations + 1):
        x = params.detach().requires_grad_(True)
        loss, terms = closure(x)
        value = float(loss.detach())
        if value < best[0]:
            best = (value, {k: float(t.detach()) for k, t in terms.items()}, x.detach().clone())
        if i == iterations:
            break
        (grad,) = torch.autograd.grad(loss, x)
        params = params.detach() - moments.step(grad, cosine_step(lr, i, iterations))
    return best[0], best[1], best[2]


def _record(residuals: dict, total: float, terms: dict) -> None:
    residuals.setdefault("total", []).append(total)
    for k in ("colour", "depth", "mask"):
        residuals.setdefault(k, []).append(terms.get(k, 0.0))


def rigid_residuals(seg: SegmentGaussians, bg: Background, targets: LiftTargets, viewmat: np.ndarray,
                    K: np.ndarray, transforms: np.ndarray, options: LiftOptions | None = None) -> dict:
    """Per-frame data losses of a rigid motion measured as the skinned fit measures its own (full segment,
    full resolution), so that the two fits' residuals can be compared."""
    from ..gaussian_transform import quat_from_matrix

    opts = options or LiftOptions()
    device = seg.means.device
    H, W = targets.rgb.shape[1:3]
    size = seg.size()
    rest = seg.means.detach().cpu().numpy().astype(np.float64)
    viewmat_t = torch.tensor(viewmat, dtype=torch.float32, device=device)
    residuals: dict = {}
    _record(residuals, 0.0, {})
    with torch.no_grad():
        for f in range(1, len(transforms)):
            T = np.asarray(transforms[f], np.float64)
            crop = _crop_around(rest @ T[:3, :3].T + T[:3, 3], viewmat, K, W, H, opts.margin, device)
            Tt = torch.tensor(T, dtype=torch.float32, device=device)
            q = torch.tensor(quat_from_matrix(T[:3, :3]), dtype=torch.float32, device=device)
            means = seg.means @ Tt[:3, :3].T + Tt[:3, 3]
            total, terms = _frame_loss(seg, means, quat_multiply(q[None], seg.quats), viewmat_t, crop, bg, targets,
                                       f, size, opts, opts.backend)
            _record(residuals, float(total), {k: float(v) for k, v in terms.items()})
    return residuals


# ---------------------------------------------------------------- non-rigid (skinned handles)

def farthest_point_sampling(points: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Indices of `count` well-spread points (greedy farthest-point sampling from the point nearest the centroid)."""
    p = np.asarray(points, np.float64)
    count = min(count, len(p))
    chosen = np.empty(count, np.int64)
    chosen[0] = int(np.argmin(((p - p.mean(0)) ** 2).sum(1)))
    dist = ((p - p[chosen[0]]) ** 2).sum(1)
    for i in range(1, count):  # K iterations (handles), each vectorised over the points
        chosen[i] = int(np.argmax(dist))
        dist = np.minimum(dist, ((p - p[chosen[i]]) ** 2).sum(1))
    return chosen


def skinning_weights(points: np.ndarray, handles: np.ndarray, neighbours: int = 4,
                     colors: np.ndarray | None = None, handle_colors: np.ndarray | None = None,
                     color_scale: float = 1.0) -> np.ndarray:
    """(N, K) float32 weights: a Gaussian falloff over the nearest handles, width = the handle spacing, rows sum 1.

    With colours, the distance also counts the colour difference (× color_scale handle spacings per unit of
    RGB): parts that touch but differ in appearance (a lid on a box) then bind to their own handles.
    """
    p, h = np.asarray(points, np.float64), np.asarray(handles, np.float64)
    if h.shape[0] > 1:
        hd = np.sqrt(((h[:, None] - h[None]) ** 2).sum(-1))
        np.fill_diagonal(hd, np.inf)
        sigma = float(np.median(hd.min(1)))
    else:
        sigma = 1.0
    sigma = max(sigma, 1e-6)
    d2 = ((p[:, None, :] - h[None]) ** 2).sum(-1)
    if colors is not None and handle_colors is not None:
        dc = np.asarray(colors, np.float64)[:, None, :] - np.asarray(handle_colors, np.float64)[None]
        d2 = d2 + (color_scale * sigma) ** 2 * (dc ** 2).sum(-1)
    k = min(neighbours, h.shape[0])
    near = np.argsort(d2, axis=1)[:, :k]
    nd2 = np.take_along_axis(d2, near, 1)
    w = np.exp(-(nd2 - nd2[:, :1]) / (0.5 * sigma * sigma))  # relative to the nearest: no underflow far out
    w /= w.sum(1, keepdims=True)
    out = np.zeros(d2.shape, np.float32)
    np.put_along_axis(out, near, w.astype(np.float32), 1)
    return out


def lift_nonrigid(seg: SegmentGaussians, bg: Background, targets: LiftTargets, viewmat: np.ndarray,
                  K: np.ndarray, handles: int = 8, options: LiftOptions | None = None,
                  init_transforms: np.ndarray | None = None, progress: Progress | None = None,
                  check_cancelled: Callable[[], None] | None = None) -> NonRigidFit:
    """K farthest-point handles with skinning weights; per frame, each handle's SE(3) (about the handle) is
    fitted with an as-rigid-as-possible term between neighbouring handles, from the previous frame (or
    from `init_transforms`, e.g. a rigid fit)."""
    opts = options or LiftOptions()
    device = seg.means.device
    F, H, W = targets.rgb.shape[:3]
    size = seg.size()
    rest_np = seg.means.detach().cpu().numpy().astype(np.float64)
    handle_index = farthest_point_sampling(rest_np, handles)
    handle_rest = rest_np[handle_index]
    Kh = len(handle_rest)
    colors_np = seg.colors.detach().cpu().numpy()
    weights_np = skinning_weights(rest_np, handle_rest, colors=colors_np if opts.color_skinning else None,
                                  handle_colors=colors_np[handle_index], color_scale=opts.color_skinning)
    weights = torch.tensor(weights_np, device=device)
    h = torch.tensor(handle_rest, dtype=torch.float32, device=device)
    # Neighbouring handles (the ARAP graph): the few nearest of each.
    hd = ((handle_rest[:, None] - handle_rest[None]) ** 2).sum(-1)
    nb = np.argsort(hd, axis=1)[:, 1:min(5, Kh)]
    pairs = torch.tensor(np.stack([np.repeat(np.arange(Kh), nb.shape[1]), nb.ravel()], 1), device=device)
    viewmat_t = torch.tensor(viewmat, dtype=torch.float32, device=device)
    params_all = np.zeros((F, Kh, 6))
    residuals: dict = {"arap": [0.0]}
    _record(residuals, 0.0, {})

    def handle_init(T: np.ndarray) -> np.ndarray:
        """Per-handle params (about each handle) that reproduce the rigid T."""
        omega = _matrix_to_axis_angle(T[:3, :3])
        moved = handle_rest @ T[:3, :3].T + T[:3, 3]
        return np.concatenate([np.tile(omega, (Kh, 1)), (moved - handle_rest) / size], 1)

    def deform(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = axis_angle_to_quat(p[:, :3])                       # (K, 4)
        R = quat_to_rotmat(q)                                   # (K, 3, 3)
        moved_h = h + p[:, 3:] * size                           # (K, 3)
        # x' = Σ_k w_ik (R_k (x − h_k) + h_k + t_k)
        local = seg.means[:, None, :] - h[None]                 # (N, K, 3)
        per = torch.einsum("kij,nkj->nki", R, local) + moved_h[None]
        means = (weights[..., None] * per).sum(1)
        qb = weights @ q                                        # blended rotations (all near one hemisphere)
        qb = qb / qb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return means, quat_multiply(qb, seg.quats), (R, moved_h)

    for f in range(1, F):
        if check_cancelled:
            check_cancelled()
        # Candidate starts: the previous frame, constant velocity, and the rigid fit of this frame; the one
        # that explains the frame best wins.
        guesses = [params_all[f - 1]] + ([2 * params_all[f - 1] - params_all[f - 2]] if f >= 2 else [])
        if init_transforms is not None and opts.nonrigid_rigid_init:
            guesses.append(handle_init(init_transforms[f]))
        prev = torch.tensor(params_all[f - 1], dtype=torch.float32, device=device)
        with torch.no_grad():
            boxes = [deform(torch.tensor(g_, dtype=torch.float32, device=device))[0].cpu().numpy() for g_ in guesses]
        crop = _crop_around(np.concatenate(boxes).astype(np.float64), viewmat, K, W, H, opts.margin, device)

        def closure(p):
            means, quats, (R, moved_h) = deform(p)
            loss, terms = _frame_loss(seg, means, quats, viewmat_t, crop, bg, targets, f, size, opts, opts.backend)
            i, j = pairs[:, 0], pairs[:, 1]
            # Handle i's transform should carry handle j where j's own transform puts it.
            pred = torch.einsum("pab,pb->pa", R[i], h[j] - h[i]) + moved_h[i]
            # Charbonnier, not squared: small drifts of a rigid part cost as much as the data gains, while
            # the few edges across a joint (a hinge) may still break.
            arap = torch.sqrt((((pred - moved_h[j]) / size) ** 2).sum(-1) + 1e-6).mean()
            smooth = ((p - prev) ** 2).mean()
            terms["arap"] = arap
            return loss + opts.arap_weight * arap + opts.smooth_weight * smooth, terms

        with torch.no_grad():
            scores = [float(closure(torch.tensor(g_, dtype=torch.float32, device=device))[0]) for g_ in guesses]
        p = torch.tensor(guesses[int(np.argmin(scores))], dtype=torch.float32, device=device)
        iterations = opts.iterations * (2 if f == 1 else 1)
        total, terms, p = _adam_fit(p, closure, iterations, opts.lr)
        params_all[f] = p.cpu().numpy()
        _record(residuals, total, terms)
        residuals.setdefault("arap", []).append(terms.get("arap", 0.0))
        if progress:
            progress(f / max(1, F - 1), f"lifting frame {f + 1} of {F} (non-rigid)")

    handle_transforms = np.stack([params_to_matrix(params_all[:, k], handle_rest[k], size) for k in range(Kh)], 1)
    handle_transforms[0] = np.eye(4)
    moved = deformed_points(rest_np, handle_rest, handle_transforms, weights_np)
    opac = seg.opacities.detach().cpu().numpy()
    transforms = np.stack([kabsch(rest_np, moved[f], opac) for f in range(F)])
    transforms[0] = np.eye(4)
    return NonRigidFit(handle_rest=handle_rest, handle_transforms=handle_transforms, weights=weights_np,
                       transforms=transforms, residuals=residuals)


def deformed_points(points: np.ndarray, handle_rest: np.ndarray, handle_transforms: np.ndarray,
                    weights: np.ndarray) -> np.ndarray:
    """(F, N, 3) linear-blend-skinned positions: x_f = Σ_k w_k · T_fk · x (T_fk in the file frame)."""
    p = np.asarray(points, np.float64)
    T = np.asarray(handle_transforms, np.float64)                       # (F, K, 4, 4)
    per = np.einsum("fkij,nj->fnki", T[:, :, :3, :3], p) + T[:, None, :, :3, 3]
    return np.einsum("nk,fnki->fni", np.asarray(weights, np.float64), per)


def _matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    from ..gaussian_transform import quat_from_matrix

    q = quat_from_matrix(R)
    w = float(np.clip(q[0], -1.0, 1.0))
    s = math.sqrt(max(1.0 - w * w, 0.0))
    angle = 2.0 * math.atan2(s, w)
    return np.zeros(3) if s < 1e-12 else q[1:] / s * angle
