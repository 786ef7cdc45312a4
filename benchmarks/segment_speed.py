"""Segmentation speed on the device: direct lifting of one mask set (1M Gaussians, 60 views), the kernel's
speed-up over the torch reference, click latency (region growing; SAGA features when trained), SAGA training.

Prints one figure per line ("name: value"). Run: python benchmarks/segment_speed.py [--gaussians N --views V].
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.neighbours import knn_graph  # noqa: E402
from engine.render import contributions  # noqa: E402
from engine.render.splats import splat_tensors  # noqa: E402
from engine.segment import lifting, region_growing  # noqa: E402
from engine.segment.views import orbit_views  # noqa: E402
from engine.synthetic_scene import make_primitives_scene  # noqa: E402


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    out = fn()      # warm-up (kernel load, allocator)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gaussians", type=int, default=1_000_000)
    ap.add_argument("--views", type=int, default=60)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--reference-views", type=int, default=2)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    per_object = args.gaussians // 6       # the ground holds three objects' worth
    scene = make_primitives_scene(gaussians_per_object=per_object, sh_degree=0, seed=0)
    g = splat_tensors(scene.gaussians, device)
    print(f"gaussians: {g.count}")
    print("inputs: oracle masks (the synthetic scene's labels rendered), not SAM")
    views = orbit_views(scene.gaussians.means, count=args.views, width=args.width, height=args.height)
    vms, Ks = np.stack([v.viewmat for v in views]), np.stack([v.K for v in views])
    # Oracle label maps (the synthetic scene's labels rendered) as the mask set.
    onehot = torch.nn.functional.one_hot(torch.from_numpy(scene.labels).long(), 4).float().to(device)
    maps = []
    for v in views:
        out = lifting.render_view(g, v, features=onehot)
        lab = out.features.argmax(-1).int()
        lab[out.alpha < 0.5] = -1
        maps.append(lab)
    maps = torch.stack(maps)
    use_kernel = contributions.kernel_available(device)
    print(f"kernel_available: {use_kernel}")

    t_votes, _ = timed(lambda: contributions.label_votes(g, vms, Ks, maps, 4, use_kernel=use_kernel, normalise=True))
    print(f"lift_votes_{args.views}_views_s: {t_votes:.3f}")
    knn, dist = knn_graph(scene.gaussians.means, 16)
    # The whole lifting as the handler runs it: trusted label maps, per-view shares, smoothing, clean-up.
    t_lift, res = timed(lambda: lifting.lift_masks(g, vms, Ks, maps, 4, knn=knn, use_kernel=use_kernel), repeat=1)
    print(f"lift_total_s: {t_lift:.3f}")
    ious = [((res.labels == l) & (scene.labels == l)).sum() / ((res.labels == l) | (scene.labels == l)).sum()
            for l in range(4)]
    print(f"lift_min_iou: {min(ious):.4f}")

    r = args.reference_views
    t_ref, _ = timed(lambda: contributions.label_votes(g, vms[:r], Ks[:r], maps[:r], 4, use_kernel=False), repeat=1)
    t_ker, _ = timed(lambda: contributions.label_votes(g, vms[:r], Ks[:r], maps[:r], 4, use_kernel=use_kernel))
    print(f"reference_{r}_views_s: {t_ref:.3f}")
    print(f"kernel_{r}_views_s: {t_ker:.4f}")
    print(f"kernel_speedup: {t_ref / t_ker:.1f}")

    t = time.perf_counter()
    tree = region_growing.build_region_tree(scene.gaussians.means, g.rgb.cpu().numpy(), knn, dist)
    print(f"region_tree_build_s: {time.perf_counter() - t:.2f} (once per scene, cached)")
    view = views[0]
    target = scene.object("red_sphere").center
    from engine.cameras import project_points

    uv, _ = project_points(target[None], view.viewmat, view.K)
    u, v = uv[0]
    tol = region_growing.granularity_tolerance(0.5)

    def click():
        seed = lifting.pick_gaussian(g, view.viewmat, view.K, float(u), float(v))
        return region_growing.grow_from_seeds(tree, seed, tol, device)

    t_click, mask = timed(click, repeat=5)
    iou = (mask & (scene.labels == 1)).sum() / (mask | (scene.labels == 1)).sum()
    print(f"click_region_ms: {1000 * t_click:.1f}")
    print(f"click_region_iou: {iou:.4f}")
    t_slider, _ = timed(lambda: region_growing.grow_from_seeds(tree, 0, tol * 1.1, device), repeat=5)
    print(f"granularity_change_ms: {1000 * t_slider:.1f}")
    try:
        from engine.segment import saga
    except Exception as exc:  # noqa: BLE001
        print(f"saga: unavailable ({exc})")
        return
    bench = getattr(saga, "benchmark_training", None)
    if bench is not None:
        bench()


if __name__ == "__main__":
    main()
