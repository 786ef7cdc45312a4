"""Engine process start-up and pipe speed, through the add-on's EngineClient. One figure per line.

Targets: start → hello ≤ 3 s on CPU (torch is not imported before hello); a 1M-element mask crosses the pipe
(one way, and echoed back) in ≤ 50 ms.

Run: .venv/bin/python benchmarks/engine_start.py [--starts N] [--repeats R] [--python PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from blender_addon.engine_link.engine_client import EngineClient  # noqa: E402


def measure_start(python: str, starts: int) -> None:
    to_hello, to_torch = [], []
    for _ in range(starts):
        client = EngineClient(python=python)
        t0 = time.perf_counter()
        client.wait_ready(120)
        t1 = time.perf_counter()
        client.request("info", timeout=120)  # the first request that imports torch
        t2 = time.perf_counter()
        client.stop()
        to_hello.append(t1 - t0)
        to_torch.append(t2 - t0)
    print(f"engine start to hello (median of {starts}): {statistics.median(to_hello):.3f} s")
    print(f"engine start to first torch request done (median of {starts}): {statistics.median(to_torch):.3f} s")


def measure_pipe(python: str, repeats: int) -> None:
    client = EngineClient(python=python)
    client.wait_ready(120)
    n = 1_000_000
    rng = np.random.default_rng(0)
    masks = {"bool": rng.random(n) > 0.5, "uint8": (rng.random(n) * 255).astype(np.uint8),
             "float32": rng.random(n, dtype=np.float32)}
    empty_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        client.request("echo", {}, timeout=60)
        empty_times.append(time.perf_counter() - t0)
    print(f"empty request round trip (median of {repeats}): {1e3 * statistics.median(empty_times):.2f} ms")
    for name, mask in masks.items():
        one_way, round_trip = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            # sleep_steps with 0 steps takes the array and answers without one: the mask crosses once
            client.request("sleep_steps", {"steps": 0}, {"mask": mask}, timeout=60)
            one_way.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _, out = client.request("echo", {}, {"mask": mask}, timeout=60)
            round_trip.append(time.perf_counter() - t0)
        assert np.array_equal(out["mask"], mask)
        mb = mask.nbytes / 1e6
        print(f"1M {name} mask ({mb:.0f} MB) one way incl. reply (median of {repeats}): "
              f"{1e3 * statistics.median(one_way):.2f} ms")
        print(f"1M {name} mask ({mb:.0f} MB) echo round trip (median of {repeats}): "
              f"{1e3 * statistics.median(round_trip):.2f} ms")
    client.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--python", default=sys.executable, help="the engine interpreter (default: this one)")
    args = parser.parse_args()
    measure_start(args.python, args.starts)
    measure_pipe(args.python, args.repeats)


if __name__ == "__main__":
    main()
