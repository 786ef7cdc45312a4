"""Per-frame relative depth of a motion video from a monocular depth model (Animate3DGS stage C).

Depth Anything V2 (transformers) gives relative disparity; Marigold (diffusers) gives affine-invariant depth.
Either way the scale and shift are unknown: engine/motion/depth_alignment.py fits them to the engine's own render.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..models.registry import ModelEntry, fetch, register

Progress = Callable[[float, str], None]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class DepthModel:
    id: str
    loader: str        # "depth_anything" | "marigold"
    output: str        # "disparity" (larger = nearer) | "depth" (larger = farther)
    input_size: int    # the short side the model runs at


DEPTH_MODELS = {
    "depth-anything-v2-small": DepthModel("depth-anything-v2-small", "depth_anything", "disparity", 518),
    "depth-anything-v2-base": DepthModel("depth-anything-v2-base", "depth_anything", "disparity", 518),
    "depth-anything-v2-large": DepthModel("depth-anything-v2-large", "depth_anything", "disparity", 518),
    "marigold-depth-v1-1": DepthModel("marigold-depth-v1-1", "marigold", "depth", 768),
}
DEFAULT_DEPTH_MODEL = "depth-anything-v2-small"

register(ModelEntry(id="depth-anything-v2-small", kind="depth", source="hf",
                    location="depth-anything/Depth-Anything-V2-Small-hf", size_bytes=99_000_000,
                    licence="Apache-2.0", description="Depth Anything V2 Small (25M parameters), relative disparity"))
register(ModelEntry(id="depth-anything-v2-base", kind="depth", source="hf",
                    location="depth-anything/Depth-Anything-V2-Base-hf", size_bytes=390_000_000,
                    licence="CC-BY-NC-4.0", description="Depth Anything V2 Base (97M parameters), relative disparity"))
register(ModelEntry(id="depth-anything-v2-large", kind="depth", source="hf",
                    location="depth-anything/Depth-Anything-V2-Large-hf", size_bytes=1_340_000_000,
                    licence="CC-BY-NC-4.0", description="Depth Anything V2 Large (335M parameters), relative disparity"))
register(ModelEntry(id="marigold-depth-v1-1", kind="depth", source="hf", location="prs-eth/marigold-depth-v1-1",
                    size_bytes=5_200_000_000, licence="see the model card (prs-eth/marigold-depth-v1-1)",
                    description="Marigold depth v1.1 (diffusion, Stable Diffusion 2 based), affine-invariant depth"))

_LOADED: dict[tuple[str, str], Any] = {}


def load_depth_model(model_id: str, device: str, progress: Progress | None = None) -> Any:
    """The model (Depth Anything: a transformers module; Marigold: a diffusers pipeline), cached per process."""
    key = (model_id, device)
    if key not in _LOADED:
        spec = DEPTH_MODELS[model_id]
        path = fetch(model_id, progress=progress)
        if spec.loader == "depth_anything":
            from transformers import DepthAnythingForDepthEstimation
            model = DepthAnythingForDepthEstimation.from_pretrained(str(path)).to(device).eval()
        else:
            import torch
            from diffusers import MarigoldDepthPipeline
            model = MarigoldDepthPipeline.from_pretrained(
                str(path), torch_dtype=torch.float16 if device.startswith("cuda") else torch.float32).to(device)
            model.set_progress_bar_config(disable=True)
        _LOADED[key] = model
    return _LOADED[key]


def _network_size(height: int, width: int, short_side: int, multiple: int = 14) -> tuple[int, int]:
    """Keep the aspect ratio, scale the short side to `short_side`, round both sides to the patch multiple."""
    scale = short_side / min(height, width)
    return (max(multiple, int(round(height * scale / multiple)) * multiple),
            max(multiple, int(round(width * scale / multiple)) * multiple))


def depth_anything(model: Any, frames: np.ndarray, device: str, input_size: int, batch_size: int = 4,
                   progress: Progress | None = None, check_cancelled: Callable[[], None] | None = None) -> np.ndarray:
    """Relative disparity (F, H, W) float32 from a DepthAnythingForDepthEstimation, at the frames' own size."""
    import torch
    import torch.nn.functional as F

    count, height, width = frames.shape[:3]
    net_h, net_w = _network_size(height, width, input_size, int(getattr(model.config, "patch_size", 14)))
    mean = torch.as_tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    out = np.empty((count, height, width), dtype=np.float32)
    for start in range(0, count, batch_size):
        if check_cancelled is not None:
            check_cancelled()
        batch = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch_size, ..., :3])).to(device)
        x = batch.permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(net_h, net_w), mode="bicubic", align_corners=False).clamp(0, 1)
        with torch.inference_mode():
            predicted = model(pixel_values=(x - mean) / std).predicted_depth          # (B, net_h, net_w)
        predicted = F.interpolate(predicted[:, None].float(), size=(height, width), mode="bilinear",
                                  align_corners=False)[:, 0]
        out[start:start + len(batch)] = predicted.cpu().numpy()
        if progress is not None:
            progress(min(1.0, (start + len(batch)) / count), f"depth: frame {start + len(batch)} of {count}")
    return out


