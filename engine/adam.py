"""Adam, written out: torch.optim.Adam's update without torch.optim, whose first optimiser imports torch._dynamo
(1.6 s on the 2-core CI machine, about 5 s on the device's host): seconds added to the first SAGA training,
4D field or motion fit of every engine process. One implementation for the engine's fits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


class AdamMoments:
    """The running moments of one tensor's gradients; `step` is what Adam subtracts from the tensor."""

    def __init__(self, like: torch.Tensor) -> None:
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.t = 0

    def step(self, grad: torch.Tensor, lr: float) -> torch.Tensor:
        """Update the moments with `grad`; lr · m̂ / (√v̂ + ε) with the bias-corrected moments."""
        self.t += 1
        self.m.mul_(BETA1).add_(grad, alpha=1 - BETA1)
        self.v.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
        return lr * (self.m / (1 - BETA1 ** self.t)) / ((self.v / (1 - BETA2 ** self.t)).sqrt() + EPS)


class Adam:
    """torch.optim.Adam's interface and defaults (betas 0.9 / 0.999, ε 1e-8, no weight decay) for leaf tensors
    that collect `.grad`: zero_grad() drops the gradients, step() moves every tensor that has one."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        self.params = [p for p in params]
        self.lr = float(lr)
        self._moments = [AdamMoments(p.detach()) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p, moments in zip(self.params, self._moments):
            if p.grad is not None:
                p.sub_(moments.step(p.grad, self.lr))


def cosine_step(lr: float, i: int, iterations: int) -> float:
    """A learning rate decaying from lr to lr/10 over `iterations` along a half cosine (the motion fits')."""
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / max(1, iterations))))
