"""Each splat format against an independent implementation: gsply (PyPI) writes what we read and reads what we
write; .splat and SOG files come from small writers of the published layouts (splat_format_fixtures)."""

from __future__ import annotations

import numpy as np
import pytest
from splat_format_fixtures import random_gaussians, same_rotation, write_sog, write_splat_by_hand

from engine.formats import COMPRESSED_PLY, PLY, SOG, SPLAT, SPZ, detect, read_scene, write_scene
from engine.formats.common import RUB
from engine.ply import SH_C0, GaussianArrays

gsply = pytest.importorskip("gsply")


def _gsdata(g: GaussianArrays):
    return gsply.GSData.from_arrays(means=g.means, scales=g.log_scales, quats=g.quats_wxyz,
                                    opacities=g.opacity_logit, sh0=g.sh_dc,
                                    shN=g.sh_rest if g.sh_rest.shape[1] else None, format="ply")


def _colors(sh_dc):
    return 0.5 + SH_C0 * np.asarray(sh_dc, np.float64)


def _alpha(logit):
    return 1 / (1 + np.exp(-np.asarray(logit, np.float64)))


def _assert_close(a: GaussianArrays, b: GaussianArrays, pos: float, color: float, alpha: float, scale: float,
                  rot: float, sh: float | None) -> None:
    assert a.count == b.count
    np.testing.assert_allclose(a.means, b.means, atol=pos)
    np.testing.assert_allclose(_colors(a.sh_dc), _colors(b.sh_dc), atol=color)
    np.testing.assert_allclose(_alpha(a.opacity_logit), _alpha(b.opacity_logit), atol=alpha)
    np.testing.assert_allclose(a.log_scales, b.log_scales, atol=scale)
    assert same_rotation(a.quats_wxyz, b.quats_wxyz).min() > 1 - rot
    if sh is not None:
        assert a.sh_rest.shape == b.sh_rest.shape
        np.testing.assert_allclose(a.sh_rest, b.sh_rest, atol=sh)


def _from_gsply(data) -> GaussianArrays:
    n = len(data.means)
    rest = np.asarray(data.shN, np.float32) if data.shN is not None else np.zeros((n, 0, 3), np.float32)
    return GaussianArrays(means=np.asarray(data.means), sh_dc=np.asarray(data.sh0), sh_rest=rest.reshape(n, -1, 3),
                          opacity_logit=np.asarray(data.opacities).reshape(-1), log_scales=np.asarray(data.scales),
                          quats_wxyz=np.asarray(data.quats))


# Quantisation bounds per format (docs/formats.md): position, colour, alpha, log-scale, rotation (1 − |dot|), SH.
SPZ_TOL = dict(pos=1 / 4096, color=0.5 / 255 / 0.15 * SH_C0 + 1e-4, alpha=0.5 / 255 + 1e-6, scale=1 / 32 + 1e-6,
               rot=2e-5, sh=8.5 / 128)


def _cply_tol(g: GaussianArrays) -> dict:
    span = np.ptp(g.means, axis=0).max()
    return dict(pos=span / 1023, color=1 / 255 + 1e-4, alpha=0.5 / 255 + 1e-6, scale=np.ptp(g.log_scales) / 1023,
                rot=1e-5, sh=8 / 256 + 1e-6)


@pytest.mark.parametrize("degree", [0, 3])
def test_spz_written_by_gsply_reads_within_quantisation(tmp_path, degree):
    g = random_gaussians(700, degree, seed=1)
    path = tmp_path / "scene.spz"
    gsply.write_spz(path, _gsdata(g), version=3)
    scene = read_scene(path)
    assert scene.format == SPZ and np.array_equal(scene.frame, RUB)
    _assert_close(scene.gaussians, g, **SPZ_TOL)
    if degree:   # each coefficient's RGB is one contiguous block (the add-on copies them without a gather)
        assert all(scene.gaussians.sh_rest[:, j].flags["C_CONTIGUOUS"] for j in range(15))
    ours = _from_gsply(gsply.read_spz(path))
    _assert_close(scene.gaussians, ours, pos=1e-6, color=1e-5, alpha=1e-5, scale=1e-6, rot=1e-6, sh=1e-6)


