"""Text queries over image regions with open_clip: each SAM mask's crop is scored against a prompt by CLIP
relevancy (the prompt against canonical phrases, as LERF does). Registers the open_clip weights in the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models.registry import ModelEntry, fetch, register

DEFAULT_CLIP = "open_clip_vit_b16_laion2b"
CLIP_ARCHITECTURE = "ViT-B-16"
# Phrases that describe "anything": a crop is relevant when the prompt beats every one of them.
CANONICAL_PHRASES = ("object", "things", "stuff", "texture")

register(ModelEntry(
    id=DEFAULT_CLIP, kind="clip", source="hf", location="laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
    filename="open_clip_pytorch_model.bin", size_bytes=599_000_000, licence="MIT",
    description="OpenCLIP ViT-B/16 trained on LAION-2B (text queries over mask crops)"))


@dataclass
class ClipModel:
    """An open_clip model with what it needs around it: its tokenizer and input normalisation."""

    model: torch.nn.Module
    tokenizer: object
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device


def _weights_file(path: Path) -> Path:
    """The weights file inside a fetched hub snapshot folder (or the file itself)."""
    if path.is_file():
        return path
    for name in ("open_clip_pytorch_model.bin", "open_clip_model.safetensors"):
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"no open_clip weights in {path}")


def load_clip(device: str | torch.device = "cpu", model_id: str = DEFAULT_CLIP,
              checkpoint: str | Path | None = None, architecture: str = CLIP_ARCHITECTURE,
              progress=None) -> ClipModel:
    """open_clip `architecture` with the registry's weights (fetched on first use) or those at `checkpoint`."""
    import open_clip

    path = Path(checkpoint) if checkpoint is not None else fetch(model_id, progress=progress)
    model = open_clip.create_model(architecture, pretrained=str(_weights_file(path)), device=device)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return ClipModel(model.eval(), open_clip.get_tokenizer(architecture), int(size),
                     open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD, torch.device(device))


def tiny_clip(device: str | torch.device = "cpu", seed: int = 0) -> ClipModel:
    """A randomly initialised open_clip CLIP (1-layer towers, 32-px input) with the real bundled tokenizer."""
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8,
                                                        image_size=32),
                 text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))
    return ClipModel(model.to(device).eval(), open_clip.get_tokenizer(CLIP_ARCHITECTURE), 32,
                     open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD, torch.device(device))


def mask_crops(image: np.ndarray, masks: np.ndarray, size: int, margin: float = 0.1) -> torch.Tensor:
    """Each mask's bounding box (with a margin) cut from the image, pixels outside the mask greyed, resized to
    size × size -> (M, 3, size, size) float in [0, 1]. The grey keeps CLIP on the masked region only."""
    img = torch.as_tensor(np.asarray(image))
    img = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
    masks = torch.as_tensor(np.asarray(masks, bool))
    H, W = img.shape[:2]
    crops = []
    for m in masks:  # one crop per mask (tens per view), not per pixel
        ys, xs = torch.nonzero(m, as_tuple=True)
        if len(ys) == 0:
            crops.append(torch.full((3, size, size), 0.5))
            continue
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        side = max(y1 - y0, x1 - x0) * (1 + 2 * margin)
        cy, cx = 0.5 * (y0 + y1), 0.5 * (x0 + x1)
        y0, y1 = max(0, int(cy - side / 2)), min(H, int(np.ceil(cy + side / 2)))
        x0, x1 = max(0, int(cx - side / 2)), min(W, int(np.ceil(cx + side / 2)))
        patch = torch.where(m[y0:y1, x0:x1, None], img[y0:y1, x0:x1], torch.full_like(img[y0:y1, x0:x1], 0.5))
        crops.append(F.interpolate(patch.permute(2, 0, 1)[None], size=(size, size), mode="bilinear",
                                   align_corners=False, antialias=True)[0])
    return torch.stack(crops) if crops else torch.zeros(0, 3, size, size)


@torch.no_grad()
def encode_text(clip: ClipModel, phrases: list[str]) -> torch.Tensor:
    tokens = clip.tokenizer(list(phrases)).to(clip.device)
    return F.normalize(clip.model.encode_text(tokens).float(), dim=-1)


@torch.no_grad()
def encode_crops(clip: ClipModel, crops: torch.Tensor, batch: int = 64) -> torch.Tensor:
    mean = torch.tensor(clip.mean, device=clip.device)[:, None, None]
    std = torch.tensor(clip.std, device=clip.device)[:, None, None]
    out = []
    for i in range(0, len(crops), batch):
        x = (crops[i:i + batch].to(clip.device) - mean) / std
        out.append(F.normalize(clip.model.encode_image(x).float(), dim=-1))
    return torch.cat(out) if out else torch.zeros(0, 1, device=clip.device)


def relevancy(image_embeddings: torch.Tensor, prompt_embedding: torch.Tensor,
              canonical_embeddings: torch.Tensor, temperature: float = 10.0) -> torch.Tensor:
    """LERF relevancy of each image embedding (M, E) for a prompt (E,): the smallest, over the canonical
    phrases, probability that the prompt beats the phrase (softmax of temperature × cosine). In [0, 1]."""
    pos = image_embeddings @ prompt_embedding                                    # (M,)
    neg = image_embeddings @ canonical_embeddings.T                              # (M, C)
    pair = torch.stack([pos[:, None].expand_as(neg), neg], dim=-1) * temperature
    return torch.softmax(pair, dim=-1)[..., 0].min(dim=-1).values


def mask_relevancy(clip: ClipModel, image: np.ndarray, masks: np.ndarray, prompt: str,
                   canonical: tuple[str, ...] = CANONICAL_PHRASES) -> np.ndarray:
    """(M,) relevancy in [0, 1] of each mask's crop of `image` for the text `prompt`."""
    if len(masks) == 0:
        return np.zeros(0, np.float32)
    texts = encode_text(clip, [prompt, *canonical])
    crops = mask_crops(image, masks, clip.image_size)
    return relevancy(encode_crops(clip, crops), texts[0], texts[1:]).cpu().numpy().astype(np.float32)
