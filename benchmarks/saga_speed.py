"""SAGA affinity features on the device: training time and click latency on a labelled synthetic scene.

Issue 4's targets at 1M Gaussians and 60 views: training <= 90 s, a click <= 20 ms; issue 15's: training
<= 15 s at the same click IoU. Masks are the oracle labels rendered (SAM's own time is not included). The
training is the scene's first (its kNN graph built too); saga_train_<phase>_s split it. `--sweep` trains again
in the same process at other settings (iterations × step stride) and prints each one's time and click IoU.
Prints one figure per line ("name: value").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


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
                       iterations: int | None = None, device: str = "auto", workdir: str | None = None,
                       step_stride: int | None = None, sweep: list[tuple[int, int]] = ()) -> dict:
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

    def train(iterations, stride):
        options = {} if stride is None else {"step_stride": stride}
        sync()
        start = time.perf_counter()
        features = saga.train_features(scene, view_list, device=dev, masks=masks, iterations=iterations,
                                       save=False, **options)
        sync()
        return features, time.perf_counter() - start

    features, train_s = train(iterations, step_stride)
    figures = {"gaussians": scene.gaussians.count, "views": views, "iterations": features.iterations,
               "train_s": train_s}
    figures.update({f"train_{phase}_s": s for phase, s in features.phases.items()})
    figures.update(measure_clicks(features, scene, synth, maps, view_list, dev))
    for its, stride in sweep:
        again, seconds = train(its, stride)
        clicks = measure_clicks(again, scene, synth, maps, view_list, dev)
        name = f"sweep_{its}it_stride{stride}"
        figures.update({f"{name}_train_s": seconds, f"{name}_steps_s": again.phases["steps"],
                        f"{name}_click_iou_min": clicks["click_iou_min"],
                        f"{name}_click_iou_mean": clicks["click_iou_mean"]})
    return figures


def measure_clicks(features, scene, synth, maps, view_list, dev) -> dict:
    """A click per object: its latency at a granularity clicked before (the slider's usual case) and at a new
    one, its IoU against the labels, and against the click as it was (the whole view's feature map rendered)
    its time and the largest difference of the scores."""
    from engine.segment import saga
    from engine.segment.saga.features import gated_similarity
    from engine.segment.saga.queries import render_feature_map

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        return 1000 * (time.perf_counter() - start), out

    def whole_view(view, x, y, granularity):
        with torch.no_grad():
            fmap, _ = render_feature_map(features, scene, view, dev)
            feats, gate = features.device_tensors(dev)
            return gated_similarity(feats, gate, fmap[int(y), int(x)], granularity).float().cpu().numpy()

    click_ms, fresh_ms, whole_ms, diffs, ious = [], [], [], [], []
    for i, label in enumerate(np.unique(synth.labels)):
        v = int(np.argmax([(m == label).sum() for m in maps]))
        x, y = click_pixel(maps[v], label)
        saga.click_scores(features, scene, view_list[v], x, y, 0.0, dev)   # warm-up (first render allocates)
        ms, scores = timed(lambda: saga.click_scores(features, scene, view_list[v], x, y, 0.0, dev))
        click_ms.append(ms)
        fresh_ms.append(timed(lambda: saga.click_scores(features, scene, view_list[v], x, y, 0.01 * (i + 1),
                                                        dev))[0])
        whole_view(view_list[v], x, y, 0.0)
        ms, before = timed(lambda: whole_view(view_list[v], x, y, 0.0))
        whole_ms.append(ms)
        diffs.append(float(np.abs(scores - before).max()))
        selected, truth = scores > saga.CLICK_THRESHOLD, synth.labels == label
        ious.append(float((selected & truth).sum() / max((selected | truth).sum(), 1)))
    return {"click_ms": float(np.median(click_ms)), "click_ms_new_granularity": float(np.median(fresh_ms)),
            "click_ms_whole_view_render": float(np.median(whole_ms)),
            "click_scores_max_diff_vs_whole_view": max(diffs),
            "click_iou_min": min(ious), "click_iou_mean": float(np.mean(ious))}


def benchmark_clicks(gaussians: int, views: int, width: int, height: int, device: str = "auto") -> dict:
    """Only the click, on features made from the labels (AffinityFeatures.from_labels) instead of trained:
    the click's cost does not depend on how they came; the IoU then says only that the click found its label."""
    from engine.scene_cache import load_scene
    from engine.segment.saga.features import AffinityFeatures
    from engine.segment.saga.rendering import as_device, scene_splats
    from engine.segment.views import orbit_views
    from engine.synthetic_scene import make_primitives_scene

    dev = as_device(device)
    synth = make_primitives_scene(gaussians_per_object=max(gaussians // 6, 50), sh_degree=0)
    scene = load_scene(synth.write(Path(tempfile.mkdtemp(prefix="saga_click_")) / "scene.ply"))
    view_list = orbit_views(scene.gaussians.means, views, width=width, height=height)
    maps, _ = oracle_masks(synth.labels, scene_splats(scene, dev), view_list, dev)
    print("saga_inputs: features from the labels (no training), not SAM")
    figures = {"gaussians": scene.gaussians.count}
    figures.update(measure_clicks(AffinityFeatures.from_labels(synth.labels), scene, synth, maps, view_list, dev))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gaussians", type=int, default=1_000_000)
    parser.add_argument("--views", type=int, default=60)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--step-stride", type=int, default=None, help="render the steps at 1/stride resolution")
    parser.add_argument("--sweep", nargs="*", default=[], metavar="ITERATIONSxSTRIDE",
                        help="after the first training, train again at these settings (e.g. 150x1 150x2 0x1)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--click-only", action="store_true",
                        help="skip training: time the click on features made from the labels")
    args = parser.parse_args()
    if args.click_only:
        figures = benchmark_clicks(args.gaussians, args.views, args.width, args.height, args.device)
    else:
        sweep = [tuple(int(x) for x in setting.split("x")) for setting in args.sweep]
        figures = benchmark_training(args.gaussians, args.views, args.width, args.height, args.iterations,
                                     args.device, step_stride=args.step_stride, sweep=sweep)
    for name, value in figures.items():
        print(f"saga_{name}: {value:.4g}" if isinstance(value, float) else f"saga_{name}: {value}")


if __name__ == "__main__":
    main()