def test_spz_decoder_edges_match_gsply(tmp_path):
    """The fast paths of our .spz decoder at their edges: the most negative and positive 24-bit positions (read
    through overlapping words), every SH byte (read as signed bytes), every largest rotation component, and rows
    either side of the SH decode's block and wait boundaries (4096 and 65536 rows)."""
    n = 70_001
    g = random_gaussians(n, 3, seed=12, extent=2047.0)
    g.means[:4] = [[-2047.99, 2047.99, 0.0], [-1 / 4096, 1 / 4096, -0.5], [2047.0, -2047.0, 1e-6], [0, 0, 0]]
    codes = np.arange(n * 45) % 256
    g.sh_rest[:] = ((codes - 128) / 128.0).reshape(n, 15, 3)
    g.quats_wxyz[:4] = np.eye(4)[[1, 2, 3, 0]] * 0.9 + 0.05   # largest x, y, z, w in turn
    path = tmp_path / "edges.spz"
    gsply.write_spz(path, _gsdata(g), version=3)
    ours = read_scene(path).gaussians
    theirs = _from_gsply(gsply.read_spz(path))
    _assert_close(ours, theirs, pos=1e-6, color=1e-5, alpha=1e-5, scale=1e-6, rot=1e-6, sh=1e-6)
    np.testing.assert_allclose(ours.means[:4], g.means[:4], atol=1 / 4096)
    assert np.abs(ours.sh_rest).max() == 1.0 and len(np.unique(ours.sh_rest)) == 256
    assert (np.abs(ours.quats_wxyz[:4]).argmax(axis=1) == [1, 2, 3, 0]).all()


@pytest.mark.parametrize("degree", [0, 2])
def test_spz_we_write_reads_back_in_gsply(tmp_path, degree):
    g = random_gaussians(513, degree, seed=2)
    path = write_scene(tmp_path / "out.spz", g)
    back = _from_gsply(gsply.read_spz(path))
    _assert_close(back, g, **SPZ_TOL)
    assert read_scene(path).gaussians.count == g.count


@pytest.mark.parametrize("degree", [0, 3])
def test_compressed_ply_written_by_gsply_reads_within_quantisation(tmp_path, degree):
    g = random_gaussians(700, degree, seed=3)
    path = tmp_path / "scene.compressed.ply"
    gsply.plywrite(path, _gsdata(g), compressed=True)
    assert detect(path) == COMPRESSED_PLY
    scene = read_scene(path)
    _assert_close(scene.gaussians, g, **_cply_tol(g))
    if degree:
        assert all(scene.gaussians.sh_rest[:, j].flags["C_CONTIGUOUS"] for j in range(15))
    ours = _from_gsply(gsply.plyread(path))
    _assert_close(scene.gaussians, ours, pos=1e-5, color=1e-5, alpha=1e-5, scale=1e-5, rot=1e-5, sh=None)


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_compressed_ply_we_write_reads_back_in_gsply(tmp_path, degree):
    g = random_gaussians(700, degree, seed=4)
    path = write_scene(tmp_path / "out.compressed.ply", g)
    back = _from_gsply(gsply.plyread(path))
    _assert_close(back, g, **_cply_tol(g))


def test_splat_by_published_layout_reads(tmp_path):
    g = random_gaussians(64, 0, seed=5)
    path = tmp_path / "scene.splat"
    write_splat_by_hand(path, g)
    scene = read_scene(path)
    assert scene.format == SPLAT
    _assert_close(scene.gaussians, g, pos=0, color=0.5 / 255 + 1e-6, alpha=0.5 / 255 + 1e-6, scale=1e-6, rot=2e-4,
                  sh=None)


