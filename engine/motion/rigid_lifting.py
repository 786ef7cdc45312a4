"""Rigid lifting of a whole clip: per-frame tracking, then a joint refinement of all frames under priors.

Both are Levenberg-Marquardt on the six pose parameters of each frame. The data terms are robust (L1 and
Charbonnier), so each step solves their iteratively reweighted least squares with a Jacobian taken by
finite differences: a pose and its six perturbed copies render in one batched call, forward only (no
backward pass through the rasterizer, the cost of a gradient step). A step is kept only when it lowers
the true loss. The priors are quadratic in the parameters, so their Hessian is exact.

A rigid motion of the segment over a static scene is the segment seen from a moved camera (V · T_f), so a
frame costs one render of the segment and no transformed copy of it, and all frames render in one batched
call on gsplat. Two priors stand for what the video cannot say: smoothness (second differences of the pose
over time) and least motion in the directions a video barely observes: along the view ray without depth
(only the size changes) and rotation (a textureless object's turn shows only in its outline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..render.cpu_rasterizer import quat_to_rotmat
from .frame_model import FrameModel, Window
from .lifting import (Background, LiftOptions, LiftTargets, Progress, RigidFit, SegmentGaussians,
                      axis_angle_to_quat, params_to_matrix)
from .proxy import segment_proxy


@dataclass
class Priors:
    smooth: float      # on the pose's second difference per frame (radians, object sizes)
    ray: float         # on the centre's change of camera depth since rest (object sizes); 0 with depth
    turn: float        # on the change of the rotation per frame (radians)


def pose_matrices(params: torch.Tensor, center: torch.Tensor, size: float) -> torch.Tensor:
    """(B, 6) [rotation vector, translation in sizes] -> (B, 4, 4) x' = R (x − c) + c + t · size."""
    R = quat_to_rotmat(axis_angle_to_quat(params[:, :3]))
    t = center - R @ center + params[:, 3:] * size
    top = torch.cat([R, t[:, :, None]], 2)
    bottom = params.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(len(params), 1, 4)
    return torch.cat([top, bottom], 1)


def prior_terms(params: torch.Tensor, anchor: torch.Tensor, depth_axis: torch.Tensor, priors: Priors
                ) -> torch.Tensor:
    """The priors' cost of consecutive poses (..., F, 6) after the first (given); depth is measured from the
    pose `anchor` (..., 6) that explains the first frame. Leading dimensions are a batch: (...,) costs."""
    step = params[..., 1:, :] - params[..., :-1, :]
    second = step[..., 1:, :] - step[..., :-1, :]
    cost = priors.smooth * (second * second).sum((-2, -1))
    cost = cost + priors.ray * (((params[..., 1:, 3:] - anchor[..., None, 3:]) @ depth_axis) ** 2).sum(-1)
    return cost + priors.turn * (step[..., :3] * step[..., :3]).sum((-2, -1))


@dataclass
class Quadratic:
    """q(p) = ½ pᵀ A p + bᵀ p + c over the flattened parameters (float64, on the host)."""

    A: np.ndarray
    b: np.ndarray
    c: float

    def value(self, p: np.ndarray) -> float:
        return float(0.5 * p @ self.A @ p + self.b @ p + self.c)

    def gradient(self, p: np.ndarray) -> np.ndarray:
        return self.A @ p + self.b


def quadratic_form(prior: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, int],
                   device: torch.device) -> Quadratic:
    """A, b, c of a prior that is quadratic in parameters of `shape` (it takes a batch (..., *shape)): its
    gradient at 0 is b and at each unit vector A's column plus b, all in one backward pass."""
    n = shape[0] * shape[1]
    points = torch.cat([torch.zeros(1, n, device=device), torch.eye(n, device=device)]).reshape(n + 1, *shape)
    points.requires_grad_(True)
    q = prior(points)
    if not q.requires_grad:                   # every prior weighted 0
        return Quadratic(np.zeros((n, n)), np.zeros(n), 0.0)
    (grads,) = torch.autograd.grad(q.sum(), points)
    g = grads.reshape(n + 1, n).double().cpu().numpy()
    A = g[1:] - g[0]
    return Quadratic(0.5 * (A + A.T), g[0], float(q[0].detach()))


