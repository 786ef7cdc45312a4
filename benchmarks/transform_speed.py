"""Speed of the batched Gaussian transform: CUDA kernel vs the torch reference on the GPU, and the bandwidth
the kernel reaches (1M Gaussians, SH degree 3, 10 objects by default). One figure per line."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cuda_ext  # noqa: E402
from cuda_ext import build, reference  # noqa: E402
from engine.gaussian_transform import quat_to_matrix  # noqa: E402


def time_ms(fn, repeats: int) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gaussians", type=int, default=1_000_000)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--sh-rest", type=int, default=15, choices=(0, 3, 8, 15))
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    n, k, o = args.gaussians, args.sh_rest, args.objects

    t0 = time.perf_counter()
    ext = build.load_extension(verbose=False)
    print(f"extension load (build on first use): {time.perf_counter() - t0:.1f} s")

    rng = np.random.default_rng(0)
    dev = torch.device("cuda")
    means = torch.randn(n, 3, device=dev)
    quats = torch.randn(n, 4, device=dev)
    log_scales = torch.rand(n, 3, device=dev) * -4
    sh = torch.randn(n, k, 3, device=dev) * 0.3
    index = torch.randint(0, o, (n,), device=dev, dtype=torch.int32)
    mats = np.tile(np.eye(4), (o, 1, 1))
    for m in mats:
        m[:3, :3] = quat_to_matrix(rng.normal(size=4)) * rng.uniform(0.5, 2.0)
        m[:3, 3] = rng.uniform(-2, 2, size=3)
    params = torch.from_numpy(reference.pack_object_parameters(mats)).to(dev)

    moved = n * (2 * 4 * (3 + 4 + 3 + 3 * k) + 4)  # read + write every attribute, read the index
    kernel = time_ms(lambda: ext.transform_gaussians(means, quats, log_scales, sh, index, params), args.repeats)
    api = time_ms(lambda: cuda_ext.transform_gaussians(means, quats, log_scales, sh, index, mats), args.repeats)
    ref = time_ms(lambda: reference.transform_gaussians_reference(means, quats, log_scales, sh, index, params),
                  max(5, args.repeats // 5))
    buf = torch.empty(moved // 8, dtype=torch.float32, device=dev)
    copy = time_ms(lambda: buf.clone(), args.repeats)  # same bytes read + written: the achievable bandwidth

    print(f"device: {torch.cuda.get_device_name()}")
    print(f"gaussians: {n}, sh_rest per channel: {k}, objects: {o}")
    print(f"bytes moved per call: {moved / 1e6:.1f} MB")
    print(f"kernel time: {kernel:.3f} ms")
    print(f"kernel bandwidth: {moved / kernel / 1e6:.0f} GB/s")
    print(f"api time (packing + index check + kernel): {api:.3f} ms")
    print(f"torch reference time: {ref:.3f} ms")
    print(f"kernel speed-up over reference: {ref / kernel:.1f}x")
    print(f"device-to-device copy of the same bytes: {copy:.3f} ms ({moved / copy / 1e6:.0f} GB/s)")
    print(f"kernel bandwidth vs that copy: {100 * copy / kernel:.0f}%")


if __name__ == "__main__":
    main()
