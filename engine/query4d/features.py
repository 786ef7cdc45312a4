"""Video-language features of clips: ViCLIP when its weights are there, else open_clip over the clip's frames
(pooled over the window), and an oracle with the same interface for tests. Pixel-aligned features come from a
pyramid of crops of each clip (as LERF / 4-LEGS): each pixel gets the mean feature of the crops that hold it.

An extractor has `name`, `dim`, `clip_length`, `input_size`, `encode_clips(rgb, aux) -> (B, D)` (unit rows)
and `encode_text(texts) -> (K, D)` (unit rows); rgb is (B, T, S, S, 3) in [0, 1], aux the oracle's channels.
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AnimateGaussiansError
from ..models.registry import ModelEntry, ModelUnavailableError, fetch, is_available, register
from ..segment.clip_text import DEFAULT_CLIP

VICLIP_ID = "viclip-l14-internvid-10m-flt"
CLIP_ID = DEFAULT_CLIP   # the open_clip ViT-B-16 LAION-2B weights, registered once by engine/segment/clip_text.py
# LERF's canonical negatives: relevancy of a query is measured against these.
CANONICAL_NEGATIVES = ("object", "things", "stuff", "texture")

register(ModelEntry(
    id=VICLIP_ID, kind="video_text", source="hf", location="OpenGVLab/ViCLIP",
    filename="ViClip-InternVid-10M-FLT.pth", size_bytes=1_709_000_000, licence="Apache-2.0 (gated: accept on the hub)",
    description="ViCLIP ViT-L/14 trained on InternVid-10M-FLT (the video features 4-LEGS uses)"))


class FeatureExtractorError(AnimateGaussiansError):
    hint = ("give ViCLIP's weights (see docs/query4d.md), or let the engine use open_clip ViT-B-16; "
            "check the engine's model status")


class FeatureExtractor(Protocol):
    name: str
    dim: int
    clip_length: int
    input_size: int

    def encode_clips(self, rgb: torch.Tensor, aux: torch.Tensor | None) -> torch.Tensor: ...

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor: ...


class OracleFeatureExtractor:
    """Label-derived embeddings: a clip's feature is its label coverage at the clip's centre frame (weighted
    towards the crop's middle), split into "label at rest" and "label moving" (speed above `speed_threshold`),
    plus a shared direction every embedding has (as CLIP's embeddings share one), which is also what text
    naming no label (the canonical negatives) maps to. Text names a label, and motion by a motion word."""

    SHARED = 0.5   # weight of the shared direction in every concept embedding

    name = "oracle"
    input_size = 16
    batch = 8192      # clips encoded at once: a few small reductions each
    MOTION_WORDS = ("moving", "moves", "move", "rolling", "rolls", "flying", "flies", "sliding", "slides",
                    "thrown", "bouncing", "running", "falling", "motion")

    def __init__(self, label_names: dict[int, str], clip_length: int = 1, speed_threshold: float = 1e-4) -> None:
        self.label_names = dict(label_names)
        self.labels = max(self.label_names) + 1
        self.dim = 2 * self.labels + 2          # (label, at rest | moving) ..., empty space, generic
        self.clip_length = clip_length
        self.speed_threshold = speed_threshold

    def encode_clips(self, rgb: torch.Tensor, aux: torch.Tensor | None) -> torch.Tensor:
        if aux is None:
            raise FeatureExtractorError("the oracle extractor needs a labelled sequence (its `labels` array)",
                                        hint="use a sequence written with labels, or a real extractor")
        middle = aux[:, aux.shape[1] // 2]                           # (B, S, S, 2L)
        S = middle.shape[1]
        r = (torch.arange(S, device=aux.device, dtype=torch.float32) + 0.5) / S - 0.5
        window = torch.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / 0.25 ** 2)   # what a crop is "about"
        centre = (middle * window[None, :, :, None]).flatten(1, 2)   # (B, P, 2L)
        L = min(self.labels, centre.shape[-1] // 2)
        cover, moved = centre[..., :L], centre[..., L:2 * L]
        mass = cover.sum(1)                                          # (B, L)
        label_speed = moved.sum(1) / mass.clamp_min(1e-8)
        moving = (label_speed > self.speed_threshold).float()
        out = torch.zeros(rgb.shape[0], self.dim, device=rgb.device)
        out[:, 0:2 * L:2] = mass * (1 - moving)
        out[:, 1:2 * L:2] = mass * moving
        out[:, 2 * self.labels] = (window.sum() - cover.sum((1, 2))).clamp_min(0)   # empty space
        out = F.normalize(out, dim=-1)
        out[:, -1] = self.SHARED
        return F.normalize(out, dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim)
        for i, text in enumerate(texts):
            low = text.lower()
            hits = [(len(name), label) for label, name in self.label_names.items() if name.lower() in low]
            if not hits:
                out[i, -1] = 1.0
                continue
            label = max(hits)[1]
            moving = any(w in low for w in self.MOTION_WORDS)
            out[i, 2 * label + int(moving)] = 1.0
            out[i, -1] = self.SHARED
        return F.normalize(out, dim=-1)


class OpenClipFrameExtractor:
    """open_clip image features of each frame, averaged over the clip (the fallback without ViCLIP)."""

    name = "clip"
    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, model, tokenizer, device, clip_length: int = 4) -> None:
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.device = device
        self.clip_length = clip_length
        size = model.visual.image_size
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.dim = int(model.text_projection.shape[1] if model.text_projection is not None else model.visual.output_dim)

    @torch.no_grad()
    def encode_clips(self, rgb: torch.Tensor, aux: torch.Tensor | None) -> torch.Tensor:
        B, T = rgb.shape[:2]
        x = rgb.flatten(0, 1).permute(0, 3, 1, 2).to(self.device, torch.float32)
        mean = torch.tensor(self.MEAN, device=self.device)[:, None, None]
        std = torch.tensor(self.STD, device=self.device)[:, None, None]
        feats = F.normalize(self.model.encode_image((x - mean) / std).float(), dim=-1)
        return F.normalize(feats.reshape(B, T, -1).mean(1), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


class ViClipExtractor:
    """ViCLIP video features of the whole clip (8 frames for the released model)."""

    name = "viclip"
    MEAN = (0.485, 0.456, 0.406)     # InternVid's frame normalisation
    STD = (0.229, 0.224, 0.225)

    def __init__(self, model, device) -> None:
        from open_clip.tokenizer import SimpleTokenizer   # the same BPE vocabulary as ViCLIP's tokenizer

        self.model = model.eval().to(device)
        self.device = device
        self.clip_length = model.config.frames
        self.input_size = model.config.resolution
        self.dim = model.config.embed_dim
        self._tokenizer = SimpleTokenizer(context_length=model.config.context_length)

    @torch.no_grad()
    def encode_clips(self, rgb: torch.Tensor, aux: torch.Tensor | None) -> torch.Tensor:
        x = rgb.to(self.device, torch.float32)
        x = (x - torch.tensor(self.MEAN, device=self.device)) / torch.tensor(self.STD, device=self.device)
        video = x.permute(0, 4, 1, 2, 3)                               # (B, 3, T, H, W)
        return F.normalize(self.model.vision_encoder(video).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self._tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.text_encoder(tokens).float(), dim=-1)


def load_extractor(name: str, device, label_names: dict[int, str] | None = None,
                   progress=None) -> FeatureExtractor:
    """"viclip", "clip", "oracle", or "auto" (ViCLIP when its weights are on this machine, else open_clip)."""
    if name == "oracle":
        if not label_names:
            raise FeatureExtractorError("the oracle extractor needs label names", hint="pass label_names")
        return OracleFeatureExtractor(label_names)
    if name == "auto":
        name = "viclip" if is_available(VICLIP_ID) else "clip"
    if name == "viclip":
        from .viclip import ViCLIPConfig, load_viclip
        path = fetch(VICLIP_ID, progress)
        if path.is_dir():
            path = path / "ViClip-InternVid-10M-FLT.pth"
        return ViClipExtractor(load_viclip(path, ViCLIPConfig.large(), device), device)
    if name == "clip":
        try:
            import open_clip
        except ImportError as exc:
            raise FeatureExtractorError("open_clip is not installed in the engine environment",
                                        hint="pip install open-clip-torch in the engine environment") from exc
        path = fetch(CLIP_ID, progress)
        if path.is_dir():
            path = path / "open_clip_pytorch_model.bin"
        model, _, _ = open_clip.create_model_and_transforms("ViT-B-16", pretrained=str(path))
        return OpenClipFrameExtractor(model, open_clip.get_tokenizer("ViT-B-16"), device)
    raise FeatureExtractorError(f"unknown feature extractor {name!r} (expected auto, viclip, clip or oracle)")


def crop_boxes(height: int, width: int, scales: Sequence[float]) -> np.ndarray:
    """(C, 4) square crops (y0, x0, y1, x1): per scale, side = scale × the short side, overlapping by half."""
    boxes = []
    short = min(height, width)
    for s in scales:
        side = max(2, int(round(s * short)))
        ny = max(1, math.ceil((height - side) / (side / 2)) + 1)
        nx = max(1, math.ceil((width - side) / (side / 2)) + 1)
        for y in np.linspace(0, height - side, ny).round().astype(int):
            for x in np.linspace(0, width - side, nx).round().astype(int):
                boxes.append((y, x, y + side, x + side))
    return np.array(boxes, dtype=np.int64)


def crop_membership(boxes: np.ndarray, height: int, width: int, device) -> torch.Tensor:
    """(C, H·W) weight of each crop's feature at each pixel: zero outside the crop, inside a Gaussian window
    about the crop's centre (σ = a quarter of its side), divided by the side. A pixel's feature then comes
    mostly from the smallest crops centred on it, the purest ones, as LERF's best-scale choice would."""
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float32)[None, :] + 0.5
    b = torch.as_tensor(boxes, device=device, dtype=torch.float32)
    y0, x0, y1, x1 = (b[:, i, None, None] for i in range(4))
    side = y1 - y0
    inside = (ys[None] >= y0) & (ys[None] < y1) & (xs[None] >= x0) & (xs[None] < x1)
    d2 = (ys[None] - 0.5 * (y0 + y1)) ** 2 + (xs[None] - 0.5 * (x0 + x1)) ** 2
    weight = torch.exp(-0.5 * d2 / (0.25 * side) ** 2) / side
    return (inside * weight).flatten(1)


def crops_of_clip(clip: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
    """(T, H, W, C) → (len(boxes), T, size, size, C), each crop resized (area-averaged when shrinking). Boxes
    of one side form a grid (crop_boxes' order), gathered at once by indexing."""
    x = clip.permute(0, 3, 1, 2)                                          # (T, C, H, W)
    T, C = x.shape[:2]
    out = []
    sides = boxes[:, 2] - boxes[:, 0]
    start = 0
    while start < len(boxes):
        side = int(sides[start])
        end = start
        while end < len(boxes) and sides[end] == side:
            end += 1
        group = boxes[start:end]
        ys, xs = np.unique(group[:, 0]), np.unique(group[:, 1])
        offs = torch.arange(side, device=x.device)
        rows = torch.as_tensor(ys, device=x.device)[:, None] + offs             # (ny, side)
        cols = torch.as_tensor(xs, device=x.device)[:, None] + offs             # (nx, side)
        crops = x[:, :, rows[:, None, :, None], cols[None, :, None, :]]          # (T, C, ny, nx, side, side)
        crops = crops.permute(2, 3, 0, 1, 4, 5).reshape(-1, C, side, side)       # (ny·nx·T, C, side, side)
        if side >= size:
            crops = F.adaptive_avg_pool2d(crops, size)
        else:
            crops = F.interpolate(crops, size=(size, size), mode="bilinear", align_corners=False)
        out.append(crops.reshape(len(ys) * len(xs), T, C, size, size))
        start = end
    return torch.cat(out).permute(0, 1, 3, 4, 2)


def clip_crop_features(extractor: FeatureExtractor, rgb: torch.Tensor, aux: torch.Tensor | None,
                       boxes: np.ndarray, batch: int | None = None) -> torch.Tensor:
    """(C, D) features of the crops of one clip (rgb (T, H, W, 3), aux (T, H, W, A) or None), or (V, C, D)
    of V clips at once (rgb (V, T, H, W, 3), aux (V, T, H, W, A)): the crops of all of them are cut in one
    gather and encoded in batches of the extractor's `batch` clips (64 unless it says)."""
    views = rgb.shape[0] if rgb.dim() == 5 else None
    if views is not None:     # the views' frames side by side: crops_of_clip treats frames alike
        rgb = rgb.flatten(0, 1)
        aux = aux.flatten(0, 1) if aux is not None else None

    def crops(x: torch.Tensor) -> torch.Tensor:
        c = crops_of_clip(x, boxes, extractor.input_size)               # (C, V·T, S, S, A)
        if views is None:
            return c
        c = c.reshape(len(boxes), views, -1, *c.shape[2:]).transpose(0, 1)
        return c.reshape(views * len(boxes), *c.shape[2:])              # (V·C, T, S, S, A)

    rgb_crops = crops(rgb)
    aux_crops = crops(aux) if aux is not None else None
    batch = batch or int(getattr(extractor, "batch", 64))
    feats = [extractor.encode_clips(rgb_crops[i:i + batch], None if aux_crops is None else aux_crops[i:i + batch])
             for i in range(0, len(rgb_crops), batch)]
    out = torch.cat(feats).float()
    return out if views is None else out.reshape(views, len(boxes), -1)
