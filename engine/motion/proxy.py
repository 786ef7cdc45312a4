"""A reduced stand-in of a segment for fitting its motion: fewer, larger Gaussians that cover the same surface.

A rigid fit compares blurred images, so thousands of small splats are not needed to explain them; a proxy of
a few thousand makes every render (and its gradient) proportionally cheaper, which is what lets the CPU fit
a clip in seconds.
"""

from __future__ import annotations

import torch

from .lifting import SegmentGaussians


def segment_proxy(seg: SegmentGaussians, max_count: int, seed: int = 0) -> SegmentGaussians:
    """`seg` itself when it has at most `max_count` Gaussians, else a random `max_count` of them with scales
    grown by sqrt(N / max_count): a surface keeps its coverage when each splat stands for N / max_count."""
    n = seg.count
    if n <= max_count:
        return seg
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(n, generator=generator)[:max_count].to(seg.means.device)
    grow = (n / max_count) ** 0.5
    return SegmentGaussians(means=seg.means[keep], quats=seg.quats[keep], scales=seg.scales[keep] * grow,
                            opacities=seg.opacities[keep], colors=seg.colors[keep])
