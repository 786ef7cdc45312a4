"""The "query4d" request: a 4D scene (a params.npz sequence, or Blender objects with per-frame matrices), a text,
and back the time span and, per Gaussian, when it is in the answer. The feature field is cached per scene.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ..dynamic import DynamicGaussians, read_dynamic, validate
from ..errors import AnimateGaussiansError, InputFileError
from ..scene_cache import content_hash, path_for
from .features import load_extractor
from .field import FeatureField, FieldOptions, build_feature_field
from .query import QuerySettings, query_field
from .thresholds import THRESHOLDS, request_thresholds

MAX_FIELDS_IN_MEMORY = 2
_fields: OrderedDict[tuple[str, str], FeatureField] = OrderedDict()
_extractors: dict[tuple[str, str], object] = {}
_lock = threading.Lock()


class Query4DRequestError(AnimateGaussiansError):
    hint = "this is a bug in the caller of the query4d request; please report it with the message"


def _device(name: str) -> torch.device:
    if name not in ("auto", "cpu", "cuda"):
        raise Query4DRequestError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        from ..render.rasterizer import RenderBackendError
        raise RenderBackendError("device 'cuda' was asked for but torch sees no CUDA GPU")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def sequence_from_objects(objects: list[dict], arrays: dict) -> tuple[DynamicGaussians, str]:
    """Our own animated objects as one sequence in Blender world (frame i = row i of object_matrices), and a
    content key (source hashes, subsets, matrices)."""
    from ..gaussian_transform import transform_gaussian_arrays
    from ..render.job import select_rows
    from ..scene_cache import load_scene

    matrices = np.asarray(arrays.get("object_matrices"), np.float64)
    if matrices.ndim != 4 or matrices.shape[1:] != (len(objects), 4, 4):
        raise Query4DRequestError(f"object_matrices must be (frames, {len(objects)}, 4, 4), got {matrices.shape}")
    digest = hashlib.sha256(matrices.tobytes())
    parts = []
    for j, obj in enumerate(objects):
        path = obj.get("ply_path")
        if not path or not Path(path).exists():
            raise InputFileError(f"the scene file of object {obj.get('name', j)!r} is missing: {path}")
        scene = load_scene(path)
        idx = arrays.get(f"indices_{j}")
        parts.append(select_rows(scene.gaussians, idx, obj.get("name", str(j))))
        digest.update(scene.hash.encode())
        digest.update(b"" if idx is None else np.asarray(idx, np.int64).tobytes())
    F = matrices.shape[0]
    means, quats = [], []
    for f in range(F):
        m_f, q_f = [], []
        for j, g in enumerate(parts):
            m, q, _, _ = transform_gaussian_arrays(g.means, g.quats_wxyz, g.log_scales, g.sh_rest[:, :0],
                                                   matrices[f, j], exact_covariance=False)
            m_f.append(m)
            q_f.append(q)
        means.append(np.concatenate(m_f))
        quats.append(np.concatenate(q_f))
    # Scales follow frame 0's matrices (objects are rarely scaled while they move): log s of a uniform scale.
    scales = np.concatenate([g.log_scales + np.log(abs(np.linalg.det(matrices[0, j, :3, :3])) ** (1 / 3))
                             for j, g in enumerate(parts)])
    seq = DynamicGaussians(means=np.stack(means).astype(np.float32), quats_wxyz=np.stack(quats).astype(np.float32),
                           rgb=np.concatenate([g.colors() for g in parts])[None].astype(np.float32),
                           opacity_logit=np.concatenate([g.opacity_logit for g in parts]),
                           log_scales=scales.astype(np.float32))
    return validate(seq), digest.hexdigest()


def primitive_label_names() -> dict[int, str]:
    """The synthetic primitives scene's labels by name ("red sphere", ...): the oracle's default vocabulary."""
    from ..synthetic_scene import make_primitives_scene

    return {o.label: o.name.replace("_", " ") for o in make_primitives_scene(1, sh_degree=0).objects}


def _options(params: dict) -> FieldOptions:
    o = dict(params.get("options") or {})
    known = FieldOptions.__dataclass_fields__
    unknown = sorted(set(o) - set(known))
    if unknown:
        raise Query4DRequestError(f"unknown query4d options {unknown}")
    if "scales" in o:
        o["scales"] = tuple(float(s) for s in o["scales"])
    return FieldOptions(**o)


def _extractor(name: str, device: torch.device, label_names, progress):
    key = (name, str(device))
    if name == "oracle":
        return load_extractor(name, device, label_names)
    with _lock:
        if key not in _extractors:
            _extractors[key] = load_extractor(name, device, progress=progress)
        return _extractors[key]


def get_field(key: tuple[str, str], make, device) -> tuple[FeatureField, str]:
    """The field from memory, else from the scene's disk cache, else made (and saved). Returns (field, where)."""
    with _lock:
        if key in _fields:
            _fields.move_to_end(key)
            return _fields[key], "memory"
    path = path_for(key[0], "query4d/" + hashlib.sha1(key[1].encode()).hexdigest()[:16] + ".npz")
    if path.exists():
        field, where = FeatureField.load(path, device), "disk"
    else:
        field, where = make(), "built"
        field.save(path)
    with _lock:
        _fields[key] = field
        while len(_fields) > MAX_FIELDS_IN_MEMORY:
            _fields.popitem(last=False)
    return field, where


