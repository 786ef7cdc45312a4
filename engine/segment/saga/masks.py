"""Per-view masks as SAGA trains on them: each view's masks sorted by 3D scale, the pixels they cover, each
pixel's identity (its smallest mask of at least a scale) and the scales sampled per training step; SAM's
automatic masks of the views when none are given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..views import View
from .features import SagaError
from .rendering import NullContext, ViewContributions, view_images


@dataclass
class ViewMasks:
    """One view's masks as training reads them."""

    masks: torch.Tensor       # (M, H·W) bool, ascending scale
    scales: torch.Tensor      # (M,) 3D scales
    candidates: torch.Tensor  # (P,) pixel indices inside at least one mask, drawn where something was rendered


def _as_mask_stack(masks) -> np.ndarray:
    from ..sam_masks import label_map_to_masks

    masks = np.asarray(masks)
    return label_map_to_masks(masks) if masks.ndim == 2 else masks.astype(bool)


def prepare_masks(view_masks: list, contributions: Sequence[ViewContributions], views: Sequence[View],
                  device) -> list[ViewMasks]:
    """Each view's masks ((M, H, W) bool or an (H, W) label map) with their 3D scales from the view's rendered
    depth, those of no finite scale dropped, sorted by scale; `contributions` per view (view_contributions)."""
    from ..sam_masks import mask_scales

    out = []
    for v, masks in enumerate(view_masks):
        view = views[v]
        stack = torch.from_numpy(_as_mask_stack(masks)).to(device)
        if stack.shape[1:] != (view.height, view.width):
            raise SagaError(f"the masks of view {view.name} are {tuple(stack.shape[1:])}, the view is "
                            f"{view.height}×{view.width}", hint="give masks at the views' resolution")
        depth, alpha = contributions[v].depth_alpha()
        scales = mask_scales(stack, depth, view.K, alpha)
        keep = torch.isfinite(scales) & (scales > 0)
        stack, scales = stack[keep], scales[keep]
        order = torch.argsort(scales)
        stack, scales = stack[order].reshape(len(order), -1), scales[order]
        covered = stack.any(0) & (alpha.reshape(-1) > 0.5)
        out.append(ViewMasks(stack, scales, torch.nonzero(covered).squeeze(1)))
    return out


def pixel_identity(vm: ViewMasks, pixels: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(S, P) index of each pixel's smallest mask whose scale is at least each sampled scale; −1 if none."""
    member = vm.masks[:, pixels]                                   # (M, P)
    ok = member[None] & (vm.scales[None, :] >= scales[:, None])[:, :, None]   # (S, M, P)
    has = ok.any(1)
    first = torch.argmax(ok.to(torch.uint8), dim=1)                # first True along ascending scale
    return torch.where(has, first, torch.full_like(first, -1))


def band_identities(vm: ViewMasks, band_scales: torch.Tensor) -> torch.Tensor:
    """(BANDS, P) each candidate pixel's smallest mask of at least each band's lower scale (index into the
    view's masks; −1 none)."""
    return pixel_identity(vm, vm.candidates, band_scales)


def sample_scales(vm: ViewMasks, pixels: torch.Tensor, count: int, generator: torch.Generator,
                   grid: torch.Tensor, quantiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scales, their quantiles q) for one step: half the scale of a random mask holding a sampled pixel (so
    small, rare masks are trained as often as their pixels are drawn), half uniform in q. Nothing here waits
    for the device (a step's choices are drawn on the CPU, the masks looked up where they are)."""
    device = pixels.device
    anchors = count // 2
    q_uniform = torch.rand(count, generator=generator).to(device)
    at = torch.randint(len(pixels), (anchors,), generator=generator).to(device)
    holding = vm.masks[:, pixels[at]]                                        # (M, anchors)
    keys = torch.rand(holding.shape, generator=generator).to(device)
    chosen = torch.where(holding, keys, -1.0).argmax(0)                      # a random mask holding it
    # q of a mask's scale: where it falls in the quantile table; an anchor no mask holds takes a uniform q.
    mask_scales = vm.scales[chosen].float()
    q_masks = torch.searchsorted(quantiles.contiguous(), mask_scales.contiguous()).float() / (len(quantiles) - 1)
    held = holding.any(0)
    q_masks = torch.where(held, q_masks.clamp(0, 1), q_uniform[:anchors])
    mask_scales = torch.where(held, mask_scales, _interp(q_masks, grid, quantiles))
    return (torch.cat([mask_scales, _interp(q_uniform[anchors:], grid, quantiles)]),
            torch.cat([q_masks, q_uniform[anchors:]]))


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation (torch has no interp) on an increasing uniform grid xp."""
    pos = x.clamp(0, 1) * (len(xp) - 1)
    lo = pos.floor().long().clamp(max=len(xp) - 2)
    t = pos - lo
    return fp[lo] * (1 - t) + fp[lo + 1] * t


def sam_view_masks(scene, views: Sequence[View], device, sam=None, ctx=None, **generator_options) -> list[np.ndarray]:
    """SAM automatic masks of every view (photo or render) -> per view (M, H, W) bool."""
    from ..sam_masks import automatic_masks, load_sam, mask_generator

    ctx = ctx or NullContext()
    if sam is None:
        sam = load_sam(device=device, progress=lambda f, s: ctx.progress(0.0, s))
    generator = mask_generator(sam, **generator_options)
    images = view_images(scene, views, device)
    out = []
    for i, image in enumerate(images):
        ctx.check_cancelled()
        out.append(automatic_masks(image, generator))
        ctx.progress(0.3 * (i + 1) / len(images), f"SAM masks of view {i + 1} of {len(images)}")
    return out
