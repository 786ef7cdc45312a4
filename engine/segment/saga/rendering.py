"""What SAGA renders: the scene's splats on a device, each view's photo (or the splats rendered from it), and
each view's feature rendering and contribution lifting (engine.render.contributions: gsplat's passes on CUDA,
the torch rasterizer's weights kept as sparse matrices on the CPU)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ...render.contributions import RasterizedView, ViewWeights
from ...render.rasterizer import gsplat_available, render_gaussians
from ...render.splats import SplatTensors, splat_tensors
from ..views import View

# A view's feature rendering and contribution lifting, as training uses them.
ViewContributions = ViewWeights | RasterizedView



class NullContext:
    """A request context that reports nowhere and is never cancelled (training outside a request)."""

    def progress(self, fraction: float, stage: str) -> None:
        pass

    def check_cancelled(self) -> None:
        pass


def as_device(device) -> torch.device:
    """A torch.device from a request's "cpu" | "cuda" | "auto" (render.job.resolve_device), or unchanged."""
    if isinstance(device, torch.device):
        return device
    from ...render.job import resolve_device

    return resolve_device(device or "auto")


def scene_splats(scene, device: torch.device) -> SplatTensors:
    """The scene's SplatTensors on `device`, made once per loaded scene."""
    return scene.cached(f"saga_splats_{device}", lambda: splat_tensors(scene.gaussians, device))


def view_images(scene, views: Sequence[View], device) -> list[np.ndarray]:
    """Each view's photo, or the Gaussians rendered from it (float RGB in [0, 1])."""
    from ..views import view_image

    g = scene.gaussians
    sh = None
    images = []
    for view in views:
        photo = view_image(view)
        if photo is not None:
            images.append(photo)
            continue
        if sh is None:
            sh = torch.from_numpy(np.concatenate([g.sh_dc[:, None], g.sh_rest], 1).astype(np.float32)).to(device)
        t = scene_splats(scene, device)
        with torch.no_grad():
            out = render_gaussians(t.means, t.quats, t.scales, t.opacities, sh, view.viewmat, view.K, view.width,
                                   view.height, background=torch.ones(3, device=device))
        images.append(out.rgb.clamp(0, 1).cpu().numpy())
    return images


def view_contributions(g: SplatTensors, views: Sequence[View], backend: str,
                       progress: Callable[[float], None] | None = None) -> list[ViewContributions]:
    """Per view, its feature rendering and lifting: "gsplat" (each a rasterizer pass) or "contributions" (the
    weights computed once per view, then sparse products)."""
    if backend == "gsplat":
        return [RasterizedView(g, view) for view in views]
    out = []
    for i, view in enumerate(views):
        out.append(ViewWeights(g, view))
        if progress is not None:
            progress((i + 1) / len(views))
    return out


def training_backend(device: torch.device) -> str:
    """"gsplat" on CUDA when gsplat runs, else "contributions"."""
    return "gsplat" if device.type == "cuda" and gsplat_available() else "contributions"
