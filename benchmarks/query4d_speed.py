"""4D query speed (device): feature-field build (render, features, autoencoder, lifting) for a synthetic
sequence and the latency of one text query over every Gaussian and timestep. Prints "name: value" lines."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.dynamic import make_moving_sequence  # noqa: E402
from engine.query4d.features import OracleFeatureExtractor  # noqa: E402
from engine.query4d.field import FieldOptions, build_feature_field  # noqa: E402
from engine.query4d.query import query_embeddings, query_field, raw_relevancy  # noqa: E402


def synthetic_field(count: int, timesteps: int, device: str, d: int = 16, dim: int = 768):
    """A field of the benchmark's shape without building one: unit codes around a background direction, one
    sixth of the Gaussians near the query's direction in the middle third of the frames; the canonical
    negatives near the background. For the query's time only (its cost does not depend on how codes came)."""
    from engine.query4d.field import FeatureField

    import numpy as np
    g = torch.Generator().manual_seed(0)
    A = torch.randn(dim, d, generator=g) / d ** 0.5
    b = torch.randn(dim, generator=g) * 0.01
    unit = torch.nn.functional.normalize
    background, target = unit(torch.randn(d, generator=g), dim=0), unit(torch.randn(d, generator=g), dim=0)
    codes = torch.empty(timesteps, count, d, dtype=torch.float16)
    event = range(timesteps // 3, 2 * timesteps // 3 + 1)
    for t in range(timesteps):   # per frame: bounded host memory
        frame = background + 0.25 * torch.randn(count, d, generator=g)
        if t in event:
            frame[:count // 6] = target + 0.3 * torch.randn(count // 6, d, generator=g)
        codes[t] = unit(frame, dim=-1).half()
    field = FeatureField(codes=codes.to(device), seen=torch.ones(timesteps, count, dtype=torch.bool, device=device),
                         timesteps=np.arange(timesteps), total_timesteps=timesteps,
                         decoder_weight=A.to(device), decoder_bias=b.to(device), extractor="synthetic")
    negatives = (A @ (background + 0.005 * torch.randn(4, d, generator=g)).T).T + b
    return field, (A @ target + b).to(device), negatives.to(device)


def median_ms(run, device: str, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[len(times) // 2]


def time_query(run, device: str, repeats: int = 7) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    run()   # warm-up (and what the field caches for every query: its null level, its codes' decoded norms)
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"query_ms_first: {1000 * (time.perf_counter() - t0):.2f} (makes the field's per-field part once)")
    return median_ms(run, device, repeats)


def relevancy_path(device: str) -> str:
    import cuda_ext

    return "cuda_ext kernel" if device == "cuda" and cuda_ext.available() else "torch reference"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-object", type=int, default=50_000, help="Gaussians per object (×6 in all)")
    ap.add_argument("--timesteps", type=int, default=300)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--synthetic-field", action="store_true",
                    help="only the query's time, over a synthetic field of the same shape (no build, no accuracy)")
    args = ap.parse_args()
    if args.synthetic_field:
        field, positive, negatives = synthetic_field(6 * args.per_object, args.timesteps, args.device)
        ms = time_query(lambda: query_embeddings(field, positive, negatives), args.device)
        print(f"query_ms_synthetic_field: {ms:.2f} ({field.count} Gaussians x {args.timesteps} timesteps, "
              f"random codes: time only)")
        rel_ms = median_ms(lambda: raw_relevancy(field, positive, negatives), args.device)
        moved = field.codes.numel() * 2 + field.count * args.timesteps * (4 + 1 + 2)   # codes, norm, unseen, out
        print(f"relevancy_ms: {rel_ms:.2f} ({relevancy_path(args.device)}; {moved / rel_ms / 1e6:.0f} GB/s "
              f"of codes, norms, unseen bits and float16 out)")
        return
    names = {0: "ground", 1: "red sphere", 2: "green box", 3: "blue sphere"}
    seq = make_moving_sequence(args.per_object, timesteps=args.timesteps, move_start=args.timesteps // 3,
                               move_end=2 * args.timesteps // 3)
    print(f"gaussians: {seq.count}")
    print(f"timesteps: {seq.timesteps}")
    ext = OracleFeatureExtractor(names)
    print("inputs: oracle features (label-derived), not ViCLIP")
    opts = FieldOptions(views=args.views, width=args.size, height=args.size, scales=(0.25, 0.125, 0.0625))
    start = time.perf_counter()
    field = build_feature_field(seq, ext, opts, args.device)
    if args.device == "cuda":
        torch.cuda.synchronize()
    print(f"field_build_s: {time.perf_counter() - start:.2f}")
    for k, v in field.stats.items():
        print(f"field_{k}: {v:.4f}")
    print(f"query_ms: {time_query(lambda: query_field(field, ext, 'the red sphere rolling'), args.device):.2f} "
          f"(relevancy: {relevancy_path(args.device)})")
    r = query_field(field, ext, "the red sphere rolling")
    print(f"query_span: {r.span[0] if r.span else -1}-{r.span[1] if r.span else -1}")
    absent = query_field(field, ext, "a purple elephant")
    print(f"query_absent_matched: {absent.matched} (best {absent.best_relevancy:.3f} < {absent.threshold:.3f})")
    labels = torch.from_numpy(seq.labels == 1).to(r.masks.device)
    t = (r.span[0] + r.span[1]) // 2 if r.span else 0
    inter = (r.masks[t] & labels).sum().item()
    union = (r.masks[t] | labels).sum().item()
    print(f"query_iou_mid_span: {inter / max(union, 1):.3f}")


if __name__ == "__main__":
    main()
