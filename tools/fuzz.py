"""`make fuzz`: feed N malformed inputs to every reader in tools/fuzz_targets.FUZZ_TARGETS and count outcomes.

Per target it prints: inputs, parsed (damage the reader accepted), clean errors (our own error types), crashes
(any other exception), hangs (over --timeout s) and memory over budget (peak RSS growth above 2 × the input
size + a fixed allowance). Exits 1 if any crash, hang or memory excess; failing inputs are saved for replay.

    python tools/fuzz.py [-n 10000] [--seed 0] [--target ply] [--save-failures DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import re
import signal
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_targets import FUZZ_TARGETS, FuzzTarget  # noqa: E402

from blender_addon.io.heap_reuse import is_glibc  # noqa: E402

MEMORY_ALLOWANCE_BYTES = 16 << 20   # the interpreter's and numpy's fixed overhead for any input, however small
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class _Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Hang()


def _kib(field_name: str) -> int:
    match = re.search(rf"^{field_name}:\s+(\d+) kB", _STATUS.read_text(), re.M)
    return int(match.group(1)) * 1024 if match else 0


def _glibc_trim():
    if not is_glibc():
        return None
    trim = ctypes.CDLL(None).malloc_trim
    trim.restype, trim.argtypes = ctypes.c_int, [ctypes.c_size_t]
    return trim


_MALLOC_TRIM = _glibc_trim()


def release_free_heap() -> None:
    """Give the heap's free, resident chunks back to the system before an input is measured.

    malloc serves even a block above its mmap threshold from a free heap chunk when one is large enough, and
    such a chunk's pages are already resident: an input that allocates into it grows no RSS and its memory goes
    unseen. How much free heap the process holds depends on what ran before (a test suite's order, a raised mmap
    threshold from an import), so without this the meter's answer would too.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def memory_meter_works() -> bool:
    """Whether peak RSS can be reset per input (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        _CLEAR_REFS.write_text("5")
        return _kib("VmHWM") > 0
    except OSError:
        return False


@dataclass
class FuzzCounts:
    target: str
    inputs: int = 0
    parsed: int = 0
    clean_errors: int = 0
    crashes: int = 0
    hangs: int = 0
    memory_over: int = 0
    max_growth_bytes: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, bytes, str]] = field(default_factory=list)

    def line(self) -> str:
        return (f"fuzz {self.target}: inputs {self.inputs}, parsed {self.parsed}, clean errors {self.clean_errors}, "
                f"crashes {self.crashes}, hangs {self.hangs}, memory over 2x input {self.memory_over} "
                f"(largest peak growth {self.max_growth_bytes >> 10} KiB), {self.seconds:.1f} s")

    @property
    def ok(self) -> bool:
        return self.crashes == 0 and self.hangs == 0 and self.memory_over == 0


def run_target(target: FuzzTarget, n: int, seed: int = 0, timeout_s: float = 10.0,
               workdir: Path | None = None, keep_failures: int = 20) -> FuzzCounts:
    """Run `n` mutated inputs (plus the seeds unmutated first) through `target.parse` and count the outcomes."""
    rng = np.random.default_rng(seed)
    seeds = target.seeds()
    counts = FuzzCounts(target.name)
    measure = memory_meter_works()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = workdir or Path(tmp)
        for data in seeds:   # valid inputs must parse (and warm up imports before memory is measured)
            target.parse(data, workdir)
        for i in range(n):
            data = target.mutate(rng, seeds[int(rng.integers(0, len(seeds)))])
            counts.inputs += 1
            outcome, detail = "parsed", ""
            if measure:
                release_free_heap()
                _CLEAR_REFS.write_text("5")
                before = _kib("VmRSS")
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            try:
                with warnings.catch_warnings():   # numpy's casts of damaged values warn; only errors count here
                    warnings.simplefilter("ignore", RuntimeWarning)
                    target.parse(data, workdir)
            except _Hang:
                outcome, detail = "hang", f"no answer within {timeout_s:g} s"
            except target.clean_errors:
                outcome = "clean"
            except BaseException as exc:  # noqa: BLE001 - anything else is what the fuzz is looking for
                if isinstance(exc, KeyboardInterrupt):
                    raise
                outcome, detail = "crash", "".join(traceback.format_exception(exc))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if measure:
                growth = _kib("VmHWM") - before
                counts.max_growth_bytes = max(counts.max_growth_bytes, growth)
                if growth > 2 * len(data) + MEMORY_ALLOWANCE_BYTES:
                    counts.memory_over += 1
                    if len(counts.failures) < keep_failures:
                        counts.failures.append(("memory", data, f"peak RSS grew {growth} bytes"))
            if outcome == "parsed":
                counts.parsed += 1
            elif outcome == "clean":
                counts.clean_errors += 1
            else:
                if outcome == "crash":
                    counts.crashes += 1
                else:
                    counts.hangs += 1
                if len(counts.failures) < keep_failures:
                    counts.failures.append((outcome, data, detail))
    signal.signal(signal.SIGALRM, previous)
    counts.seconds = time.perf_counter() - start
    return counts


def save_failures(counts: FuzzCounts, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (outcome, data, detail) in enumerate(counts.failures):
        stem = folder / f"{counts.target}_{outcome}_{i:03d}"
        stem.with_suffix(".bin").write_bytes(data)
        stem.with_suffix(".txt").write_text(detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="malformed inputs per target (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before an input counts as a hang")
    parser.add_argument("--target", action="append", help="only these targets (default: all)")
    parser.add_argument("--save-failures", type=Path, default=Path("build/fuzz_failures"))
    args = parser.parse_args(argv)
    names = [t.name for t in FUZZ_TARGETS]
    unknown = set(args.target or []) - set(names)
    if unknown:
        parser.error(f"unknown target(s) {sorted(unknown)}; known: {names}")
    if not memory_meter_works():
        print("fuzz: peak memory cannot be reset on this system (/proc/self/clear_refs); memory is not checked")
    ok = True
    for target in FUZZ_TARGETS:
        if args.target and target.name not in args.target:
            continue
        counts = run_target(target, args.n, args.seed, args.timeout)
        print(counts.line(), flush=True)
        if counts.failures:
            save_failures(counts, args.save_failures)
            print(f"fuzz {target.name}: failing inputs saved in {args.save_failures}")
        ok &= counts.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
