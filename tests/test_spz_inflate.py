"""The .spz reader's inflaters (engine/formats/inflate.py: ISA-L where installed, else zlib) give the same
arrays and the same errors, and its SH rows decoded on two threads are those decoded on one."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from splat_format_fixtures import random_gaussians

from engine.errors import SplatFormatError
from engine.formats import inflate, spz, write_scene

N = 70_001   # crosses the SH decode's 4096-row blocks and its 32768-row claims


@pytest.fixture(scope="module")
def spz_file(tmp_path_factory):
    g = random_gaussians(N, 3, seed=5)
    return write_scene(tmp_path_factory.mktemp("spz") / "scene.spz", g)


def _fields(g):
    return (g.means, g.sh_dc, g.opacity_logit, g.log_scales, g.quats_wxyz, g.sh_rest)


def test_the_test_environment_inflates_with_isal():
    # requirements-dev.txt and the extension bundle isal: the default must be the fast inflater there.
    assert inflate.BACKEND == "isal" and inflate.available() == ("isal", "zlib")


def test_every_inflater_decodes_the_same_arrays(spz_file):
    reference = spz.read(spz_file, inflater="zlib")
    assert reference.count == N and reference.sh_rest.shape == (N, 15, 3)
    for backend in inflate.available():
        g = spz.read(spz_file, inflater=backend)
        for ours, theirs in zip(_fields(g), _fields(reference)):
            assert np.array_equal(ours, theirs), backend
        given: list[np.ndarray] = []

        def sh_into(k, n):
            given.extend(np.full((n, 3), np.nan, np.float32) for _ in range(k))
            return given

        spz.read(spz_file, sh_into=sh_into, inflater=backend)   # the add-on's path: one array per coefficient
        assert len(given) == 15
        for j, coefficient in enumerate(given):   # every row written, by whichever thread claimed it
            assert np.array_equal(coefficient, reference.sh_rest[:, j]), (backend, j)


@pytest.mark.parametrize("backend", ["isal", "zlib"])
def test_every_inflater_refuses_damaged_streams_alike(spz_file, tmp_path, backend):
    raw = spz_file.read_bytes()
    damaged = bytearray(raw)
    damaged[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)
    for name, data in (("header cut", raw[:40]), ("mid-SH cut", raw[:len(raw) * 3 // 4]),
                       ("trailer cut", raw[:-3]), ("corrupt", bytes(damaged))):
        path = tmp_path / f"{name}.spz"
        path.write_bytes(data)
        with pytest.raises(SplatFormatError, match="truncated|damaged"):
            spz.read(path, inflater=backend)


def test_a_stream_short_of_its_sh_rows_names_the_mismatch(tmp_path):
    g = random_gaussians(N, 3, seed=6)
    stream = spz.encode(g)
    path = tmp_path / "short.spz"
    path.write_bytes(gzip.compress(stream[:-45 * 1000], mtime=0))   # a whole gzip stream, 1000 SH rows short
    with pytest.raises(SplatFormatError, match="needs"):
        spz.read(path)


def test_an_error_on_the_sh_worker_reaches_the_caller(spz_file):
    def wrong_shape(k, n):
        return [np.empty((n, 2), np.float32) for _ in range(k)]   # RGB needs 3 columns

    with pytest.raises(ValueError):
        spz.read(spz_file, sh_into=wrong_shape)
