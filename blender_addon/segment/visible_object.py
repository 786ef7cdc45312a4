"""Which Gaussian object a click (or a box) in the camera's image is on: the one seen in front at that pixel,
across every visible Gaussian object of the scene (the imported scene, segments split off it, dynamic objects).

The Gaussians are composited at the pixel as the renderer does (front to back, alpha = opacity · the 2D
Gaussian's falloff, isotropic at the largest scale); the object with the largest share of the pixel is the one
seen there. `front_object` is the math (numpy only); `object_at` reads the scene.
"""

from __future__ import annotations

import numpy as np

from engine.cameras import project_points

# A box is judged on this many pixels per side (spread over the box).
BOX_SAMPLES = 8
# Gaussians whose falloff at the pixel is below this are ignored (3σ).
_CUTOFF_SIGMA = 3.0


def pixel_weights(means: np.ndarray, sigmas: np.ndarray, opacities: np.ndarray, owners: np.ndarray,
                  viewmat: np.ndarray, K: np.ndarray, pixels: np.ndarray, owner_count: int) -> np.ndarray:
    """(owner_count,) summed compositing weight of each owner's Gaussians over `pixels` (P, 2).

    means (N, 3) world, sigmas (N,) world-space size (largest scale), opacities (N,) in [0, 1], owners (N,) int.
    """
    uv, z = project_points(means, viewmat, K)
    front = z > 1e-6
    uv, z, sig, alpha0, own = uv[front], z[front], sigmas[front], opacities[front], owners[front]
    sigma_px = np.maximum(sig * K[0, 0] / z, 0.5)      # at least half a pixel, as the rasterizer's low-pass filter
    order = np.argsort(z, kind="stable")
    uv, sig_px, alpha0, own = uv[order], sigma_px[order], alpha0[order], own[order]
    total = np.zeros(owner_count)
    for px in np.asarray(pixels, np.float64).reshape(-1, 2):
        d2 = ((uv - px) ** 2).sum(1) / sig_px ** 2
        near = d2 < _CUTOFF_SIGMA ** 2
        if not near.any():
            continue
        alpha = np.minimum(alpha0[near] * np.exp(-0.5 * d2[near]), 0.99)
        transmittance = np.concatenate([[1.0], np.cumprod(1.0 - alpha)[:-1]])
        np.add.at(total, own[near], alpha * transmittance)
    return total


def front_object(weights: np.ndarray, minimum: float = 1e-3) -> int:
    """The owner seen at the pixels (largest weight), or -1 when nothing is there."""
    if weights.size == 0 or float(weights.max()) < minimum:
        return -1
    return int(np.argmax(weights))


def box_pixels(box, samples: int = BOX_SAMPLES) -> np.ndarray:
    x0, y0, x1, y1 = box
    xs = np.linspace(min(x0, x1), max(x0, x1), samples + 2)[1:-1]
    ys = np.linspace(min(y0, y1), max(y0, y1), samples + 2)[1:-1]
    return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)


# ------------------------------------------------------------------------------------------------ Blender side

def _position_attribute(obj, frame: int) -> str:
    """`position`, or for a dynamic sequence the timestep's own positions (its modifier plays them)."""
    from ..io.dynamic_import import DYNAMIC_START_KEY, DYNAMIC_STEPS_KEY, POSITION_PREFIX

    if DYNAMIC_STEPS_KEY not in obj:
        return "position"
    t = int(np.clip(frame - int(obj.get(DYNAMIC_START_KEY, 0)), 0, int(obj[DYNAMIC_STEPS_KEY]) - 1))
    name = f"{POSITION_PREFIX}{t}"
    return name if name in obj.data.attributes else "position"


def _world_gaussians(obj, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(means (N, 3) world, sigmas (N,) world, opacities (N,)) of a Gaussian object as it is at `frame`."""
    mesh = obj.data
    n = len(mesh.vertices)
    pos = np.empty(n * 3, np.float32)
    mesh.attributes[_position_attribute(obj, frame)].data.foreach_get("vector", pos)
    log_scale = np.empty(n * 3, np.float32)
    mesh.attributes["scale"].data.foreach_get("vector", log_scale)
    logit = np.empty(n, np.float32)
    mesh.attributes["opacity"].data.foreach_get("value", logit)
    world = np.array(obj.matrix_world, np.float64)
    means = pos.reshape(n, 3).astype(np.float64) @ world[:3, :3].T + world[:3, 3]
    # The scale attribute is in the file frame; the object's matrix (and the axis conversion) scale it uniformly.
    grow = abs(np.linalg.det(world[:3, :3])) ** (1.0 / 3.0)
    sigmas = np.exp(log_scale.reshape(n, 3).astype(np.float64)).max(1) * grow
    opacities = 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
    return means, sigmas, opacities


def object_at(scene, viewmat: np.ndarray, K: np.ndarray, point=None, box=None):
    """The visible Gaussian object seen in front at `point` (x, y), or over most of `box`; None if none."""
    from ..io.gaussian_object import is_gaussian_object

    objects = [o for o in scene.objects if is_gaussian_object(o) and o.visible_get() and len(o.data.vertices)]
    if not objects:
        return None
    parts = [_world_gaussians(o, scene.frame_current) for o in objects]
    means = np.concatenate([p[0] for p in parts])
    sigmas = np.concatenate([p[1] for p in parts])
    opacities = np.concatenate([p[2] for p in parts])
    owners = np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(parts)])
    pixels = np.array([point], np.float64) if point is not None else box_pixels(box)
    index = front_object(pixel_weights(means, sigmas, opacities, owners, viewmat, K, pixels, len(objects)))
    return None if index < 0 else objects[index]
