"""Our CUDA kernels where gsplat has none, each with a pure-torch reference (cuda_ext.reference) that the
tests hold it to. The extension is built on first use (cuda_ext.build); without it, the reference runs."""

from __future__ import annotations

import os

import numpy as np
import torch

from engine import fallbacks

from .build import is_built, load_extension, loaded
from .reference import (composite_pixel_reference, contributions_reference, grid_knn_reference,
                        lerf_relevancy_reference, pack_object_parameters, transform_gaussians_reference)

__all__ = ["available", "transform_gaussians", "transform_gaussians_packed", "pack_object_parameters",
           "transform_gaussians_reference", "accumulate_contributions", "contributions_reference",
           "lerf_relevancy", "lerf_relevancy_reference", "grid_knn", "grid_knn_reference", "composite_pixel",
           "composite_pixel_reference", "ready"]

# The kernel's limits (cuda_ext/csrc/lerf_relevancy.h); past them the reference runs, with a warning.
MAX_CODE_WIDTH = 64
MAX_TEXTS = 32
MAX_GRID_K = 64             # cuda_ext/csrc/grid_knn.h
MAX_PIXEL_CHANNELS = 256    # cuda_ext/csrc/composite_pixel.h

# Set to 1 to always run the torch reference (e.g. to rule the kernel out while debugging).
DISABLE_ENV = "ANIMATE_GAUSSIANS_DISABLE_CUDA_EXT"


def _extension():
    """The built extension, or None when it cannot be built here: then a `cuda_ext_reference` fallback warning
    (in every request that meets it: the panel and the batch report show it)."""
    if os.environ.get(DISABLE_ENV) == "1" or not torch.cuda.is_available():
        return None
    try:
        return load_extension()
    except Exception as exc:  # noqa: BLE001 - the reference computes the same thing, only slower
        fallbacks.warn("cuda_ext_reference",
                       f"our CUDA kernels could not be built ({type(exc).__name__}: {exc}); their torch reference "
                       "runs instead (the same results, slower). They need the CUDA toolkit's nvcc for torch's "
                       f"CUDA {torch.version.cuda} and a C++ compiler; the build is retried when the engine restarts")
        return None


def available() -> bool:
    """True when the CUDA kernels can run here (a GPU and a successful build)."""
    return _extension() is not None


def ready() -> bool:
    """True when the kernels can run here without compiling first (loaded, or built before for this GPU and
    torch): for a call that must stay interactive (a click), which otherwise takes another path than wait a
    minute for the first build."""
    if os.environ.get(DISABLE_ENV) == "1" or not torch.cuda.is_available():
        return False
    return (loaded() or is_built()) and available()


