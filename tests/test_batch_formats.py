"""Batch with splat formats: --ply reads any format or a PLY sequence, --export writes by extension or a sequence."""

from __future__ import annotations

import json

import numpy as np
import pytest
from blender_fixtures import addon, bpy, clean_scene  # noqa: F401 (fixtures)
from splat_format_fixtures import random_gaussians

from blender_addon import batch
from engine.formats import read_scene, write_scene
from engine.ply import read_gaussians, write_gaussians

gsply = pytest.importorskip("gsply")


def _run(capsys, *argv):
    status = batch.run([str(a) for a in argv])
    return status, capsys.readouterr().err.strip()


def test_spz_in_compressed_ply_out(clean_scene, capsys, tmp_path):
    g = random_gaussians(400, 1, seed=21)
    src = write_scene(tmp_path / "capture.spz", g)
    out, report = tmp_path / "out.compressed.ply", tmp_path / "r.json"
    status, err = _run(capsys, "--ply", src, "--export", out, "--report", report)
    assert status == 0, err
    data = json.loads(report.read_text())
    assert [s["name"] for s in data["steps"]] == ["import_ply", "export"] and data["files"] == [str(out.resolve())]
    back = gsply.plyread(out)
    # .spz is RUB, .compressed.ply RDF: the export turns the half turn back
    expected = read_scene(src).gaussians.means * np.array([1, -1, -1], np.float32)
    np.testing.assert_allclose(np.asarray(back.means), expected, atol=np.ptp(g.means) / 1023 + 1e-4)


def test_sequence_in_sequence_out(clean_scene, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "seq").mkdir()
    frames = []
    for t in range(3):
        g = random_gaussians(100, 0, seed=22)
        g.means = g.means + np.float32(t)
        write_gaussians(tmp_path / "seq" / f"s_{t}.ply", g)
        frames.append(g)
    status, err = _run(capsys, "--ply", tmp_path / "seq" / "s_#.ply", "--export", str(tmp_path / "out") + "/")
    assert status == 0, err
    written = sorted((tmp_path / "out").glob("*.ply"))
    assert len(written) == 3
    for g, path in zip(frames, written):
        np.testing.assert_allclose(read_gaussians(path).means, g.means, atol=1e-5)


def test_unknown_export_extension_refused_before_anything(clean_scene, capsys, tmp_path):
    src = write_scene(tmp_path / "a.splat", random_gaussians(10, 0))
    status, err = _run(capsys, "--ply", src, "--export", tmp_path / "out.obj")
    assert status != 0 and "end the file name in .ply, .compressed.ply, .splat or .spz" in err
    assert not (tmp_path / "out.obj").exists()
