"""The autoencoder that compresses a scene's video-language features to a few dimensions before lifting (as
4-LEGS does: L2 + cosine reconstruction, unit-norm codes).

The decoder is affine on purpose: relevancy then has a closed form in code space (a dot product and a
quadratic form per Gaussian), so a text query over every Gaussian and timestep takes milliseconds, and
averaging codes (what lifting does) averages the decoded features exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..adam import Adam


class FeatureAutoencoder(nn.Module):
    def __init__(self, feature_dim: int, code_dim: int, hidden: tuple[int, int] = (256, 128)) -> None:
        super().__init__()
        self.feature_dim, self.code_dim = feature_dim, code_dim
        self.encoder = nn.Sequential(nn.Linear(feature_dim, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]),
                                     nn.ReLU(), nn.Linear(hidden[1], code_dim))
        self.decoder = nn.Linear(code_dim, feature_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(x), dim=-1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


@dataclass
class AutoencoderFit:
    model: FeatureAutoencoder
    cosine: float          # mean cosine similarity of decoded to input features after training


def train_autoencoder(features: torch.Tensor, code_dim: int = 16, iterations: int = 400, lr: float = 3e-3,
                      batch: int = 4096, seed: int = 0) -> AutoencoderFit:
    """Fit on (M, D) unit features (on their device). code_dim is capped at D. Deterministic for a seed, and
    the caller's random state is left as it was (the model's initialisation draws from a forked CPU one)."""
    x = F.normalize(features.float(), dim=-1)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        model = FeatureAutoencoder(x.shape[1], min(code_dim, x.shape[1])).to(x.device)
    opt = Adam(model.parameters(), lr=lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.enable_grad():
        for _ in range(iterations):
            idx = torch.randint(0, len(x), (min(batch, len(x)),), generator=gen).to(x.device)
            xb = x[idx]
            rec = model.decode(model.encode(xb))
            loss = F.mse_loss(rec, xb) * x.shape[1] + (1 - F.cosine_similarity(rec, xb, dim=-1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        cos = F.cosine_similarity(model.decode(model.encode(x)), x, dim=-1).mean().item()
    return AutoencoderFit(model=model, cosine=cos)