def transform_gaussians(means: torch.Tensor, quats: torch.Tensor, log_scales: torch.Tensor, sh_rest: torch.Tensor,
                        object_index: torch.Tensor | None, matrices: np.ndarray | torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move each Gaussian by its object's (4, 4) affine matrix, rotating its SH (degrees 1-3) along.

    means (N, 3), quats (N, 4) wxyz as stored (their norm is kept), log_scales (N, 3), sh_rest (N, K, 3) with
    K in {0, 3, 8, 15}; object_index (N,) ints into matrices (O, 4, 4), or None for a single matrix.
    Positions get the exact matrix; orientation, scale and SH its uniform part (rotation and geometric-mean
    scale; see cuda_ext.reference.pack_object_parameters). Runs the CUDA kernel for float32 CUDA tensors when
    the extension builds, else the torch reference on the tensors' device. Returns new tensors.
    """
    mats = matrices.detach().cpu().double().numpy() if isinstance(matrices, torch.Tensor) else np.asarray(matrices)
    if mats.ndim == 2:
        mats = mats[None]
    num_objects = mats.shape[0]
    n = means.shape[0]
    device = means.device
    if object_index is None:
        if num_objects != 1:
            raise ValueError(f"object_index is needed with {num_objects} matrices")
        object_index = torch.zeros(n, dtype=torch.int32, device=device)
    object_index = object_index.to(device=device, dtype=torch.int32)
    if object_index.shape != (n,):
        raise ValueError(f"object_index must have shape ({n},), got {tuple(object_index.shape)}")
    if n:
        lo, hi = torch.aminmax(object_index)
        lo, hi = int(lo), int(hi)
        if lo < 0 or hi >= num_objects:
            raise ValueError(f"object_index holds {lo if lo < 0 else hi}, outside 0..{num_objects - 1}")
    params = torch.from_numpy(pack_object_parameters(mats)).to(device)
    return transform_gaussians_packed(means, quats, log_scales, sh_rest, object_index, params)


def transform_gaussians_packed(means: torch.Tensor, quats: torch.Tensor, log_scales: torch.Tensor,
                               sh_rest: torch.Tensor, object_index: torch.Tensor, params: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """transform_gaussians with the matrices already packed (pack_object_parameters, on the tensors' device)
    and object_index already int32 in range: no host work and no host round trip, for a caller that checked
    its indices once and packed every frame's matrices at once (the render job)."""
    tensors = (means, quats, log_scales, sh_rest)
    if means.device.type == "cuda" and all(t.dtype == torch.float32 for t in tensors):
        ext = _extension()
        if ext is not None:
            means, quats, log_scales, sh_rest = (t.contiguous() for t in tensors)
            if quats.data_ptr() % 16:  # the kernel reads each quaternion as one 16-byte load
                quats = quats.clone()
            return tuple(ext.transform_gaussians(means, quats, log_scales, sh_rest, object_index.contiguous(),
                                                 params))
    return transform_gaussians_reference(means, quats, log_scales, sh_rest, object_index, params)


def accumulate_contributions(means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor,
                             labels: torch.Tensor, tile_offsets: torch.Tensor, flatten_ids: torch.Tensor,
                             num_labels: int, tile_size: int = 16) -> torch.Tensor:
    """Per-Gaussian sums of composited weight (alpha × transmittance) over the pixels of each label.

    Takes gsplat's unpacked projection of I images (means2d (I, N, 2), conics (I, N, 3)), opacities (N,),
    labels (I, H, W) int (pixels outside [0, num_labels) count for nothing), and gsplat's tile intersections
    (isect_offset_encode's (I, th, tw) offsets, flatten_ids into I·N). Returns votes (N, num_labels) float32.
    CUDA only: cuda_ext.reference.contributions_reference of the labels' one-hots is the same on the torch
    rasterizer (engine.render.contributions.label_votes picks between them).
    """
    ext = _extension()
    if ext is None:
        raise RuntimeError("accumulate_contributions needs the CUDA extension; "
                           "use cuda_ext.reference.contributions_reference instead")
    if means2d.data_ptr() % 8:
        means2d = means2d.clone()
    return ext.accumulate_contributions(means2d.float().contiguous(), conics.float().contiguous(),
                                        opacities.float().contiguous(), labels.to(torch.int32).contiguous(),
                                        tile_offsets.to(torch.int32).contiguous(),
                                        flatten_ids.to(torch.int32).contiguous(), int(num_labels), int(tile_size))


def _relevancy_kernel(codes: torch.Tensor, proj: torch.Tensor):
    """The extension when lerf_relevancy can run on the kernel for these tensors, else None (warning when
    only the shape stands in the way: the reference is exact but several times slower)."""
    if codes.device.type != "cuda" or codes.dtype != torch.float16 or proj.dtype != torch.float16:
        return None
    if torch.cuda.get_device_capability(codes.device) < (8, 0):   # m16n8k16 tensor-core products
        return None
    ext = _extension()
    if ext is None:
        return None
    d, texts = proj.shape
    if d % 2 or d > MAX_CODE_WIDTH or not 2 <= texts <= MAX_TEXTS:
        fallbacks.warn("cuda_ext_reference",
                       f"the 4D query's relevancy kernel takes even code widths up to {MAX_CODE_WIDTH} and 2 to "
                       f"{MAX_TEXTS} texts, not {d} and {texts}: its torch reference runs instead (slower)")
        return None
    return ext


def lerf_relevancy(codes: torch.Tensor, proj: torch.Tensor, offs: torch.Tensor, inverse: torch.Tensor,
                   unseen: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """(S, N) float16 LERF relevancy of every code (S, N, d) against 1 + K texts: see
    cuda_ext.reference.lerf_relevancy_reference for the arguments and what is computed.

    On CUDA with float16 codes and products the fused kernel reads each code once and writes its relevancy
    (the same bits as the reference: tests/test_cuda_relevancy.py). Elsewhere the reference runs over `block`
    timesteps at a time (bounding its (block, N, 1 + K) intermediates; all at once when None)."""
    ext = _relevancy_kernel(codes, proj)
    if ext is not None:
        codes = codes.contiguous()
        if codes.data_ptr() % 4:   # the kernel reads codes as pairs of float16
            codes = codes.clone()
        return ext.lerf_relevancy(codes, proj.T.contiguous(), offs.float().contiguous(),
                                  inverse.float().contiguous(), unseen.contiguous())
    S, N = codes.shape[:2]
    block = S if block is None else max(1, block)
    out = torch.empty((S, N), dtype=torch.float16, device=codes.device)
    for s in range(0, S, block):
        out[s:s + block] = lerf_relevancy_reference(codes[s:s + block], proj, offs, inverse[s:s + block],
                                                    unseen[s:s + block])
    return out


def grid_knn(points: torch.Tensor, order: torch.Tensor, cells: torch.Tensor, starts: torch.Tensor,
             counts: torch.Tensor, offsets: torch.Tensor, query_points: torch.Tensor, query_keys: torch.Tensor,
             query_ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's k nearest among the points of the 27 grid cells around it: see
    cuda_ext.reference.grid_knn_reference for the arguments. The kernel on CUDA (float64 points, k up to
    MAX_GRID_K: one thread per query), else the reference."""
    if points.is_cuda and points.dtype == torch.float64 and 1 <= k <= MAX_GRID_K:
        ext = _extension()
        if ext is not None:
            idx, d2 = ext.grid_knn(points.contiguous(), order.contiguous(), cells.contiguous(), starts.contiguous(),
                                   counts.contiguous(), offsets.contiguous(), query_points.contiguous(),
                                   query_keys.contiguous(), query_ids.contiguous(), int(k))
            return idx, d2
    return grid_knn_reference(points, order, cells, starts, counts, offsets, query_points, query_keys, query_ids, k)


def composite_pixel(means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor, channels: torch.Tensor,
                    gaussian_ids: torch.Tensor, tile_offsets: torch.Tensor, flatten_ids: torch.Tensor, tile: int,
                    px: float, py: float) -> torch.Tensor:
    """(C + 1,) one pixel's channels and alpha as gsplat's rasterizer composites them: see
    cuda_ext.reference.composite_pixel_reference for the arguments. The kernel (float32 CUDA tensors, up to
    MAX_PIXEL_CHANNELS channels) gives gsplat's bits; the reference the same to rounding."""
    tensors = (means2d, conics, opacities, channels)
    if means2d.is_cuda and all(t.dtype == torch.float32 for t in tensors) and channels.shape[1] <= MAX_PIXEL_CHANNELS:
        ext = _extension()
        if ext is not None:
            if means2d.data_ptr() % 8:   # read as float2
                means2d = means2d.clone()
            return ext.composite_pixel(means2d.contiguous(), conics.contiguous(), opacities.contiguous(),
                                       channels.contiguous(), gaussian_ids.long().contiguous(),
                                       tile_offsets.reshape(-1).to(torch.int32).contiguous(),
                                       flatten_ids.to(torch.int32).contiguous(), int(tile), float(px), float(py))
    return composite_pixel_reference(means2d, conics, opacities, channels, gaussian_ids, tile_offsets, flatten_ids,
                                     tile, px, py)