@dataclass
class Solver:
    """Levenberg-Marquardt over the poses of B frames (B, 6): `evaluations` renders at most, stopping once
    no pose moves by more than `tolerance` working pixels in a kept step."""

    model: FrameModel
    viewmats: Callable[[torch.Tensor], torch.Tensor]
    steps: torch.Tensor          # (6,) finite-difference steps (radians, sizes), about a quarter pixel
    span: float                  # the segment's extent in working pixels
    evaluations: int
    tolerance: float
    colour_soft: float = 0.0     # FrameModel.residuals: the colour's L1 rounded near zero for the solver

    def evaluate(self, p: torch.Tensor, frames: torch.Tensor, win: Window, target: list[torch.Tensor]):
        """Data loss (host float), the IRLS normal equations' H (B, 6, 6) and g (B, 6) at poses p (B, 6)."""
        B = len(p)
        offsets = torch.cat([torch.zeros(1, 6, device=p.device), torch.diag(self.steps)])
        sets = (p[None] + offsets[:, None]).reshape(-1, 6)
        res = self.model.residuals(self.viewmats(sets).reshape(7, B, 4, 4), frames, win, target, self.colour_soft)
        loss, _ = res.losses()
        J = (res.values[1:] - res.values[:1]) / self.steps[:, None, None]         # (6, B, M)
        slope, curvature = res.slope_and_curvature()
        H = torch.einsum("ibm,jbm->bij", J * curvature, J)
        g = torch.einsum("ibm,bm->bi", J, slope)
        return float(loss.sum()), H.double().cpu().numpy(), g.double().cpu().numpy().ravel()

    def fit(self, start: torch.Tensor, frames: torch.Tensor, win: Window, target: list[torch.Tensor],
            prior: Quadratic) -> torch.Tensor:
        B = len(start)
        p = start.detach().double().cpu().numpy().ravel()
        to_device = lambda x: torch.tensor(x.reshape(B, 6), dtype=torch.float32, device=start.device)  # noqa: E731
        data, H, g = self.evaluate(start.detach(), frames, win, target)
        total = data + prior.value(p)
        damping = 1e-3
        moves = np.array([self.span / 2.0] * 3 + [self.span] * 3)     # working pixels per radian / size
        for _ in range(self.evaluations - 1):
            system = _block_diagonal(H) + prior.A
            grad = g + prior.gradient(p)
            scaled = np.diag(system).clip(1e-12) * damping + 1e-12 * max(np.trace(system) / len(p), 1.0)
            try:
                delta = -np.linalg.solve(system + np.diag(scaled), grad)
            except np.linalg.LinAlgError:
                break
            candidate = p + delta
            data_c, H_c, g_c = self.evaluate(to_device(candidate), frames, win, target)
            total_c = data_c + prior.value(candidate)
            if total_c < total:
                p, total, H, g = candidate, total_c, H_c, g_c
                damping = max(damping * 0.3, 1e-7)
                if float(np.max(np.abs(delta.reshape(B, 6)) * moves)) < self.tolerance:
                    break
            else:
                damping *= 10.0
                if damping > 1e4:
                    break
        return to_device(p)


def _block_diagonal(blocks: np.ndarray) -> np.ndarray:
    B = len(blocks)
    out = np.zeros((6 * B, 6 * B))
    for b in range(B):
        out[6 * b:6 * b + 6, 6 * b:6 * b + 6] = blocks[b]
    return out


def texture(seg: SegmentGaussians) -> float:
    """How textured the segment is, in [0, 1]: the opacity-weighted spread of its colours per channel, 0 for
    one flat colour, 1 from a spread of 0.1 up. A flat object's turn shows only in its outline, so the fit
    must be held to the least turn that explains it."""
    w = seg.opacities / seg.opacities.sum().clamp_min(1e-12)
    mean = (seg.colors * w[:, None]).sum(0)
    spread = (((seg.colors - mean) ** 2) * w[:, None]).sum(0).sqrt().mean()
    return float((spread / 0.1).clamp(0.0, 1.0))


