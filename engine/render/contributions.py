"""Contribution-weighted lifting: values given per pixel of a view (label one-hots, features, a mask) summed onto
the Gaussians, each weighted by w_gp = alpha × transmittance, the weight with which Gaussian g is composited into
pixel p. Segmentation lifts masks with it, SAGA its segment codes and sketches, the 4D field its feature images.

Three paths compute the same sums: the cuda_ext kernel for integer labels (on gsplat's projection); the backward
pass of gsplat's feature rendering for any values (rendering is linear in the features, so its vector-Jacobian
product is the transpose of compositing); and the torch rasterizer's own weights on any device
(cuda_ext.reference.contributions_reference), which the tests hold the other two to. ViewWeights keeps one
view's weights as a sparse matrix, for views that are rendered and lifted many times (SAGA on the CPU).
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import cpu_rasterizer
from .rasterizer import choose_backend, gsplat_available, render_gaussians
from .splats import SplatTensors

# Per view, a Gaussian's votes are divided by its total weight in that view (so each view where it is seen
# casts one vote, split over labels), but never by less than this fraction of the view's median total weight:
# a faint rim seen through another surface casts a proportionally smaller vote.
VIEW_SUPPORT_FLOOR = 0.5
# Views projected and accumulated in one kernel launch (bounds gsplat's per-view buffers: ~40 B per Gaussian).
VIEWS_PER_BATCH = 16


def kernel_available(device: torch.device | str) -> bool:
    """True when label votes run on the CUDA kernel here (a CUDA device, gsplat and the built extension)."""
    if torch.device(device).type != "cuda" or not gsplat_available():
        return False
    import cuda_ext

    return cuda_ext.available()


def _on(device: torch.device, array, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """A camera array or label map (numpy or torch) as a tensor on `device` (float32 unless `dtype` None)."""
    tensor = array if isinstance(array, torch.Tensor) else torch.as_tensor(np.asarray(array))
    return tensor.to(device) if dtype is None else tensor.to(device=device, dtype=dtype)


def _camera(g: SplatTensors, viewmat, K) -> tuple[torch.Tensor, torch.Tensor]:
    return _on(g.means.device, viewmat), _on(g.means.device, K)


def lift(g: SplatTensors, viewmat, K, values: torch.Tensor, backend: str = "auto", near: float = 0.01,
         far: float = 1e10) -> torch.Tensor:
    """(N, D): Σ_p w_gp·values[p] for a (H, W, D) image of per-pixel values seen from this camera (viewmat
    (4, 4) world → OpenCV camera, K (3, 3)). `backend` as render_gaussians': "gsplat" lifts by the backward
    pass of its feature rendering, "cpu" by the torch rasterizer's weights (on the Gaussians' device)."""
    viewmat, K = _camera(g, viewmat, K)
    height, width, dim = values.shape
    if choose_backend(backend, g.means.device) == "cpu":
        from cuda_ext.reference import contributions_reference

        return contributions_reference(g.means, g.quats, g.scales, g.opacities, viewmat, K, values.float(),
                                       near, far)
    from .gsplat_backend import render_gsplat_views

    # The values' channels alone (no colour or depth beside them): gsplat pads a pass to its next supported
    # channel count and splits it every 32, so D channels rather than D + 4 can be one pass fewer.
    probe = torch.zeros((g.count, dim), device=g.means.device, dtype=torch.float32, requires_grad=True)
    with torch.enable_grad():
        render, _ = render_gsplat_views(g.means.detach(), g.quats.detach(), g.scales.detach(), g.opacities.detach(),
                                        probe, viewmat[None], K[None], width, height, near, far)
        (grad,) = torch.autograd.grad((render[0] * values.float()).sum(), probe)
    return grad


def _pixel_image(values: torch.Tensor, pixels: torch.Tensor | None, width: int, height: int) -> torch.Tensor:
    """(H·W, D + 1): `values` (P, D) at row-major `pixels` (all pixels when None) and a last channel of ones
    there, zeros elsewhere."""
    dim = values.shape[-1]
    image = values.new_zeros(height * width, dim + 1)
    where = slice(None) if pixels is None else pixels
    image[where, :dim] = values.reshape(image[where].shape[0], dim)
    image[where, dim] = 1.0
    return image


def lift_with_support(g: SplatTensors, viewmat, K, width: int, height: int, values: torch.Tensor,
                      pixels: torch.Tensor | None = None, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_p w_gp·values_p (N, D), Σ_p w_gp (N,)) over the given pixels (row-major indices (P,), values
    (P, D)), or over every pixel (values (H·W, D) or (H, W, D)) when `pixels` is None: a weighted mean's
    numerator and denominator."""
    image = _pixel_image(values.float(), pixels, width, height)
    sums = lift(g, viewmat, K, image.reshape(height, width, -1), backend)
    return sums[:, :-1], sums[:, -1]


