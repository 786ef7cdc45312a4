"""Splat rendering: `render_gaussians` (gsplat on CUDA, pure torch elsewhere) and the engine's "render" job."""

from .output import RenderOutput
from .rasterizer import choose_backend, render_gaussians

__all__ = ["RenderOutput", "choose_backend", "render_gaussians"]