def test_splat_we_write_matches_the_published_layout(tmp_path):
    g = random_gaussians(64, 2, seed=6)
    ours, theirs = tmp_path / "a.splat", tmp_path / "b.splat"
    write_scene(ours, g)
    write_splat_by_hand(theirs, g)
    a, b = (np.frombuffer(p.read_bytes(), np.uint8).reshape(-1, 32) for p in (ours, theirs))
    np.testing.assert_allclose(a[:, :24].copy().view("<f4"), b[:, :24].copy().view("<f4"), rtol=1e-6)
    assert np.abs(a[:, 24:].astype(int) - b[:, 24:].astype(int)).max() <= 1   # one 8-bit step (rounding)


@pytest.mark.parametrize("as_zip", [False, True])
@pytest.mark.parametrize("degree", [0, 2])
def test_sog_by_published_layout_reads_and_agrees_with_gsply(tmp_path, monkeypatch, as_zip, degree):
    import gsply.sog_reader as sog_reader

    from engine.formats.sog import pillow_webp
    g = random_gaussians(300, degree, seed=7)
    path = write_sog(tmp_path / ("scene.sog" if as_zip else "scene_sog"), g, as_zip)
    scene = read_scene(path)
    assert scene.format == SOG
    span = np.log1p(np.abs(g.means)).max()
    _assert_close(scene.gaussians, g, pos=np.expm1(span) * 2 * span / 65535 + 1e-5, color=0.05, alpha=0.5 / 255 + 1e-6,
                  scale=0.05, rot=2e-3, sh=0.02 if degree else None)
    # gsply's own SOG decoder on the same files (its WebP step through Pillow: imagecodecs is not installed)
    monkeypatch.setattr(sog_reader, "_load_webp_image",
                        lambda data: (lambda a: (a.reshape(-1), a.shape[1], a.shape[0]))(pillow_webp(data)))
    theirs = _from_gsply(sog_reader.sogread(path))
    _assert_close(scene.gaussians, theirs, pos=1e-4, color=1e-5, alpha=1e-5, scale=1e-6, rot=1e-5,
                  sh=1e-6 if degree else None)


def test_ply_goes_through_the_ply_reader(tmp_path):
    g = random_gaussians(10, 1, seed=8)
    path = write_scene(tmp_path / "x.ply", g)
    scene = read_scene(path)
    assert scene.format == PLY
    np.testing.assert_array_equal(scene.gaussians.means, g.means)


@pytest.mark.parametrize("kind", ["spz", "compressed.ply", "splat", "sog_folder"])
def test_engine_loads_every_format_the_addon_imports(tmp_path, monkeypatch, kind):
    from engine import scene_cache

    monkeypatch.setenv(scene_cache.CACHE_ENV, str(tmp_path / "cache"))
    g = random_gaussians(300, 0 if kind == "splat" else 1, seed=9)
    if kind == "sog_folder":
        path = write_sog(tmp_path / "sog", g, as_zip=False)
    elif kind == "splat":
        path = tmp_path / "a.splat"
        write_splat_by_hand(path, g)
    else:
        path = write_scene(tmp_path / f"a.{kind}", g)
    scene_cache.clear_loaded()
    scene = scene_cache.load_scene(path)
    np.testing.assert_array_equal(scene.gaussians.means, read_scene(path).gaussians.means)
    assert len(scene.hash) == 64 and scene_cache.load_scene(path) is scene


def test_spz_version_2_by_published_layout_reads(tmp_path):
    from splat_format_fixtures import spz_v2_bytes

    g = random_gaussians(300, 1, seed=10)
    path = tmp_path / "v2.spz"
    path.write_bytes(spz_v2_bytes(g))
    scene = read_scene(path)
    assert scene.format == SPZ
    _assert_close(scene.gaussians, g, pos=1 / 4096, color=SPZ_TOL["color"], alpha=SPZ_TOL["alpha"],
                  scale=SPZ_TOL["scale"], rot=3e-3, sh=0.5 / 128 + 1e-6)   # v2: 8-bit x y z, w rebuilt
