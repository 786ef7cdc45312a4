"""Import raises glibc's mmap threshold so Blender's attribute arrays reuse the parse buffers the import frees:
in a fresh process an attribute-sized block is a mapping of its own before, and on the heap after."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blender_addon.io import heap_reuse

ROOT = Path(__file__).resolve().parents[1]
# Prints whether a 16 MB block (a 1M-Gaussian quaternion attribute) lies in the heap, after raising the threshold
# or not; a fresh process each time, since glibc raises the threshold itself once such a block is freed.
CHILD = """
import sys
import numpy as np
from blender_addon.io import heap_reuse
if sys.argv[1] == "raise":
    assert heap_reuse.reuse_freed_buffers() is True
    assert heap_reuse.reuse_freed_buffers() is False   # once per process
block = np.empty(16_000_000, np.uint8)
heaps = [[int(a, 16) for a in line.split()[0].split("-")] for line in open("/proc/self/maps") if "[heap]" in line]
print(any(low <= block.ctypes.data < high for low, high in heaps))
"""


def _block_on_heap(mode: str) -> bool:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() == "True"


@pytest.mark.skipif(not heap_reuse.is_glibc(), reason="glibc's allocator only")
def test_attribute_sized_blocks_come_from_the_heap_after_the_threshold_is_raised():
    assert not _block_on_heap("keep")
    assert _block_on_heap("raise")


def _no_such_name(name: str) -> str:
    raise ValueError(f"unrecognized configuration name {name}")   # what macOS and musl answer


def test_nothing_is_done_where_the_c_library_is_not_glibc(monkeypatch):
    monkeypatch.setattr(heap_reuse, "_raised", False)
    monkeypatch.setattr(heap_reuse.os, "confstr", _no_such_name)
    assert heap_reuse.is_glibc() is False
    assert heap_reuse.reuse_freed_buffers() is False
    assert heap_reuse._raised is False
