"""The engine's "segment" request: a click, a box, a text prompt or given 2D masks in; a score and a selection
per Gaussian out. Picks the best method whose models are here (SAGA features, SAM + lifting, region growing).

Params {ply_path, mode: click|box|text|masks, x, y | box [x0, y0, x1, y1], text, granularity (0 fine part ..
1 whole object), method: auto|region|lift|saga, width, height, device, views {source: orbit|colmap|transforms,
path, count}, target_label (masks mode, default 1)}. Arrays {viewmat (4, 4) Blender-world camera, K (3, 3),
file_to_world (4, 4) of the object, indices (int64 subset of the .ply; results follow its order), masks
(V, H, W) int32 with view_viewmats (V, 4, 4) file frame and view_Ks (V, 3, 3)}. Result params {count, method,
models {used, missing}}, arrays {scores (N,) float32, mask (N,) bool} (+ labels (N,) int32 in masks mode).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import fallbacks
from ..errors import AnimateGaussiansError
from ..neighbours import subset_knn
from ..render.contributions import label_votes
from ..render.splats import SplatTensors, splat_tensors
from ..render.job import resolve_device
from ..scene_cache import load_scene
from . import cleanup, lifting, region_growing
from .views import View, load_views

MODES = ("click", "box", "text", "masks")
METHODS = ("auto", "region", "lift", "saga")
# What each missing model would add, for the panel's "install ... to enable" line.
MODEL_BENEFITS = {"sam": "SAM-quality masks (click lifting; boxes through trained SAGA features)",
                  "clip": "text selection"}


class SegmentRequestError(AnimateGaussiansError):
    """The segment request cannot be answered as asked."""

    hint = "click on an object (or drag a box over it) in the camera's view"


def _model_status() -> dict[str, list[str]]:
    """Which SAM / CLIP weights are on this machine (ids), never downloading."""
    from ..models import registry

    have: dict[str, list[str]] = {"sam": [], "clip": []}
    try:
        from . import clip_text, sam_masks  # noqa: F401  (registers their entries)
    except Exception:  # noqa: BLE001 - the packages may be missing in a slim engine env
        pass
    for entry in registry.REGISTRY.values():
        if entry.kind in have and registry.is_available(entry.id):
            have[entry.kind].append(entry.id)
    return have


def _models_report(have: dict[str, list[str]], used: list[str]) -> dict:
    missing = {kind: MODEL_BENEFITS[kind] for kind, ids in have.items() if not ids}
    return {"used": used, "missing": missing}


def _array(arrays: dict, name: str, shape: tuple | None = None, required: bool = True) -> np.ndarray | None:
    a = arrays.get(name)
    if a is None:
        if required:
            raise SegmentRequestError(f"the segment request lacks the array {name!r}",
                                      hint="this is a bug in the caller of the segment request; please report it")
        return None
    a = np.asarray(a)
    if shape is not None and a.shape != shape:
        raise SegmentRequestError(f"array {name!r} must be {shape}, got {a.shape}",
                                  hint="this is a bug in the caller of the segment request; please report it")
    return a


def _request_view(params: dict, arrays: dict) -> View:
    """The clicking camera, in the file frame: viewmat_file = viewmat_world @ file_to_world."""
    viewmat = _array(arrays, "viewmat", (4, 4)).astype(np.float64)
    file_to_world = arrays.get("file_to_world")
    if file_to_world is not None:
        viewmat = viewmat @ np.asarray(file_to_world, np.float64).reshape(4, 4)
    K = _array(arrays, "K", (3, 3)).astype(np.float64)
    width, height = int(params.get("width", round(2 * K[0, 2]))), int(params.get("height", round(2 * K[1, 2])))
    if width <= 0 or height <= 0:
        raise SegmentRequestError(f"image size {width}×{height} is not positive")
    return View("request", viewmat, K, width, height)


def _views(params: dict, scene, splats: SplatTensors) -> list[View]:
    spec = dict(params.get("views") or {})
    return load_views(spec.get("source", "orbit"), spec.get("path"), splats.means.cpu().numpy(),
                      int(spec.get("count", 24)), int(spec.get("width", 512)), int(spec.get("height", 512)))


def _region_tree(scene, splats: SplatTensors, indices: np.ndarray | None):
    means = splats.means.cpu().numpy()
    knn, dist = subset_knn(means, scene=scene, indices=indices)
    key = "region_tree" if indices is None else f"region_tree_{hash(indices.tobytes())}"
    return scene.cached(key, lambda: region_growing.build_region_tree(means, splats.rgb.cpu().numpy(), knn, dist)), knn


def _pick(splats, view: View, x: float, y: float, device) -> int:
    if not (0 <= x < view.width and 0 <= y < view.height):
        raise SegmentRequestError(f"the click ({x:.0f}, {y:.0f}) is outside the {view.width}×{view.height} image")
    seed = lifting.pick_gaussian(splats, view.viewmat, view.K, x, y)
    if seed < 0:
        raise SegmentRequestError(f"nothing of the object is under the click at ({x:.0f}, {y:.0f})")
    return seed


def _box_visibility(splats, view: View, box) -> tuple[np.ndarray, np.ndarray]:
    """(visible, inside): Gaussians composited into the box's pixels (the front surface), and those whose
    centres project inside the box in front of the camera."""
    from ..cameras import project_points

    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise SegmentRequestError("the box is empty", hint="drag a box over the object")
    label = np.full((view.height, view.width), -1, np.int32)
    label[max(0, int(np.floor(y0))):int(np.ceil(y1)), max(0, int(np.floor(x0))):int(np.ceil(x1))] = 0
    votes = label_votes(splats, view.viewmat[None], view.K[None], label[None], 1)[:, 0].cpu().numpy()
    visible = votes > 0.05 * max(float(np.median(votes[votes > 0])) if (votes > 0).any() else 0.0, 1e-6)
    uv, z = project_points(splats.means.cpu().numpy(), view.viewmat, view.K)
    inside = (z > 0) & (uv[:, 0] >= x0) & (uv[:, 0] <= x1) & (uv[:, 1] >= y0) & (uv[:, 1] <= y1)
    return visible, inside


_SAM_PREDICTORS: dict = {}


def _sam_predictor(variant: str, device):
    """A SamPredictor for the variant, loaded once per engine process (a checkpoint is up to 2.5 GB)."""
    from segment_anything import SamPredictor

    from . import sam_masks

    key = (variant, str(device))
    if key not in _SAM_PREDICTORS:
        _SAM_PREDICTORS.clear()   # one model in memory at a time
        _SAM_PREDICTORS[key] = SamPredictor(sam_masks.load_sam(variant, device=device))
    return _SAM_PREDICTORS[key]


def _sam_variant(params: dict, have: dict[str, list[str]]) -> str:
    """The SAM checkpoint this request loads: the one asked for, else the largest one here (the model status
    lists them largest first), else the default (fetched on first use)."""
    from . import sam_masks
    here = [sid.removeprefix("sam_") for sid in have.get("sam", [])]
    return sam_masks.choose_variant(params.get("sam_variant") or (here[0] if here else None))


def _rendered_view(scene, splats, v: View, key: str):
    """(rgb uint8 (H, W, 3), depth (H, W), alpha (H, W)) of a view, rendered once per scene, subset and camera."""
    def render():
        out = lifting.render_view(splats, v)
        rgb = (out.rgb.clamp(0, 1) * 255 + 0.5).byte().cpu().numpy()
        return rgb, out.depth.cpu().numpy(), out.alpha.cpu().numpy()

    cam = hash(np.asarray(v.viewmat, np.float64).tobytes() + np.asarray(v.K, np.float64).tobytes())
    return scene.cached(f"view_render_{key}_{cam}_{v.width}x{v.height}", render)


def _sam_lift_click(ctx, splats, scene, view: View, seed: int, granularity: float, params, device,
                    knn: np.ndarray, splats_key: str = "") -> tuple[np.ndarray, np.ndarray]:
    """SAM-prompted lifting: the clicked Gaussian's centre, seen in several views, prompts SAM there; each
    view's mask (part → whole by granularity) is lifted onto the Gaussians (lifting.lift_masks' robust
    steps: trusted pixels, per-view shares, neighbour smoothing). Returns (scores: each Gaussian's winning
    share, on the mask's side of 0.5; in_mask (N,) bool)."""
    from ..cameras import project_points
    from . import sam_masks

    views = [view] + _views(params, scene, splats)
    predictor = _sam_predictor(_sam_variant(params, _model_status()), device)
    centre = splats.means[seed].cpu().numpy()[None]
    labels, used = [], []
    for i, v in enumerate(views):
        ctx.check_cancelled()
        uv, z = project_points(centre, v.viewmat, v.K)
        u, w = uv[0]
        if z[0] <= 0 or not (0 <= u < v.width and 0 <= w < v.height):
            continue
        rgb, depth, alpha = _rendered_view(scene, splats, v, splats_key)
        # Hidden behind something else in this view: no prompt there.
        if float(depth[int(w), int(u)]) < 0.97 * z[0]:
            continue
        masks = sam_masks.point_masks(rgb, [[u, w]], predictor)
        masks = masks[np.argsort([m.sum() for m in masks], kind="stable")]   # small part → whole
        m = masks[int(round(np.clip(granularity, 0, 1) * (len(masks) - 1)))]
        # The mask's object = 1, the rest of what the view shows = 0, empty pixels = no vote.
        labels.append(np.where(m, 1, np.where(alpha >= 0.5, 0, -1)).astype(np.int32))
        used.append(v)
        ctx.progress(0.1 + 0.6 * (i + 1) / len(views), f"SAM masks: view {i + 1} of {len(views)}")
    if not used:
        raise SegmentRequestError("no view shows the clicked point")
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, v in enumerate(used):
        by_size.setdefault((v.height, v.width), []).append(i)
    votes = torch.zeros(splats.count, 2, device=splats.means.device)
    for idx in by_size.values():
        trusted = lifting.trusted_label_maps(np.stack([labels[i] for i in idx]), num_labels=2)
        votes += label_votes(splats, np.stack([used[i].viewmat for i in idx]), np.stack([used[i].K for i in idx]),
                             trusted, 2, normalise=True)
    ctx.progress(0.8, "lifting SAM masks")
    res = lifting.assign_labels(votes, knn, splats.rgb.cpu().numpy(), means=splats.means.cpu().numpy())
    in_mask = res.labels == 1
    return np.where(in_mask, np.maximum(res.share, 0.5), np.minimum(1 - res.share, 0.5)).astype(np.float32), in_mask


def handle_segment(ctx, params: dict, arrays: dict) -> tuple[dict, dict[str, np.ndarray]]:
    mode = params.get("mode", "click")
    method = params.get("method", "auto")
    if mode not in MODES:
        raise SegmentRequestError(f"unknown segment mode {mode!r} (expected one of {', '.join(MODES)})")
    if method not in METHODS:
        raise SegmentRequestError(f"unknown segment method {method!r} (expected one of {', '.join(METHODS)})")
    granularity = float(params.get("granularity", 0.5))
    device = resolve_device(params.get("device", "auto"))
    scene = load_scene(params["ply_path"])
    indices = arrays.get("indices")
    if indices is not None:
        indices = np.asarray(indices, np.int64).ravel()
        if indices.size and (indices.min() < 0 or indices.max() >= scene.gaussians.count):
            raise SegmentRequestError(f"indices outside the .ply's {scene.gaussians.count} Gaussians",
                                      hint="re-import the object: its .ply changed since")
    key = f"splats_{device}" + ("" if indices is None else f"_{hash(indices.tobytes())}")
    splats = scene.cached(key, lambda: splat_tensors(scene.gaussians, device, indices))
    have = _model_status()
    ctx.progress(0.05, "scene loaded")

    def subset(scores: np.ndarray) -> np.ndarray:   # whole-scene scores (SAGA) in the object's order
        return scores if indices is None else scores[indices]

    used: list[str] = []
    labels_out = None
    if mode == "masks":
        masks = _array(arrays, "masks").astype(np.int32)
        if masks.ndim != 3:
            raise SegmentRequestError(f"masks must be (V, H, W), got {masks.shape}")
        vms = _array(arrays, "view_viewmats", (len(masks), 4, 4))
        Ks = _array(arrays, "view_Ks", (len(masks), 3, 3))
        target = int(params.get("target_label", 1))
        num_labels = max(int(masks.max()) + 1, target + 1, 1)
        knn, _ = subset_knn(splats.means.cpu().numpy(), scene=scene, indices=indices)
        res = lifting.lift_masks(splats, vms, Ks, masks, num_labels, knn=knn,
                                 progress=lambda f: ctx.progress(0.1 + 0.8 * f, "lifting masks"))
        mask = res.labels == target
        scores = np.where(mask, res.share, 0.0).astype(np.float32)
        labels_out = res.labels.astype(np.int32)
        chosen = "lift"
    elif mode == "text":
        from .saga import text_scores

        text = str(params.get("text", "")).strip()
        if not text:
            raise SegmentRequestError("the text prompt is empty", hint="type what to select, e.g. 'the red mug'")
        if not have["clip"]:
            from .clip_text import DEFAULT_CLIP
            from ..models.registry import ModelUnavailableError, model_entry

            entry = model_entry(DEFAULT_CLIP)
            raise ModelUnavailableError(f"text selection needs the CLIP model {DEFAULT_CLIP!r}",
                                        hint=f"download it once ({entry.location}) or set {entry.env_var}; "
                                             "click or box selection works without it")
        views = _views(params, scene, splats)
        scores = subset(np.asarray(text_scores(scene, views, text, granularity, ctx, device,
                                               sam_variant=_sam_variant(params, have)), np.float32))
        from .saga import CLICK_THRESHOLD, features_ready

        mask = scores > (CLICK_THRESHOLD if features_ready(scene) else 0.5)
        chosen, used = "saga" if features_ready(scene) else "lift", have["clip"] + [f"sam_{_sam_variant(params, have)}"]
    else:
        from .saga import features_ready

        view = _request_view(params, arrays)
        if method == "auto":
            method = "saga" if features_ready(scene) else ("lift" if have["sam"] and mode == "click" else "region")
            if method == "region":
                why = ("no SAM weights are on this machine" if not have["sam"] else
                       "a box uses SAM only through trained features (Segment ▸ Advanced ▸ Train Features, "
                       "batch --train-features)")
                fallbacks.warn("region_growing", f"selected by region growing (position and colour), not SAM: {why}")
        if method == "saga":
            from .saga import CLICK_THRESHOLD, click_scores, load_features, mask_scores

            if not features_ready(scene):
                raise SegmentRequestError("no SAGA features are trained for this scene",
                                          hint="train them first (segment_train), or use method 'region'")
            features = load_features(scene)
            if mode == "click":
                scores = click_scores(features, scene, view, float(params["x"]), float(params["y"]), granularity,
                                      device)
            else:
                box_mask = np.zeros((view.height, view.width), bool)
                x0, y0, x1, y1 = (int(round(v)) for v in params["box"])
                box_mask[min(y0, y1):max(y0, y1), min(x0, x1):max(x0, x1)] = True
                scores = mask_scores(features, scene, view, box_mask, granularity, device)
            scores = subset(np.asarray(scores, np.float32))
            mask = scores > CLICK_THRESHOLD
            used = ["saga_features"]
        elif method == "lift":
            if mode != "click":
                raise SegmentRequestError("method 'lift' takes clicks", hint="use method 'region' for a box")
            if not have["sam"]:
                raise SegmentRequestError("method 'lift' needs SAM weights",
                                          hint="download a SAM checkpoint (vit_h, vit_l or vit_b), or use 'region'")
            seed = _pick(splats, view, float(params["x"]), float(params["y"]), device)
            knn, _ = subset_knn(splats.means.cpu().numpy(), scene=scene, indices=indices)
            scores, in_mask = _sam_lift_click(ctx, splats, scene, view, seed, granularity, params, device, knn, key)
            mask = cleanup.keep_connected(splats.means.cpu().numpy(), in_mask, seeds=[seed])
            used = [f"sam_{_sam_variant(params, have)}"]
        else:
            tree, _ = _region_tree(scene, splats, indices)
            tolerance = region_growing.granularity_tolerance(granularity)
            if mode == "click":
                seed = _pick(splats, view, float(params["x"]), float(params["y"]), device)
                mask = region_growing.grow_from_seeds(tree, seed, tolerance, device)
            else:
                if "box" not in params or len(params["box"]) != 4:
                    raise SegmentRequestError("box mode needs params.box = [x0, y0, x1, y1]")
                visible, inside = _box_visibility(splats, view, params["box"])
                mask = region_growing.box_components(tree, tolerance, visible, inside, device)
                if not mask.any():   # the box cuts through everything: take what it shows, de-noised
                    mask = cleanup.keep_connected(splats.means.cpu().numpy(), visible & inside)
            scores = mask.astype(np.float32)
        chosen = method
    ctx.progress(1.0, "selected")
    result = {"count": int(mask.sum()), "method": chosen, "models": _models_report(have, used),
              "gaussians": int(splats.count)}
    out = {"scores": np.ascontiguousarray(scores, np.float32), "mask": np.ascontiguousarray(mask, bool)}
    if labels_out is not None:
        out["labels"] = labels_out
    return result, out
