"""The `make fuzz` harness at CI size: a few hundred malformed inputs per reader/decoder in FUZZ_TARGETS, each
must parse or raise our own error, in time and without a memory blow-up. The harness's own checks are tested
too: a crash, a hang and a memory hog must each be counted."""

from __future__ import annotations

import ctypes
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from fuzz import memory_meter_works, run_target  # noqa: E402
from fuzz_targets import FUZZ_TARGETS, FuzzTarget  # noqa: E402

from blender_addon.io import heap_reuse  # noqa: E402

CI_INPUTS = 300


@pytest.mark.parametrize("target", FUZZ_TARGETS, ids=[t.name for t in FUZZ_TARGETS])
def test_malformed_inputs_give_clean_errors(target, tmp_path):
    counts = run_target(target, CI_INPUTS, seed=7, timeout_s=10, workdir=tmp_path)
    print(counts.line())
    details = "\n".join(f"{o}: {d[-400:]}" for o, _, d in counts.failures[:3])
    assert counts.inputs == CI_INPUTS
    assert (counts.crashes, counts.hangs, counts.memory_over) == (0, 0, 0), details
    assert counts.clean_errors > CI_INPUTS // 2     # the mutations really do break the input
    assert counts.parsed + counts.clean_errors == CI_INPUTS


def _target(parse) -> FuzzTarget:
    return FuzzTarget("probe", lambda: [b"seed"], lambda rng, data: data + b"!", parse)


def test_the_harness_counts_crashes_hangs_and_memory(tmp_path):
    def crash(data, workdir):
        if data.endswith(b"!"):
            raise KeyError("bug")

    def hang(data, workdir):
        if data.endswith(b"!"):
            time.sleep(5)

    assert run_target(_target(crash), 3, workdir=tmp_path).crashes == 3
    hung = run_target(_target(hang), 2, timeout_s=0.2, workdir=tmp_path)
    assert (hung.hangs, hung.crashes) == (2, 0)
    if memory_meter_works():
        def hog(data, workdir):
            np.ones(8_000_000).sum()   # 61 MiB touched for a 5-byte input

        assert run_target(_target(hog), 2, workdir=tmp_path).memory_over == 2


@pytest.mark.skipif(not memory_meter_works() or not heap_reuse.is_glibc(), reason="peak RSS reset and glibc's malloc only")
def test_the_memory_meter_sees_a_hog_served_from_free_resident_heap(tmp_path):
    # What an earlier test can leave behind: a raised mmap threshold and 90 MB of freed, resident heap between
    # live blocks, from which malloc serves the hog's 61 MiB without a new page (seen once in a full CI run).
    heap_reuse.reuse_freed_buffers()
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.restype, libc.free.argtypes = None, [ctypes.c_void_p]
    blocks = [libc.malloc(30 << 20) for _ in range(3)]
    fence = libc.malloc(1 << 20)
    assert all(blocks) and fence
    for block in blocks:
        ctypes.memset(block, 1, 30 << 20)
    for block in blocks:
        libc.free(block)

    def hog(data, workdir):
        np.ones(8_000_000).sum()

    try:
        counts = run_target(_target(hog), 2, workdir=tmp_path)
    finally:
        libc.free(fence)
    assert counts.memory_over == 2, counts.line()
