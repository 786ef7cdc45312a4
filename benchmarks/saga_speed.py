"""SAGA affinity features on the device: training time and click latency on a labelled synthetic scene.

Issue 4's targets at 1M Gaussians and 60 views: training <= 90 s, a click <= 20 ms. Masks are the oracle
labels rendered (SAM's own time is not included). Prints one figure per line ("name: value").
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def oracle_masks(scene_labels: np.ndarray, g, views, device) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per view: the label map (−1 where nothing is drawn) and the masks (one per label, plus the whole scene)."""
    from engine.render.rasterizer import render_gaussians

    labels = torch.from_numpy(scene_labels.astype(np.int64)).to(device)
    onehot = torch.nn.functional.one_hot(labels, int(labels.max()) + 1).float()
    zeros = torch.zeros(g.count, 3, device=device)
    maps, masks = [], []
    for v in views:
        with torch.no_grad():
            out = render_gaussians(g.means, g.quats, g.scales, g.opacities, zeros, v.viewmat, v.K, v.width,
                                   v.height, features=onehot)
        lab = torch.where(out.alpha > 0.5, out.features.argmax(-1), -1).cpu().numpy()
        present = [lab == k for k in np.unique(lab[lab >= 0])]
        maps.append(lab)
        masks.append(np.stack(present + [lab >= 0]))
    return maps, masks


def click_pixel(label_map: np.ndarray, label: int) -> tuple[float, float]:
    """The pixel of a label's region farthest from its border (x, y)."""
    from scipy.ndimage import distance_transform_edt

    d = distance_transform_edt(label_map == label)
    y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    return x + 0.5, y + 0.5


def benchmark_training(gaussians: int = 1_000_000, views: int = 60, width: int = 640, height: int = 480,
                       iterations: int | None = None, device: str = "auto", workdir: str | None = None) -> dict:
    """Train SAGA features on a primitives scene of about `gaussians` Gaussians from `views` orbit views and
    time it and a click per object (IoU of the clicked segment against the labels is reported too)."""
    from engine.scene_cache import load_scene
    from engine.segment import saga
    from engine.segment.saga.rendering import as_device, scene_splats
    from engine.segment.views import orbit_views
    from engine.synthetic_scene import make_primitives_scene

    dev = as_device(device)
    synth = make_primitives_scene(gaussians_per_object=max(gaussians // 6, 50), sh_degree=0)
    folder = Path(workdir or tempfile.mkdtemp(prefix="saga_bench_"))
    scene = load_scene(synth.write(folder / "scene.ply"))
    view_list = orbit_views(scene.gaussians.means, views, width=width, height=height)
    g = scene_splats(scene, dev)
    maps, masks = oracle_masks(synth.labels, g, view_list, dev)
    print("saga_inputs: oracle masks (the synthetic scene's labels rendered), not SAM")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    sync()
    start = time.perf_counter()
    features = saga.train_features(scene, view_list, device=dev, masks=masks, iterations=iterations, save=False)
    sync()
    train_s = time.perf_counter() - start
    figures = {"gaussians": scene.gaussians.count, "views": views, "iterations": features.iterations,
               "train_s": train_s}
    click_ms, ious = [], []
    for label in np.unique(synth.labels):
        v = int(np.argmax([(m == label).sum() for m in maps]))
        x, y = click_pixel(maps[v], label)
        saga.click_scores(features, scene, view_list[v], x, y, 0.0, dev)   # warm-up (first render allocates)
        sync()
        t = time.perf_counter()
        scores = saga.click_scores(features, scene, view_list[v], x, y, 0.0, dev)
        sync()
        click_ms.append(1000 * (time.perf_counter() - t))
        selected, truth = scores > saga.CLICK_THRESHOLD, synth.labels == label
        ious.append(float((selected & truth).sum() / max((selected | truth).sum(), 1)))
    figures["click_ms"] = float(np.median(click_ms))
    figures["click_iou_min"] = min(ious)
    figures["click_iou_mean"] = float(np.mean(ious))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gaussians", type=int, default=1_000_000)
    parser.add_argument("--views", type=int, default=60)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    figures = benchmark_training(args.gaussians, args.views, args.width, args.height, args.iterations, args.device)
    for name, value in figures.items():
        print(f"saga_{name}: {value:.4g}" if isinstance(value, float) else f"saga_{name}: {value}")


if __name__ == "__main__":
    main()
