"""4D query speed (device): feature-field build (render, features, autoencoder, lifting) for a synthetic
sequence and the latency of one text query over every Gaussian and timestep. Prints "name: value" lines."""

from __future__ import annotations

import argparse
import time

import torch

from engine.dynamic import make_moving_sequence
from engine.query4d.features import OracleFeatureExtractor
from engine.query4d.field import FieldOptions, build_feature_field
from engine.query4d.query import query_field


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-object", type=int, default=50_000, help="Gaussians per object (×6 in all)")
    ap.add_argument("--timesteps", type=int, default=300)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
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
    query_field(field, ext, "the red sphere rolling")          # warm-up
    times = []
    for _ in range(5):
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        r = query_field(field, ext, "the red sphere rolling")
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    print(f"query_ms: {1000 * sorted(times)[len(times) // 2]:.2f}")
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