def relative_motion(fitted: np.ndarray, first: np.ndarray, center: np.ndarray, size: float) -> np.ndarray:
    """(F, 4, 4) motion since frame 0 from the fitted poses (F, 4, 4) and frame 0's parameters (6,). Where
    the data puts the object in frame 0 is how the video's source differs from our render: a shift of the
    image (a pixel convention, a footprint) stays with the camera, a turn stays with the object. So frame 0's
    pose is split into a world shift S and a turn O about the centre, and T_f = S⁻¹ F_f O⁻¹."""
    turn = params_to_matrix(np.concatenate([first[:3], np.zeros(3)])[None], center, size)[0]
    shift = np.eye(4)
    shift[:3, 3] = first[3:] * size
    transforms = np.linalg.inv(shift) @ fitted @ np.linalg.inv(turn)
    transforms[0] = np.eye(4)
    return transforms


def working_scale(seg: SegmentGaussians, viewmat: np.ndarray, K: np.ndarray, target_pixels: float
                  ) -> tuple[int, float]:
    """The pixel step at which the segment spans about `target_pixels` (at least 1), and the span there."""
    cam = seg.means.detach().cpu().numpy() @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = np.maximum(cam[:, 2], 1e-6)
    u, v = cam[:, 0] / z * K[0, 0], cam[:, 1] / z * K[1, 1]
    extent = max(np.percentile(u, 99) - np.percentile(u, 1), np.percentile(v, 99) - np.percentile(v, 1))
    scale = max(1, int(round(extent / target_pixels)))
    return scale, float(max(extent / scale, 1.0))


