"""The rigid lifting's Levenberg-Marquardt pieces (engine/motion/rigid_lifting.py, frame_model.Residuals) on
problems with known answers: the priors' quadratic form, the robust terms' slope and reweighting, and the
solver recovering poses from residuals with outliers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.motion.frame_model import Residuals
from engine.motion.rigid_lifting import Priors, Solver, prior_terms, quadratic_form


def test_quadratic_form_reproduces_the_priors_exactly():
    torch.manual_seed(0)
    depth_axis = torch.tensor([0.3, -0.2, 0.93])
    priors = Priors(smooth=2.0, ray=0.7, turn=0.05)

    def prior(p):                                   # (..., 5, 6), anchored at the first pose
        return prior_terms(p, p[..., 0, :], depth_axis, priors) + 0.1 * (p[..., 0, :] ** 2).sum(-1)

    q = quadratic_form(prior, (5, 6), torch.device("cpu"))
    assert q.A.shape == (30, 30) and np.allclose(q.A, q.A.T)
    for _ in range(3):
        p = torch.randn(5, 6, dtype=torch.float64)
        x = p.requires_grad_(True)
        value = prior(x.float()[None])[0]
        (grad,) = torch.autograd.grad(value, x)
        flat = p.detach().numpy().ravel()
        assert q.value(flat) == pytest.approx(float(value.detach()), rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(q.gradient(flat), grad.numpy().ravel(), rtol=1e-4, atol=1e-5)
    zero = quadratic_form(lambda p: torch.zeros(p.shape[:-2]), (2, 6), torch.device("cpu"))
    assert not zero.A.any() and not zero.b.any() and zero.c == 0.0


def test_residual_slopes_are_the_losses_derivative_and_the_reweighting_bounds_it_from_above():
    torch.manual_seed(1)
    values = torch.randn(1, 2, 40, dtype=torch.float64) * 0.2
    weights = torch.rand(2, 40, dtype=torch.float64)
    spans = {"colour0": (slice(0, 20), 0.03), "depth": (slice(20, 30), 0.01), "mask": (slice(30, 40), 0.0)}
    res = Residuals(values.clone().requires_grad_(True), weights, spans)
    loss, terms = res.losses()
    assert set(terms) == {"colour", "depth", "mask"}
    r = values[0]
    assert float(terms["mask"][1].detach()) == pytest.approx(float((weights[1, 30:] * r[1, 30:].abs()).sum()))
    assert float(terms["colour"][0].detach()) == pytest.approx(
        float((weights[0, :20] * (torch.sqrt(r[0, :20] ** 2 + 0.03 ** 2) - 0.03)).sum()))
    (grad,) = torch.autograd.grad(loss.sum(), res.values)
    slope, curvature = Residuals(values, weights, spans).slope_and_curvature()
    torch.testing.assert_close(slope, grad[0])
    # The reweighted quadratic through each residual lies above the robust loss: a step that lowers it
    # lowers the loss (the solver's steps rely on that).
    def rho(x):
        out = torch.empty_like(x)
        for cols, soft in spans.values():
            out[:, cols] = (torch.sqrt(x[:, cols] ** 2 + soft ** 2) - soft) if soft else x[:, cols].abs()
        return weights * out

    for shift in (-0.5, -0.05, 0.02, 0.3):
        moved = r + shift
        bound = rho(r) + slope * shift + 0.5 * curvature * shift ** 2
        assert (bound >= rho(moved) - 1e-12).all()


class _LinearModel:
    """Residuals linear in the pose, J p − y, with robust L1 (Charbonnier) weights: a stand-in for the
    renderer whose least-L1 answer is known."""

    def __init__(self, J: torch.Tensor, y: torch.Tensor):
        self.J, self.y = J, y

    def residuals(self, viewmats, frames, win, target, colour_soft=0.0):
        S, B = viewmats.shape[:2]
        p = viewmats.reshape(S, B, 16)[..., :6]
        values = p @ self.J.T - self.y[frames]
        M = values.shape[-1]
        return Residuals(values, values.new_full((B, M), 1.0 / M), {"colour0": (slice(0, M), colour_soft)})


def _as_viewmats(p: torch.Tensor) -> torch.Tensor:
    return torch.cat([p, torch.zeros(len(p), 10)], 1).reshape(-1, 4, 4)


def test_the_solver_recovers_poses_despite_outliers():
    torch.manual_seed(2)
    J = torch.randn(200, 6)
    truth = torch.tensor([[0.1, -0.05, 0.02, 0.3, -0.2, 0.1], [0.0, 0.08, -0.1, -0.1, 0.25, 0.05]])
    y = truth @ J.T
    y[:, :20] += 3.0 * torch.randn(2, 20)             # 10% gross outliers: least squares would follow them
    model = _LinearModel(J, y)
    steps = torch.full((6,), 1e-3)
    solver = Solver(model, _as_viewmats, steps, span=100.0, evaluations=30, tolerance=1e-4, colour_soft=1e-3)
    zero = quadratic_form(lambda p: torch.zeros(p.shape[:-2]), (2, 6), torch.device("cpu"))
    fitted = solver.fit(torch.zeros(2, 6), torch.arange(2), None, None, zero)
    assert (fitted - truth).abs().max() < 2e-3, fitted - truth
    lsq = torch.linalg.lstsq(J, y.T).solution.T
    assert (lsq - truth).abs().max() > 0.05            # the outliers matter to a plain least-squares fit


def test_the_solver_follows_a_quadratic_prior_where_the_data_say_nothing():
    # The data see only the first three parameters; a prior pulls all six toward a target.
    torch.manual_seed(3)
    J = torch.zeros(60, 6)
    J[:, :3] = torch.randn(60, 3)
    truth = torch.tensor([[0.2, -0.1, 0.05, 0.0, 0.0, 0.0]])
    model = _LinearModel(J, truth @ J.T)
    pull = torch.tensor([0.0, 0.0, 0.0, 0.4, -0.3, 0.2])
    prior = quadratic_form(lambda p: 0.5 * ((p[..., 0, :] - pull) ** 2).sum(-1), (1, 6), torch.device("cpu"))
    solver = Solver(model, _as_viewmats, torch.full((6,), 1e-3), span=100.0, evaluations=30, tolerance=1e-4,
                    colour_soft=1e-3)
    fitted = solver.fit(torch.zeros(1, 6), torch.arange(1), None, None, prior)[0]
    assert (fitted[:3] - truth[0, :3]).abs().max() < 5e-3
    torch.testing.assert_close(fitted[3:], pull[3:], atol=1e-3, rtol=0)
