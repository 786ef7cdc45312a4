"""SAM (segment-anything) masks of views: automatic multi-granularity masks, point-prompted masks, and each
mask's 3D scale from rendered depth (SAGA's scale of a mask). Registers the SAM checkpoints in the model registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.registry import ModelEntry, ModelUnavailableError, fetch, is_available, register

SAM_VARIANTS = ("vit_h", "vit_l", "vit_b")
DEFAULT_SAM_VARIANT = "vit_h"
_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"

# Official checkpoints of facebookresearch/segment-anything (Apache-2.0); sizes and sha256 as published
# alongside them (the file names carry a short hash of their own).
for _variant, _file, _size, _sha, _params in (
        ("vit_h", "sam_vit_h_4b8939.pth", 2564550879,
         "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", "636M"),
        ("vit_l", "sam_vit_l_0b3195.pth", 1249524607,
         "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", "308M"),
        ("vit_b", "sam_vit_b_01ec64.pth", 375042383,
         "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", "91M")):
    register(ModelEntry(id=f"sam_{_variant}", kind="sam", source="url", location=_SAM_URL + _file,
                        size_bytes=_size, licence="Apache-2.0", sha256=_sha,
                        description=f"Segment Anything {_variant.replace('_', '-').upper()} ({_params} parameters)"))

TINY_IMAGE_SIZE = 64


def _build(variant: str):
    """An untrained Sam of the variant's architecture (weights are loaded separately)."""
    if variant == "tiny":
        return tiny_sam()
    if variant not in SAM_VARIANTS:
        raise ValueError(f"unknown SAM variant {variant!r} (expected one of {', '.join(SAM_VARIANTS)})")
    from segment_anything import sam_model_registry

    return sam_model_registry[variant](checkpoint=None)


def choose_variant(requested: str | None = None) -> str:
    """The SAM variant to load: the one asked for, else the largest whose checkpoint is on this machine, else
    the default (fetched on first use). A user with only vit_b gets vit_b, not a 2.5 GB download."""
    if requested:
        if requested not in SAM_VARIANTS and requested != "tiny":
            raise ModelUnavailableError(f"unknown SAM model {requested!r}",
                                        hint=f"choose one of: {', '.join(SAM_VARIANTS)}")
        return requested
    return next((v for v in SAM_VARIANTS if is_available(f"sam_{v}")), DEFAULT_SAM_VARIANT)


def load_sam(variant: str | None = None, device: str | torch.device = "cpu",
             checkpoint: str | Path | None = None, progress=None):
    """A SAM model in eval mode on `device`: weights from `checkpoint`, else the registry's (fetched on first
    use; ModelUnavailableError says where to put them when offline). `variant` "tiny" is the test model; None
    is choose_variant's pick."""
    variant = choose_variant(variant) if checkpoint is None else (variant or DEFAULT_SAM_VARIANT)
    if checkpoint is None:
        checkpoint = fetch(f"sam_{variant}", progress=progress)
    sam = _build(variant)
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    sam.load_state_dict(state)
    return sam.to(device).eval()