def handle_query4d(ctx, params: dict, arrays: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """params: text; npz_path (a Dynamic 3D Gaussians sequence) or objects [{name, ply_path}] with arrays
    object_matrices (F, O, 4, 4) and optional indices_<j>; extractor auto|viclip|clip|oracle (oracle needs
    a labelled sequence and label_names {label: name}, default the synthetic primitives' names); options
    (FieldOptions fields); thresholds spatial_threshold (absent or null: automatic), temporal_threshold,
    smoothing, min_relevancy, grow_threshold (0: masks not grown), each checked against thresholds.THRESHOLDS;
    device; return_masks.
    Result: span [first, last] (timesteps, inclusive) or null, counts (Gaussians in the mask per timestep),
    extractor, field (memory|disk|built), thresholds (the values used, null: the automatic cut), seconds;
    arrays mask_start, mask_end (N,) int32 (−1: never), peak (N,) float32, temporal_score (T,), and with
    return_masks masks_packed (T, ⌈N/8⌉) uint8 (np.packbits).
    """
    text = str(params.get("text", "")).strip()
    if not text:
        raise Query4DRequestError("the query has no text", hint="type what to look for, e.g. 'a ball flying in the air'")
    device = _device(params.get("device", "auto"))
    options = _options(params)
    thresholds = request_thresholds(params)   # checked before the field is loaded or built
    name = params.get("extractor", "auto")
    label_names = {int(k): v for k, v in (params.get("label_names") or {}).items()}
    if name == "oracle" and not label_names:
        label_names = primitive_label_names()
    ctx.progress(0.0, "loading the 4D scene")
    start = time.perf_counter()
    if params.get("npz_path"):
        path = Path(params["npz_path"]).expanduser()
        seq_hash = content_hash(path)
        load_seq = lambda: read_dynamic(path)  # noqa: E731
    elif params.get("objects"):
        seq, seq_hash = sequence_from_objects(list(params["objects"]), arrays)
        load_seq = lambda: seq  # noqa: E731
    else:
        raise Query4DRequestError("the query4d request names no scene (npz_path or objects)",
                                  hint="import a dynamic sequence or animate a segment first")
    extractor = _extractor(name, device, label_names, ctx.progress)
    key = (seq_hash, options.key(extractor.name) + json.dumps(sorted(label_names.items())))
    field, where = get_field(key, lambda: build_feature_field(load_seq(), extractor, options, device,
                                                              ctx.progress), device)
    ctx.check_cancelled()
    settings = QuerySettings(**thresholds)
    clock = time.perf_counter()
    result = query_field(field, extractor, text, settings)
    query_s = time.perf_counter() - clock
    out = {"mask_start": result.mask_start, "mask_end": result.mask_end, "peak": result.peak,
           "temporal_score": result.temporal_score}
    if params.get("return_masks"):
        out["masks_packed"] = np.packbits(result.masks.cpu().numpy(), axis=1)
    ctx.progress(1.0, "query answered")
    return {"span": list(result.span) if result.span else None, "counts": result.counts().tolist(),
            "count": int((result.mask_start >= 0).sum()), "gaussians": field.count,
            "timesteps": field.total_timesteps, "extractor": extractor.name, "field": where,
            "matched": result.matched, "best_relevancy": result.best_relevancy,
            "relevancy_threshold": result.threshold,
            "thresholds": {k: getattr(settings, k) for k in THRESHOLDS},   # those used, defaults included
            "field_stats": field.stats, "query_s": query_s, "seconds": time.perf_counter() - start}, out
