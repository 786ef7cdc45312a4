"""engine/adam.py: torch.optim.Adam's update without importing torch._dynamo (whose import is seconds of every
engine process's first SAGA training, 4D field or motion fit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from engine.adam import Adam, AdamMoments

ROOT = Path(__file__).resolve().parents[1]


def test_adam_follows_torch_optim_adam():
    torch.manual_seed(0)
    target = torch.randn(64, 8)
    ours = torch.randn(64, 8, requires_grad=True)
    theirs = ours.detach().clone().requires_grad_(True)
    bias = torch.zeros(8, requires_grad=True)   # a second tensor, and one with no gradient some steps
    bias_theirs = bias.detach().clone().requires_grad_(True)
    opt, ref = Adam([ours, bias], lr=0.05), torch.optim.Adam([theirs, bias_theirs], lr=0.05, foreach=False)
    for step in range(30):
        for params, o in (((ours, bias), opt), ((theirs, bias_theirs), ref)):
            o.zero_grad()
            loss = ((params[0] - target) ** 2).sum() + ((params[1] - 1) ** 2).sum() * (step % 3 == 0)
            loss.backward()
            o.step()
    assert (ours - theirs).abs().max() < 1e-5 and (bias - bias_theirs).abs().max() < 1e-5
    assert (ours - target).abs().max() < (theirs.detach() - target).abs().max() + 1e-5   # and it converged alike
    assert (ours - target).abs().mean() < 0.5 * (torch.randn(64, 8) - target).abs().mean()


def test_moments_step_is_lr_times_bias_corrected_ratio():
    grad = torch.tensor([2.0, -0.5, 0.0])
    moments = AdamMoments(grad)
    first = moments.step(grad, 0.1)
    # After one step the bias-corrected m̂ = g and v̂ = g²: the step is lr·sign(g) (0 where g = 0).
    assert torch.allclose(first, torch.tensor([0.1, -0.1, 0.0]), atol=1e-6)


def test_the_engines_fits_do_not_import_torch_dynamo():
    code = ("import sys, torch\n"
            "from engine.query4d.autoencoder import train_autoencoder\n"
            "train_autoencoder(torch.nn.functional.normalize(torch.randn(256, 12), dim=-1), iterations=3)\n"
            "import engine.segment.saga.training, engine.motion.rigid_lifting\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