def tiny_sam(seed: int = 0):
    """A randomly initialised Sam with SAM's own classes, small enough for CPU tests (64 px input)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    dim, patch = 32, 16
    grid = TINY_IMAGE_SIZE // patch
    encoder = ImageEncoderViT(img_size=TINY_IMAGE_SIZE, patch_size=patch, embed_dim=dim, depth=1, num_heads=2,
                              mlp_ratio=2.0, out_chans=dim, qkv_bias=True, use_rel_pos=True, window_size=0,
                              global_attn_indexes=())
    prompt = PromptEncoder(embed_dim=dim, image_embedding_size=(grid, grid),
                           input_image_size=(TINY_IMAGE_SIZE, TINY_IMAGE_SIZE), mask_in_chans=8)
    decoder = MaskDecoder(num_multimask_outputs=3,
                          transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
                          transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32)
    return Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder,
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


def mask_generator(sam, points_per_side: int = 32, pred_iou_thresh: float = 0.88,
                   stability_score_thresh: float = 0.92, min_mask_region_area: int = 0, **kwargs: Any):
    """SamAutomaticMaskGenerator with SAGA-like settings (a grid of point prompts, every granularity kept)."""
    from segment_anything import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator(sam, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                                     stability_score_thresh=stability_score_thresh,
                                     min_mask_region_area=min_mask_region_area, output_mode="binary_mask",
                                     **kwargs)


def _as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image.shape}")
    if image.dtype != np.uint8:  # float images in [0, 1] (our renders)
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(image)


@torch.no_grad()
def automatic_masks(image: np.ndarray, generator) -> np.ndarray:
    """Every mask SAM finds in an (H, W, 3) image (uint8, or float in [0, 1]) -> (M, H, W) bool, largest first."""
    image = _as_uint8_rgb(image)
    records = generator.generate(image)
    if not records:
        return np.zeros((0,) + image.shape[:2], bool)
    records.sort(key=lambda r: -int(r["area"]))
    return np.stack([np.asarray(r["segmentation"], bool) for r in records])


@torch.no_grad()
def point_masks(image: np.ndarray, points_xy, predictor, labels=None) -> np.ndarray:
    """SAM's three masks (its multimask output: small part → whole) for point prompts (P, 2) in pixels of the
    image; `labels` 1 = foreground (default), 0 = background. `predictor` is a SamPredictor (or a Sam)."""
    from segment_anything import SamPredictor

    if not isinstance(predictor, SamPredictor):
        predictor = SamPredictor(predictor)
    points = np.asarray(points_xy, np.float32).reshape(-1, 2)
    labels = np.ones(len(points), np.int64) if labels is None else np.asarray(labels, np.int64)
    predictor.set_image(_as_uint8_rgb(image))
    masks, _, _ = predictor.predict(point_coords=points, point_labels=labels, multimask_output=True)
    return np.asarray(masks, bool)


def label_map_to_masks(labels: np.ndarray) -> np.ndarray:
    """An (H, W) int label map (−1 = no mask) -> (M, H, W) bool, one mask per label present."""
    labels = np.asarray(labels)
    present = np.unique(labels[labels >= 0])
    return labels[None] == present[:, None, None]


def mask_scales(masks: torch.Tensor, depth: torch.Tensor, K, alpha: torch.Tensor | None = None,
                min_pixels: int = 8) -> torch.Tensor:
    """SAGA's 3D scale of each 2D mask: the mask's pixels back-projected with the rendered depth, scale =
    2 × RMS distance from their centroid (≈ the diameter of a sphere's visible cap). masks (M, H, W) bool,
    depth (H, W) camera z, K (3, 3). Masks with fewer than `min_pixels` pixels of valid depth get NaN."""
    masks = torch.as_tensor(masks)
    device = masks.device
    depth = torch.as_tensor(depth, device=device, dtype=torch.float32)
    K = torch.as_tensor(np.asarray(K), device=device, dtype=torch.float32)
    H, W = depth.shape
    valid = depth > 0
    if alpha is not None:
        valid &= torch.as_tensor(alpha, device=device) > 0.5
    v, u = torch.meshgrid(torch.arange(H, device=device, dtype=torch.float32) + 0.5,
                          torch.arange(W, device=device, dtype=torch.float32) + 0.5, indexing="ij")
    points = torch.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], -1)
    points = points.reshape(-1, 3)
    weights = (masks.reshape(len(masks), -1) & valid.reshape(1, -1)).float()          # (M, HW)
    count = weights.sum(1)
    centre = points.mean(0)                                  # centred sums keep float32 accurate
    p = points - centre
    mean = weights @ p / count.clamp_min(1)[:, None]
    second = weights @ (p * p) / count.clamp_min(1)[:, None]
    var = (second - mean * mean).clamp_min(0).sum(1)
    scale = 2.0 * torch.sqrt(var)
    return torch.where(count >= min_pixels, scale, torch.full_like(scale, float("nan")))