def lift_views(g: SplatTensors, viewmats, Ks, width: int, height: int, values: torch.Tensor,
               backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """lift_with_support over every pixel of several views, summed: values (V, H·W, D) or (V, H, W, D),
    viewmats (V, 4, 4), Ks (V, 3, 3). On gsplat the views go through one rendering of the values alone
    (D + 1 channels, no colour or depth: fewer channels for the kernels to carry) and one backward pass per
    VIEWS_PER_BATCH views, rather than one of each per view."""
    device = g.means.device
    viewmats, Ks = _on(device, viewmats).reshape(-1, 4, 4), _on(device, Ks).reshape(-1, 3, 3)
    views = len(viewmats)
    values = values.reshape(views, height * width, -1).float()
    if choose_backend(backend, device) == "cpu":
        num = torch.zeros((g.count, values.shape[-1]), device=device)
        den = torch.zeros(g.count, device=device)
        for v in range(views):
            n_v, d_v = lift_with_support(g, viewmats[v], Ks[v], width, height, values[v], backend="cpu")
            num += n_v
            den += d_v
        return num, den
    from .gsplat_backend import render_gsplat_views

    image = torch.cat([values, values.new_ones(values.shape[:2] + (1,))], dim=-1)
    image = image.reshape(views, height, width, -1)
    probe = torch.zeros((g.count, image.shape[-1]), device=device, requires_grad=True)
    sums = torch.zeros((g.count, image.shape[-1]), device=device)
    with torch.enable_grad():
        for start in range(0, views, VIEWS_PER_BATCH):
            sl = slice(start, min(start + VIEWS_PER_BATCH, views))
            render, _ = render_gsplat_views(g.means.detach(), g.quats.detach(), g.scales.detach(),
                                            g.opacities.detach(), probe, viewmats[sl], Ks[sl], width, height)
            (grad,) = torch.autograd.grad((render * image[sl]).sum(), probe)
            sums += grad
    return sums[:, :-1], sums[:, -1]


def view_shares(votes: torch.Tensor, support: torch.Tensor | None = None,
                floor: float = VIEW_SUPPORT_FLOOR) -> torch.Tensor:
    """One view's votes (N, L) as shares: each Gaussian's votes divided by its total weight in the view
    (`support`, default the votes' sum), or by `floor` × the view's median total weight (of the Gaussians it
    shows) when that is larger. A Gaussian the view shows well thus casts one vote, however large it appears."""
    support = votes.sum(1) if support is None else support
    seen = support > 0
    if not bool(seen.any()):
        return votes
    denom = torch.clamp_min(support, floor * float(support[seen].median()))
    return votes / denom[:, None]


def _label_one_hot(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(H, W, num_labels) float: a pixel's label as a one-hot row, zeros for labels outside [0, num_labels)."""
    labels = labels.long()
    counted = (labels >= 0) & (labels < num_labels)
    return F.one_hot(torch.where(counted, labels, 0), num_labels).float() * counted[..., None]


def _votes_kernel(g: SplatTensors, viewmats: torch.Tensor, Ks: torch.Tensor, labels: torch.Tensor,
                  num_labels: int, near: float, far: float, normalise: bool = False) -> torch.Tensor:
    from gsplat.cuda._wrapper import fully_fused_projection, isect_offset_encode, isect_tiles

    import cuda_ext

    views, height, width = labels.shape
    tile = 16
    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    votes = torch.zeros(g.count, num_labels, device=g.means.device)
    batch = 1 if normalise else VIEWS_PER_BATCH   # shares need each view's votes on their own
    for start in range(0, views, batch):
        sl = slice(start, min(start + batch, views))
        n_img = sl.stop - sl.start
        radii, means2d, depths, conics, _ = fully_fused_projection(
            g.means, None, g.quats, g.scales, viewmats[sl], Ks[sl], width, height, eps2d=0.3,
            near_plane=near, far_plane=far, packed=False, opacities=g.opacities)
        _, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, tile, tiles_x, tiles_y, packed=False,
                                                n_images=n_img)
        offsets = isect_offset_encode(isect_ids, n_img, tiles_x, tiles_y)
        batch_votes = cuda_ext.accumulate_contributions(means2d, conics, g.opacities, labels[sl], offsets,
                                                        flatten_ids, num_labels, tile)
        votes += view_shares(batch_votes) if normalise else batch_votes
    return votes


def label_votes(g: SplatTensors, viewmats, Ks, labels, num_labels: int, near: float = 0.01, far: float = 1e10,
                use_kernel: bool | None = None, progress: Callable[[float], None] | None = None,
                normalise: bool = False) -> torch.Tensor:
    """votes (N, num_labels): per Gaussian and label, the composited weight summed over that label's pixels
    in all views (`normalise`: each view's votes as view_shares first, so every view that shows a Gaussian
    counts about once). viewmats (V, 4, 4) file frame → OpenCV camera, Ks (V, 3, 3), labels (V, H, W) int
    with values outside [0, num_labels) ignored. `use_kernel` None = the CUDA kernel when it can run, else
    the torch rasterizer's weights (on the Gaussians' device)."""
    device = g.means.device
    viewmats, Ks = _on(device, viewmats).reshape(-1, 4, 4), _on(device, Ks).reshape(-1, 3, 3)
    labels = _on(device, labels, torch.int32)
    labels = labels.reshape(-1, *labels.shape[-2:])
    if not (len(viewmats) == len(Ks) == len(labels)):
        raise ValueError(f"{len(viewmats)} viewmats, {len(Ks)} Ks and {len(labels)} label maps: counts differ")
    if use_kernel is None:
        use_kernel = kernel_available(device)
    if use_kernel:
        return _votes_kernel(g, viewmats, Ks, labels, num_labels, near, far, normalise)
    votes = torch.zeros(g.count, num_labels, device=device)
    for v in range(len(labels)):
        view_votes = lift(g, viewmats[v], Ks[v], _label_one_hot(labels[v], num_labels), "cpu", near, far)
        votes += view_shares(view_votes) if normalise else view_votes
        if progress is not None:
            progress((v + 1) / len(labels))
    return votes


class ViewWeights:
    """One view's compositing weights (torch rasterizer) as a sparse (H·W, N) matrix W, computed once: rendering
    features is W @ f and lifting pixel values Wᵀ @ v, both exact. Pays when the same views are rendered and
    lifted many times (SAGA's training on the CPU); holds one weight per (pixel, Gaussian drawn there).
    `view` has viewmat, K, width and height (engine.segment.views.View)."""

    def __init__(self, g: SplatTensors, view) -> None:
        self.count, self.width, self.height = g.count, int(view.width), int(view.height)
        viewmat, K = _camera(g, view.viewmat, view.K)
        hw = self.width * self.height
        with torch.no_grad():
            proj = cpu_rasterizer.project_gaussians(g.means, g.quats, g.scales, g.opacities, viewmat, K,
                                                    self.width, self.height, 0.01, 1e10)
            rows, cols, vals = cpu_rasterizer.weight_triplets(proj, self.width, self.height)
            cols = proj.ids[cols]
            z = g.means @ viewmat[2, :3] + viewmat[2, 3]                 # camera depth
            alpha = torch.zeros(hw, device=g.means.device).index_add_(0, rows, vals)
            depth = torch.zeros(hw, device=g.means.device).index_add_(0, rows, vals * z[cols])
            order = torch.argsort(rows, stable=True)   # by pixel: a pixel's weights are one slice
            self.rowptr = torch.zeros(hw + 1, dtype=torch.long, device=g.means.device)
            self.rowptr[1:] = torch.cumsum(torch.bincount(rows, minlength=hw), 0)
        self.cols, self.vals = cols[order], vals[order]
        self.alpha = alpha.reshape(self.height, self.width)
        self.depth = (depth / alpha.clamp_min(1e-10)).reshape(self.height, self.width)
        self._matrices: dict = {}

    def depth_alpha(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(depth (H, W), alpha (H, W)) as render_gaussians gives them."""
        return self.depth, self.alpha

    def render(self, features: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (P, D), alpha (P,)) at the given pixel indices (row-major); differentiable in `features`."""
        alpha = self.alpha.reshape(-1)[pixels]
        if not (features.requires_grad and torch.is_grad_enabled()):
            return (self.matrix() @ features)[pixels], alpha
        if len(pixels) * 8 > len(self.rowptr):   # many pixels: one sparse product
            if "coo" not in self._matrices:
                self._matrices["coo"] = self.matrix().to_sparse_coo()
            return torch.sparse.mm(self._matrices["coo"], features)[pixels], alpha
        # few pixels: only their weights
        first, count = self.rowptr[pixels], self.rowptr[pixels + 1] - self.rowptr[pixels]
        owner = torch.repeat_interleave(torch.arange(len(pixels), device=pixels.device), count)
        entry = first[owner] + torch.arange(len(owner), device=pixels.device) - (torch.cumsum(count, 0) - count)[owner]
        out = features.new_zeros(len(pixels), features.shape[1]).index_add(
            0, owner, self.vals[entry, None] * features[self.cols[entry]])
        return out, alpha

    def lift(self, values: torch.Tensor, pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """lift_with_support for this view: (Σ_p w_gp·values_p (N, D), Σ_p w_gp (N,)) over the pixels."""
        image = _pixel_image(values, pixels, self.width, self.height)
        out = self.matrix(transpose=True) @ image
        return out[:, :-1], out[:, -1]

    def matrix(self, transpose: bool = False) -> torch.Tensor:
        """The weights as a sparse (H·W, N) CSR matrix (or its transpose), cached: a whole feature map is one
        sparse product, far faster than gathers for every pixel."""
        key = "t" if transpose else "w"
        if key not in self._matrices:
            with warnings.catch_warnings():      # "sparse CSR support is in beta": the product is exact here
                warnings.simplefilter("ignore", UserWarning)
                m = torch.sparse_csr_tensor(self.rowptr, self.cols, self.vals,
                                            (self.width * self.height, self.count))
            self._matrices[key] = m.t().to_sparse_csr() if transpose else m
        return self._matrices[key]


class RasterizedView:
    """ViewWeights' operations, each one pass of the rasterizer instead (gsplat on CUDA: nothing is kept per
    view, and lifting is the backward pass of rendering)."""

    def __init__(self, g: SplatTensors, view, backend: str = "gsplat") -> None:
        self.g, self.view, self.backend = g, view, backend
        self.viewmat, self.K = _camera(g, view.viewmat, view.K)
        self.zeros = torch.zeros(g.count, 3, device=g.means.device)

    def _render(self, features: torch.Tensor | None = None):
        g, view = self.g, self.view
        return render_gaussians(g.means, g.quats, g.scales, g.opacities, self.zeros, self.viewmat, self.K,
                                view.width, view.height, features=features, backend=self.backend)

    @torch.no_grad()
    def depth_alpha(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._render()
        return out.depth, out.alpha

    def render(self, features: torch.Tensor, pixels: torch.Tensor, stride: int = 1
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """ViewWeights.render; `stride` > 1 renders the view at 1/stride of its resolution, its pixel (j, i)
        centred on pixel (stride·j, stride·i) of the view, and reads each pixel from the one on its grid."""
        if stride == 1:
            out = self._render(features)
            return out.features.reshape(-1, features.shape[1])[pixels], out.alpha.reshape(-1)[pixels]
        g, view = self.g, self.view
        width, height = -(-view.width // stride), -(-view.height // stride)
        K = self.K.clone()
        K[:2, :2] /= stride
        K[:2, 2] = K[:2, 2] / stride + 0.5 - 0.5 / stride
        out = render_gaussians(g.means, g.quats, g.scales, g.opacities, self.zeros, self.viewmat, K, width, height,
                               features=features, backend=self.backend)
        coarse = (pixels // view.width // stride) * width + (pixels % view.width) // stride
        return out.features.reshape(-1, features.shape[1])[coarse], out.alpha.reshape(-1)[coarse]

    def lift(self, values: torch.Tensor, pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return lift_with_support(self.g, self.viewmat, self.K, self.view.width, self.view.height, values, pixels,
                                 self.backend)