def lift_rigid(seg: SegmentGaussians, bg: Background, targets: LiftTargets, viewmat: np.ndarray, K: np.ndarray,
               options: LiftOptions | None = None, progress: Progress | None = None,
               check_cancelled: Callable[[], None] | None = None) -> RigidFit:
    """Per-frame SE(3) of the segment (frame 0 is the rest pose): tracked frame by frame from the better of
    "still" and "constant velocity", then all frames refined together under the priors."""
    opts = options or LiftOptions()
    device = seg.means.device
    backend = opts.backend if opts.backend != "auto" else ("gsplat" if device.type == "cuda" else "cpu")
    F = targets.rgb.shape[0]
    size = seg.size()
    center = seg.center().detach()
    center_np = center.cpu().numpy().astype(np.float64)
    proxy = segment_proxy(seg, opts.proxy_gaussians or (50000 if backend == "gsplat" else 500))
    scale, span = working_scale(seg, viewmat, K, opts.working_pixels or (160.0 if backend == "gsplat" else 20.0))
    model = FrameModel(proxy, bg, targets, K, scale, size, backend, depth_weight=opts.depth_weight,
                       mask_weight=opts.mask_weight)
    V = torch.tensor(viewmat, dtype=torch.float32, device=device)
    has_depth = targets.depth is not None
    textured = texture(proxy)
    # Depth shows a flat object's turn in its shape; without it, only the outline does.
    turn = opts.turn_prior if has_depth else opts.turn_prior ** textured * opts.textureless_turn_prior ** (1.0 - textured)
    priors = Priors(smooth=opts.smooth_prior, ray=0.0 if has_depth else opts.ray_prior, turn=turn)
    # Frame by frame, smoothness would pull each pose toward the past's velocity (a lag); it acts on the
    # whole sequence in the joint refinement, where a steady motion costs nothing.
    tracking_priors = Priors(smooth=0.0, ray=priors.ray, turn=priors.turn)
    depth_axis = V[2, :3] * 1.0                              # camera depth of a translation, in sizes
    # The crop only needs the object's extent: a few thousand of its points give the same percentiles.
    rest_np = proxy.means.detach()[::max(1, proxy.count // 2048)].cpu().numpy().astype(np.float64)

    def first_pose_prior(p: torch.Tensor) -> torch.Tensor:
        """Frame 0 shows the rest pose: what the fit finds there is the video's source against our render, a
        little. Without depth, a move along the view ray there would only resize the object (the footprint
        calibration's job) and scale every later translation by the changed distance, so it is pinned."""
        pinned = 0.0 if has_depth else 100.0 * opts.ray_prior * (p[..., 3:] @ depth_axis) ** 2
        return opts.bias_prior * (p * p).sum(-1) + pinned

    def viewmats(p: torch.Tensor) -> torch.Tensor:
        return V @ pose_matrices(p, center, size)

    rest_window = model.window(rest_np, viewmat[None], opts.margin)
    model.fit_colour_transfer(V, rest_window)
    footprint = model.fit_footprint(V, rest_window)
    model.fit_colour_transfer(V, rest_window)
    depth_offset = model.fit_depth_offset(V, rest_window)
    # Finite-difference steps of about a quarter working pixel: a point half a size from the centre moves
    # as far under the rotation step as under the translation step.
    t_step = 0.25 / span
    fd_steps = torch.tensor([2 * t_step] * 3 + [t_step] * 3, device=device)
    tracker = Solver(model, viewmats, fd_steps, span, opts.tracking_steps, opts.tracking_tolerance,
                     opts.colour_soft)
    params = torch.zeros(F, 6, device=device)
    residuals: dict = {}
    frame = torch.zeros(1, dtype=torch.long, device=device)
    # Frame 0 is fitted too: where the data puts the object at rest is where the video's source differs
    # from our render (a bias that moves with the object); the motion is then taken relative to it.
    for f in range(F):
        if check_cancelled:
            check_cancelled()
        prev = params[max(f - 1, 0)]
        velocity = prev - params[f - 2] if f >= 2 else torch.zeros_like(prev)
        guesses = torch.stack([prev, prev + velocity]) if f >= 2 else prev[None]
        poses = params_to_matrix(guesses.cpu().numpy().astype(np.float64), center_np, size)
        win = model.window(rest_np, viewmat @ poses, opts.margin)
        frame[0] = f
        target = model.target_pyramid(frame, win)
        history, anchor = params[max(0, f - 2):f], params[0]

        def prior(p: torch.Tensor) -> torch.Tensor:        # p (..., 1, 6)
            if f == 0:
                return first_pose_prior(p[..., 0, :])
            past = history.expand(*p.shape[:-2], *history.shape)
            return prior_terms(torch.cat([past, p], -2), anchor, depth_axis, tracking_priors)

        with torch.no_grad():
            data, _ = model.data_loss(viewmats(guesses), frame.expand(len(guesses)), win,
                                      [t.expand(len(guesses), -1, -1, -1) for t in target])
            start = guesses[int(torch.argmin(data + prior(guesses[:, None])))]
        tracker.evaluations = opts.tracking_steps * (2 if f <= 1 else 1)
        params[f] = tracker.fit(start[None], frame, win, target, quadratic_form(prior, (1, 6), device))[0]
        if progress:
            progress(0.6 * f / max(1, F - 1), f"tracking frame {f + 1} of {F}")

    if opts.refine_steps and F > 2:
        poses = params_to_matrix(params.cpu().numpy().astype(np.float64), center_np, size)
        win = model.window(rest_np, viewmat @ poses, opts.margin)
        frames = torch.arange(F, device=device)
        target = model.target_pyramid(frames, win)

        def joint_prior(p: torch.Tensor) -> torch.Tensor:    # p (..., F, 6)
            return prior_terms(p, p[..., 0, :], depth_axis, priors) + first_pose_prior(p[..., 0, :])

        if progress:
            progress(0.65, "refining all frames together")
        refiner = Solver(model, viewmats, fd_steps, span, opts.refine_steps, opts.refine_tolerance,
                         opts.colour_soft)
        params = refiner.fit(params, frames, win, target, quadratic_form(joint_prior, (F, 6), device))

    with torch.no_grad():
        frames = torch.arange(F, device=device)
        win = model.window(rest_np, viewmat @ params_to_matrix(params.cpu().numpy().astype(np.float64),
                                                                center_np, size), opts.margin)
        data, terms = model.data_loss(viewmats(params), frames, win)
    residuals["total"] = data.cpu().tolist()
    for k in ("colour", "depth", "mask"):
        residuals[k] = terms[k].cpu().tolist() if k in terms else [0.0] * F
    fitted_params = params.cpu().numpy().astype(np.float64)
    transforms = relative_motion(params_to_matrix(fitted_params, center_np, size), fitted_params[0], center_np, size)
    if progress:
        progress(1.0, "rigid motion lifted")
    return RigidFit(transforms=transforms, residuals=residuals,
                    calibration={"footprint": footprint, "depth_offset": depth_offset, "colour_gain": model.gain.cpu().tolist(),
                                 "colour_bias": model.bias.cpu().tolist(), "working_scale": scale,
                                 "proxy_gaussians": proxy.count, "texture": textured, "turn_prior": turn})
