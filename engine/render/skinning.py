"""Linear blend skinning for the render request: objects deformed by a rig (per-Gaussian handles and weights,
per-frame handle transforms in the file frame) are posed before rasterising.

Means get the full blend Σ wᵢ Hᵢ x; orientation, scale and SH follow the heaviest handle's transform, done
by giving each (object, heaviest handle) pair its own matrix in cuda_ext.transform_gaussians' object_index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import AnimateGaussiansError


class SkinningRequestError(AnimateGaussiansError):
    """The skinning arrays of a render request do not fit its objects."""

    hint = "this is a bug in the caller of the render request; please report it with the message"


@dataclass
class Skinning:
    """Per-Gaussian groups (one per unskinned object, one per handle of a skinned object) and blend data."""

    group_index: torch.Tensor               # (N,) int32: the matrix group of each Gaussian (heaviest handle)
    group_object: np.ndarray                # (G,) object of each group
    group_handle: np.ndarray                # (G,) handle of each group, -1 for an unskinned object
    rows: dict[int, torch.Tensor]           # object -> its rows (N_j,) in the concatenated Gaussians
    handles: dict[int, torch.Tensor]        # object -> (N_j, M) handle ids (long)
    weights: dict[int, torch.Tensor]        # object -> (N_j, M) weights
    transforms: dict[int, np.ndarray]       # object -> (F, K, 4, 4) file-frame handle transforms

    def group_matrices(self, object_matrices: np.ndarray, frame: int) -> np.ndarray:
        """(G, 4, 4) world matrix of every group at frame index `frame`: object matrix @ handle transform."""
        mats = np.asarray(object_matrices, np.float64)[self.group_object].copy()
        for j, T in self.transforms.items():
            sel = self.group_object == j
            mats[sel] = mats[sel] @ T[frame][self.group_handle[sel]]
        return mats

    def blend_means(self, rest_means: torch.Tensor, posed_means: torch.Tensor, object_matrices: np.ndarray,
                    frame: int) -> torch.Tensor:
        """posed_means with every skinned object's rows replaced by their linear blend (world frame)."""
        out = posed_means.clone()
        for j, T in self.transforms.items():
            world = np.asarray(object_matrices, np.float64)[j] @ T[frame]          # (K, 4, 4)
            M = torch.from_numpy(world).to(rest_means.device, rest_means.dtype)
            x = rest_means[self.rows[j]]
            h, w = self.handles[j], self.weights[j]
            moved = torch.einsum("nmij,nj->nmi", M[h][..., :3, :3], x) + M[h][..., :3, 3]
            out[self.rows[j]] = (moved * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-12)
        return out


def skinning_from_request(objects: list[dict], arrays: dict, object_index: torch.Tensor, frames: int
                          ) -> Skinning | None:
    """The request's skinning (arrays skin_handles_<j> (N_j, M) int, skin_weights_<j> (N_j, M) float,
    skin_transforms_<j> (F, K, 4, 4) file frame, rows in object j's Gaussian order), or None when no object
    is skinned."""
    skinned = [j for j in range(len(objects)) if f"skin_transforms_{j}" in arrays]
    if not skinned:
        return None
    device = object_index.device
    counts = torch.bincount(object_index.long(), minlength=len(objects)).cpu().numpy()
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    group_object, group_handle, base = [], [], {}
    rows, handles, weights, transforms = {}, {}, {}, {}
    for j in range(len(objects)):
        base[j] = len(group_object)
        if j not in skinned:
            group_object.append(j)
            group_handle.append(-1)
            continue
        name = objects[j].get("name", j)
        T = np.asarray(arrays[f"skin_transforms_{j}"], np.float64)
        h = np.asarray(arrays.get(f"skin_handles_{j}"))
        w = np.asarray(arrays.get(f"skin_weights_{j}"), np.float32)
        if T.ndim != 4 or T.shape[0] != frames or T.shape[2:] != (4, 4):
            raise SkinningRequestError(f"skin_transforms of {name!r} must be ({frames}, K, 4, 4), got {T.shape}")
        if h.shape != w.shape or h.ndim != 2 or h.shape[0] != counts[j]:
            raise SkinningRequestError(f"skin handles/weights of {name!r} must both be ({counts[j]}, M), got "
                                       f"{h.shape} and {w.shape}")
        if h.size and (h.min() < 0 or h.max() >= T.shape[1]):
            raise SkinningRequestError(f"skin handles of {name!r} are outside 0..{T.shape[1] - 1}")
        k = T.shape[1]
        group_object += [j] * k
        group_handle += list(range(k))
        rows[j] = torch.arange(starts[j], starts[j] + counts[j], device=device)
        handles[j] = torch.from_numpy(h.astype(np.int64)).to(device)
        weights[j] = torch.from_numpy(w).to(device)
        transforms[j] = T
    group_index = torch.from_numpy(np.array([base[j] for j in range(len(objects))], np.int32)).to(device)
    group_index = group_index[object_index.long()].clone()
    for j in skinned:
        heaviest = torch.argmax(weights[j], dim=1)
        group_index[rows[j]] = (base[j] + handles[j].gather(1, heaviest[:, None])[:, 0]).to(torch.int32)
    return Skinning(group_index, np.array(group_object), np.array(group_handle), rows, handles, weights,
                    transforms)
