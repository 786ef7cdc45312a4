"""A small in-repo definition of ViCLIP (InternVid's video CLIP: a CLIP ViT with a temporal position embedding,
and CLIP's text transformer), so its released checkpoint loads without the InternVideo code.

Parameter names follow the checkpoint ViClip-InternVid-10M-FLT.pth (`model` → vision_encoder.*, text_encoder.*,
temp); `ViCLIPConfig.large()` is the released ViT-L/14 shape, tests build tiny random ones.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import AnimateGaussiansError


@dataclass(frozen=True)
class ViCLIPConfig:
    resolution: int = 224
    patch: int = 14
    width: int = 1024
    layers: int = 24
    heads: int = 16
    frames: int = 8
    embed_dim: int = 768
    text_width: int = 768
    text_layers: int = 12
    text_heads: int = 12
    context_length: int = 32
    vocab_size: int = 49408

    @classmethod
    def large(cls) -> "ViCLIPConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "ViCLIPConfig":
        return cls(resolution=32, patch=8, width=32, layers=2, heads=2, frames=4, embed_dim=16, text_width=32,
                   text_layers=2, text_heads=2)


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Block(nn.Module):
    """Pre-norm transformer block with CLIP's parameter names (attn, ln_1, mlp.c_fc, mlp.c_proj, ln_2)."""

    def __init__(self, width: int, heads: int, causal_length: int | None = None) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", _QuickGELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = nn.LayerNorm(width)
        mask = None
        if causal_length is not None:
            mask = torch.full((causal_length, causal_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (L, B, C)
        h = self.ln_1(x)
        mask = None if self.attn_mask is None else self.attn_mask[: x.shape[0], : x.shape[0]].to(x.dtype)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, causal_length: int | None = None) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[_Block(width, heads, causal_length) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VideoEncoder(nn.Module):
    def __init__(self, c: ViCLIPConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, c.width, (1, c.patch, c.patch), (1, c.patch, c.patch), bias=False)
        scale = c.width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(c.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((c.resolution // c.patch) ** 2 + 1, c.width))
        self.temporal_positional_embedding = nn.Parameter(torch.zeros(1, c.frames, c.width))
        self.ln_pre = nn.LayerNorm(c.width)
        self.transformer = _Transformer(c.width, c.layers, c.heads)
        self.ln_post = nn.LayerNorm(c.width)
        self.proj = nn.Parameter(scale * torch.randn(c.width, c.embed_dim))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W), normalised → (B, embed_dim). Patch tokens get spatial then temporal position
        embeddings; one class token attends over all T×P patch tokens."""
        x = self.conv1(video)                                   # (B, C, T, h, w)
        B, C, T = x.shape[:3]
        x = x.flatten(3).permute(0, 2, 3, 1)                    # (B, T, P, C)
        x = x + self.positional_embedding[1:].to(x.dtype)
        temporal = self.temporal_positional_embedding[:, :T] if T > 1 else self.temporal_positional_embedding.mean(1, keepdim=True)
        x = x + temporal[:, :, None, :].to(x.dtype)
        x = x.permute(0, 2, 1, 3).reshape(B, -1, C)             # patch-major, time-minor, as the original
        cls = (self.class_embedding + self.positional_embedding[0]).to(x.dtype).expand(B, 1, C)
        x = self.ln_pre(torch.cat([cls, x], dim=1))
        x = self.transformer(x.permute(1, 0, 2))
        return self.ln_post(x[0]) @ self.proj


class TextEncoder(nn.Module):
    def __init__(self, c: ViCLIPConfig) -> None:
        super().__init__()
        self.transformer = _Transformer(c.text_width, c.text_layers, c.text_heads, causal_length=c.context_length)
        self.token_embedding = nn.Embedding(c.vocab_size, c.text_width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(c.context_length, c.text_width))
        self.ln_final = nn.LayerNorm(c.text_width)
        self.text_projection = nn.Parameter(c.text_width ** -0.5 * torch.randn(c.text_width, c.embed_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) int, end-of-text the largest id of each row → (B, embed_dim)."""
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        x = self.ln_final(self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2))
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.text_projection


class ViCLIP(nn.Module):
    def __init__(self, config: ViCLIPConfig = ViCLIPConfig()) -> None:
        super().__init__()
        self.config = config
        self.vision_encoder = VideoEncoder(config)
        self.text_encoder = TextEncoder(config)
        self.temp = nn.Parameter(torch.tensor(0.01))


class ViCLIPLoadError(AnimateGaussiansError):
    hint = ("use ViClip-InternVid-10M-FLT.pth from huggingface.co/OpenGVLab/ViCLIP (accept its conditions "
            "there), and set ANIMATE_GAUSSIANS_MODEL_VICLIP_L14_INTERNVID_10M_FLT to it")


def load_viclip(path: str | Path, config: ViCLIPConfig | None = None, device: str | torch.device = "cpu") -> ViCLIP:
    """A ViCLIP with the checkpoint's weights (a {'model': state_dict} file, or the state dict itself)."""
    config = config or ViCLIPConfig.large()
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file means the same to the user
        raise ViCLIPLoadError(f"cannot read the ViCLIP checkpoint {path}: {exc}") from exc
    state = state.get("model", state)
    model = ViCLIP(config)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        raise ViCLIPLoadError(f"{Path(path).name} does not fit ViCLIP ({config.width}-wide, {config.layers} layers): "
                              f"missing {missing[:3]}, wrong shape {wrong[:3]}")
    model.load_state_dict({k: state[k] for k in own})
    return model.eval().to(device)
