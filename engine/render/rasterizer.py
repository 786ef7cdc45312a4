"""The one splat-rendering call of the engine: `render_gaussians`, on gsplat (CUDA) or the pure-torch rasterizer.

Cameras follow engine/cameras.py (OpenCV world-to-camera viewmat, K in pixels, pixel centres at +0.5).
Both backends apply gsplat's rules, so an image does not depend on which one drew it (tests hold them to it).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .. import fallbacks
from ..backend_probe import GSPLAT_NEEDS
from ..errors import AnimateGaussiansError
from . import cpu_rasterizer
from .output import RenderOutput
from .sh import sh_degree_from_bases, sh_to_color

BACKENDS = ("auto", "cpu", "gsplat")


class RenderBackendError(AnimateGaussiansError):
    """The asked-for rendering backend cannot run here."""

    hint = "use device 'cpu', or install gsplat in the engine environment on a machine with CUDA"


@functools.lru_cache(maxsize=1)
def gsplat_problem() -> str | None:
    """Why gsplat cannot render here (None when CUDA is usable and gsplat imports; its CUDA code compiles on
    first use)."""
    if not torch.cuda.is_available():
        return "CUDA is not available"
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return "gsplat is not installed"
    except Exception as exc:     # installed but broken (a wheel for another torch/CUDA): say what it said
        return f"gsplat does not import ({type(exc).__name__}: {exc})"
    return None


def gsplat_available() -> bool:
    return gsplat_problem() is None


def choose_backend(backend: str = "auto", device: torch.device | str | None = None) -> str:
    """'gsplat' or 'cpu' for a request; 'auto' = gsplat when CUDA and gsplat are there (and the data is not
    pinned to the CPU), else the torch rasterizer."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown render backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    if backend == "gsplat":
        if not gsplat_available():
            raise RenderBackendError("the gsplat backend needs CUDA and the gsplat package; "
                                     f"CUDA available: {torch.cuda.is_available()}")
        return "gsplat"
    if backend == "cpu":
        return "cpu"
    if device is not None and torch.device(device).type == "cpu":
        return "cpu"
    if gsplat_available():
        return "gsplat"
    if torch.cuda.is_available():    # a CUDA machine on the slow path: say so (or refuse: --require-gsplat)
        fallbacks.warn("torch_rasterizer", f"{gsplat_problem()}: splats render with the slower torch "
                       f"rasterizer on {torch.cuda.get_device_name(0)}; {GSPLAT_NEEDS}")
    return "cpu"


def _as_tensor(x, device, dtype=torch.float32) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.tensor(np.asarray(x), device=device, dtype=dtype)


def render_gaussians(means, quats, scales, opacities, colors, viewmat, K, width: int, height: int,
                     near: float = 0.01, far: float = 1e10, background=None, features=None,
                     sh_degree: int | None = None, backend: str = "auto") -> RenderOutput:
    """Render Gaussians from one camera.

    means (N, 3) world; quats (N, 4) wxyz, any norm; scales (N, 3) linear; opacities (N,) in [0, 1];
    colors either (N, 3) final colours or (N, K, 3) SH coefficients (DC first, 3DGS basis; `sh_degree`
    defaults to the largest K allows); viewmat (4, 4) world-to-camera (OpenCV); K (3, 3) pixels;
    background (3,) added behind; features (N, D) composited like colour (no background).
    Accepts torch tensors (kept on their device) or numpy arrays.
    """
    device = means.device if isinstance(means, torch.Tensor) else torch.device("cpu")
    chosen = choose_backend(backend, device if isinstance(means, torch.Tensor) else None)
    if chosen == "gsplat" and device.type != "cuda":
        device = torch.device("cuda")
    means = _as_tensor(means, device)
    quats = _as_tensor(quats, device)
    scales = _as_tensor(scales, device)
    opacities = _as_tensor(opacities, device).reshape(-1)
    colors = _as_tensor(colors, device)
    viewmat = _as_tensor(viewmat, device)
    K = _as_tensor(K, device)
    features = None if features is None else _as_tensor(features, device)
    background = None if background is None else _as_tensor(background, device).reshape(3)
    n = means.shape[0]
    if colors.dim() == 3:
        if sh_degree is None:
            sh_degree = sh_degree_from_bases(colors.shape[1])
        elif (sh_degree + 1) ** 2 > colors.shape[1]:
            raise ValueError(f"sh_degree {sh_degree} needs {(sh_degree + 1) ** 2} coefficients, "
                             f"got {colors.shape[1]}")
    elif colors.dim() != 2:
        raise ValueError(f"colors must be (N, 3) or (N, K, 3), got {tuple(colors.shape)}")
    for name, t, shape in (("quats", quats, (n, 4)), ("scales", scales, (n, 3)), ("opacities", opacities, (n,))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must be {shape}, got {tuple(t.shape)}")
    if features is not None and features.shape[0] != n:
        raise ValueError(f"features must have {n} rows, got {features.shape[0]}")
    if chosen == "gsplat":
        from .gsplat_backend import render_gsplat
        return render_gsplat(means, quats, scales, opacities, colors, viewmat, K, width, height, near, far,
                             background, features, sh_degree)
    return _render_cpu(means, quats, scales, opacities, colors, viewmat, K, width, height, near, far,
                       background, features, sh_degree)


def _render_cpu(means, quats, scales, opacities, colors, viewmat, K, width, height, near, far, background,
                features, sh_degree) -> RenderOutput:
    proj = cpu_rasterizer.project_gaussians(means, quats, scales, opacities, viewmat, K, width, height,
                                            near, far)
    if colors.dim() == 3:
        campos = -viewmat[:3, :3].T @ viewmat[:3, 3]
        rgb = sh_to_color(sh_degree, colors[proj.ids], means[proj.ids] - campos)
    else:
        rgb = colors[proj.ids]
    n_color = rgb.shape[1]
    parts = [rgb, proj.depths[:, None]] + ([features[proj.ids]] if features is not None else [])
    bg = None
    if background is not None:
        bg = torch.cat([background, background.new_zeros(1 + (features.shape[1] if features is not None else 0))])
    image, alpha = cpu_rasterizer.composite(proj, torch.cat(parts, dim=1), width, height, bg)
    depth = image[..., n_color] / alpha.clamp_min(1e-10)
    feats = image[..., n_color + 1:] if features is not None else None
    return RenderOutput(rgb=image[..., :n_color], depth=depth, alpha=alpha, features=feats)
