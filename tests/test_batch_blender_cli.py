"""`blender -b [scene.blend] -P blender_addon/batch.py -- [options]`, emulated with the bpy module the way the
Blender binary runs a script: bpy already imported (and the .blend already open), sys.argv is Blender's own
command line, the file runs as a fresh `__main__` module (`__package__` None, not on sys.path) from another
working directory, and SystemExit ends the process with its code. Runs on every bpy version of `make test`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.ply import read_header, read_structured

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender

ROOT = Path(__file__).resolve().parents[1]
BATCH = ROOT / "blender_addon" / "batch.py"

# `blender -b [file.blend] -P script -- args`, emulated with the bpy module (what Blender does around the script).
EMULATOR = ROOT / "tools" / "blender_emulator.py"


def blender(tmp_path: Path, *args) -> subprocess.CompletedProcess:
    command = [sys.executable, str(EMULATOR), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


def test_script_form_imports_and_exports_bit_exact(tmp_path, primitives_ply, primitives_scene):
    out, report = tmp_path / "out.ply", tmp_path / "report.json"
    done = blender(tmp_path, "-b", "-P", BATCH, "--", "--ply", primitives_ply, "--export-ply", out,
                   "--report", report, "--save", tmp_path / "scene.blend")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Segmentation fault" not in done.stderr
    data = json.loads(report.read_text())
    assert data["ok"] and data["objects"][0]["gaussians"] == primitives_scene.gaussians.count
    assert data["objects"][0]["sh_degree"] == 3
    assert read_header(out).properties == read_header(primitives_ply).properties
    assert read_structured(read_header(out)).tobytes() == read_structured(read_header(primitives_ply)).tobytes()
    assert (tmp_path / "scene.blend").exists()

    # The saved scene, opened by Blender before the script (`blender -b scene.blend -P batch.py -- ...`).
    again, report2 = tmp_path / "again.ply", tmp_path / "report2.json"
    done = blender(tmp_path, "-b", tmp_path / "scene.blend", "-P", BATCH, "--", "--export-ply", again,
                   "--report", report2)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_structured(read_header(again)).tobytes() == read_structured(read_header(primitives_ply)).tobytes()
    assert json.loads(report2.read_text())["ok"]


def test_script_form_errors_exit_non_zero_with_one_line(tmp_path):
    done = blender(tmp_path, "-b", "-P", BATCH, "--", "--ply", tmp_path / "missing.ply")
    assert done.returncode == 2      # refused while checking the command line, before any step
    assert done.stderr.strip().splitlines()[-1] == (f"batch.py: error: --ply: {tmp_path / 'missing.ply'} does not "
                                                    "exist (check the path)")
    done = blender(tmp_path, "-b", "-P", BATCH, "--", "--bogus")
    assert done.returncode == 2 and "unrecognized arguments: --bogus" in done.stderr
