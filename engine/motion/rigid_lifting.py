"""Rigid lifting of a whole clip: per-frame tracking, then a joint refinement of all frames under priors.

A rigid motion of the segment over a static scene is the segment seen from a moved camera (V · T_f), so a
frame costs one render of the segment and no transformed copy of it, and all frames render in one batched
call on gsplat. Two priors stand for what the video cannot say: smoothness (second differences of the pose
over time) and least motion in the directions a video barely observes: along the view ray without depth
(only the size changes) and rotation (a textureless object's turn shows only in its outline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..adam import AdamMoments, cosine_step
from ..render.cpu_rasterizer import quat_to_rotmat
from .frame_model import FrameModel
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
    """The priors' cost of consecutive poses (F, 6) after the first (given); depth is measured from the pose
    `anchor` (6,) that explains the first frame."""
    step = params[1:] - params[:-1]
    second = step[1:] - step[:-1]
    cost = priors.smooth * (second * second).sum()
    cost = cost + priors.ray * (((params[1:, 3:] - anchor[3:]) @ depth_axis) ** 2).sum()
    return cost + priors.turn * (step[:, :3] * step[:, :3]).sum()


def adam(params: torch.Tensor, loss_of: Callable[[torch.Tensor], torch.Tensor], iterations: int, lr: float,
         check_every: int = 0, tolerance: float = 0.0) -> torch.Tensor:
    """Adam with a cosine-decaying step; returns the parameters of the lowest loss seen. The best is kept on
    the device (no host sync per step); with `check_every`, the loop stops once that many steps improved
    the best loss by less than `tolerance` (one host sync per check)."""
    moments = AdamMoments(params)
    best_loss = torch.full((), math.inf, device=params.device)
    best = params.detach().clone()
    last_check = math.inf
    for i in range(iterations + 1):
        x = params.detach().requires_grad_(True)
        loss = loss_of(x)
        better = loss.detach() < best_loss
        best = torch.where(better, x.detach(), best)
        best_loss = torch.where(better, loss.detach(), best_loss)
        if i == iterations:
            break
        if check_every and i and i % check_every == 0:
            value = float(best_loss)
            if last_check - value < tolerance:
                break
            last_check = value
        (grad,) = torch.autograd.grad(loss, x)
        params = x.detach() - moments.step(grad, cosine_step(lr, i, iterations))
    return best


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


def working_scale(seg: SegmentGaussians, viewmat: np.ndarray, K: np.ndarray, target_pixels: float) -> int:
    """The pixel step at which the segment spans about `target_pixels` (at least 1)."""
    cam = seg.means.detach().cpu().numpy() @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = np.maximum(cam[:, 2], 1e-6)
    u, v = cam[:, 0] / z * K[0, 0], cam[:, 1] / z * K[1, 1]
    extent = max(np.percentile(u, 99) - np.percentile(u, 1), np.percentile(v, 99) - np.percentile(v, 1))
    return max(1, int(round(extent / target_pixels)))


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
    scale = working_scale(seg, viewmat, K, opts.working_pixels or (160.0 if backend == "gsplat" else 20.0))
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
    rest_np = proxy.means.detach().cpu().numpy().astype(np.float64)

    def first_pose_prior(p: torch.Tensor) -> torch.Tensor:
        """Frame 0 shows the rest pose: what the fit finds there is the video's source against our render, a
        little. Without depth, a move along the view ray there would only resize the object (the footprint
        calibration's job) and scale every later translation by the changed distance, so it is pinned."""
        pinned = 0.0 if has_depth else 100.0 * opts.ray_prior * (p[3:] @ depth_axis) ** 2
        return opts.bias_prior * (p * p).sum() + pinned

    def viewmats(p: torch.Tensor) -> torch.Tensor:
        return V @ pose_matrices(p, center, size)

    rest_window = model.window(rest_np, viewmat[None], opts.margin)
    model.fit_colour_transfer(V, rest_window)
    footprint = model.fit_footprint(V, rest_window)
    model.fit_colour_transfer(V, rest_window)
    depth_offset = model.fit_depth_offset(V, rest_window)
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

        def loss_of(p: torch.Tensor) -> torch.Tensor:
            data, _ = model.data_loss(viewmats(p[None]), frame, win, target)
            if f == 0:
                return data[0] + first_pose_prior(p)
            return data[0] + prior_terms(torch.cat([history, p[None]]), anchor, depth_axis, tracking_priors)

        with torch.no_grad():
            start = guesses[int(torch.argmin(torch.stack([loss_of(g) for g in guesses])))]
        iterations = opts.iterations * (2 if f <= 1 else 1)
        params[f] = adam(start, loss_of, iterations, opts.lr, check_every=5, tolerance=opts.tolerance)
        if progress:
            progress(0.6 * f / max(1, F - 1), f"tracking frame {f + 1} of {F}")

    if opts.refine_iterations and F > 2:
        poses = params_to_matrix(params.cpu().numpy().astype(np.float64), center_np, size)
        win = model.window(rest_np, viewmat @ poses, opts.margin)
        frames = torch.arange(F, device=device)
        target = model.target_pyramid(frames, win)

        def joint_loss(p: torch.Tensor) -> torch.Tensor:
            data, _ = model.data_loss(viewmats(p), frames, win, target)
            return data.sum() + prior_terms(p, p[0], depth_axis, priors) + first_pose_prior(p[0])

        if progress:
            progress(0.65, "refining all frames together")
        params = adam(params, joint_loss, opts.refine_iterations, opts.lr * opts.refine_lr)

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