def marigold(pipe: Any, frames: np.ndarray, steps: int | None = None, progress: Progress | None = None,
             check_cancelled: Callable[[], None] | None = None, seed: int = 0) -> np.ndarray:
    """Affine-invariant depth (F, H, W) float32 in [0, 1] from a MarigoldDepthPipeline, frame by frame."""
    import torch
    from PIL import Image

    count = len(frames)
    out = np.empty(frames.shape[:3], dtype=np.float32)
    for f in range(count):
        if check_cancelled is not None:
            check_cancelled()
        result = pipe(Image.fromarray(np.ascontiguousarray(frames[f, ..., :3])), num_inference_steps=steps,
                      output_type="np", generator=torch.Generator("cpu").manual_seed(seed))
        out[f] = np.asarray(result.prediction, dtype=np.float32).reshape(frames.shape[1:3])
        if progress is not None:
            progress((f + 1) / count, f"depth: frame {f + 1} of {count}")
    return out


def estimate_depth(frames: np.ndarray, model_id: str = DEFAULT_DEPTH_MODEL, device: str = "cpu",
                   progress: Progress | None = None, check_cancelled: Callable[[], None] | None = None,
                   model: Any = None, batch_size: int = 4, input_size: int | None = None) -> tuple[np.ndarray, str]:
    """Relative depth of each frame: ((F, H, W) float32, "disparity" | "depth"). `model` injects a loaded
    model (tests use a tiny random one); otherwise the registry's weights are loaded (downloaded if allowed).
    `input_size` overrides the short side the network runs at (smaller is faster and coarser)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] < 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (F, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if model_id not in DEPTH_MODELS:
        from ..models.registry import ModelUnavailableError
        raise ModelUnavailableError(f"unknown depth model {model_id!r}",
                                    hint=f"choose one of: {', '.join(DEPTH_MODELS)}")
    spec = DEPTH_MODELS[model_id]
    model = model if model is not None else load_depth_model(model_id, device, progress)
    if spec.loader == "depth_anything":
        values = depth_anything(model, frames, device, input_size or spec.input_size, batch_size, progress,
                                check_cancelled)
    else:
        values = marigold(model, frames, progress=progress, check_cancelled=check_cancelled)
    return values, spec.output


def tiny_depth_anything(seed: int = 0) -> Any:
    """A randomly initialised DepthAnythingForDepthEstimation with a 4-layer, 32-wide DINOv2 backbone (tests)."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(seed)
    backbone = Dinov2Config(image_size=518, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=37, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False, apply_layernorm=True)
    config = DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=32,
                                 neck_hidden_sizes=[8, 16, 32, 64], fusion_hidden_size=16, head_hidden_size=8)
    return DepthAnythingForDepthEstimation(config).eval()
