"""The built extension zip installs and enables in Blender, and its import operator then works.

Runs Blender (the bpy module) in a subprocess with its own user folders and without the repository on
sys.path, so the add-on and the engine modules come only from the installed zip and its bundled wheels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = ROOT / "build" / "wheelhouse"

pytest.importorskip("bpy")
pytestmark = pytest.mark.blender

INSTALL_SCRIPT = r"""
import json, sys
import bpy
zip_path, repo_dir, ply_path, out_path = sys.argv[-4:]
repos = bpy.context.preferences.extensions.repos
repo = repos.new(name="agtest", module="agtest", custom_directory=repo_dir, source='USER')
result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="agtest", enable_on_install=True)
module = "bl_ext.agtest.animate_gaussians"
enabled = module in bpy.context.preferences.addons
import engine, plyfile
from engine.formats import inflate
before = set(bpy.data.objects.keys())
imported = bpy.ops.gaussians.import_ply(filepath=ply_path)
new = [bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - before]
info = {
    "install": sorted(result), "enabled": enabled, "import": sorted(imported),
    "engine_from": engine.__file__, "plyfile_from": plyfile.__file__, "inflater": inflate.BACKEND,
    "objects": [{"name": o.name, "vertices": len(o.data.vertices),
                 "attributes": sorted(a.name for a in o.data.attributes)} for o in new],
}
with open(out_path, "w") as fh:
    json.dump(info, fh)
# Disable before exit, as Blender does when it quits (bpy 4.2 crashes at exit with operators still registered).
bpy.ops.preferences.addon_disable(module=module)
"""


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    if not sorted(WHEELHOUSE.glob("plyfile-1.0.3-*.whl")) or not sorted(WHEELHOUSE.glob("isal-*.whl")):
        pytest.fail(f"no plyfile or isal wheels in {WHEELHOUSE}: run `make setup` (it downloads them for offline "
                    "builds)")
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, str(ROOT / "build_addon.py"), "--dist", str(dist),
                           "--wheel-dir", str(WHEELHOUSE)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


def test_zip_layout(extension_zip: Path) -> None:
    assert extension_zip.name == "animate_gaussians-0.1.0.zip"
    with zipfile.ZipFile(extension_zip) as zf:
        names = set(zf.namelist())
        manifest = zf.read("blender_manifest.toml").decode()
        engine_wheel = next(n for n in names if n.startswith("wheels/animate_gaussians_engine-"))
        with zf.open(engine_wheel) as fh, zipfile.ZipFile(fh) as wheel:
            wheel_names = set(wheel.namelist())
    assert "__init__.py" in names and "batch.py" in names
    for package in ("io", "segment", "animate", "query4d", "render", "engine_link", "ui", "cli"):  # the stages
        assert f"{package}/__init__.py" in names, package
    assert not any("__pycache__" in n for n in names)
    assert 'id = "animate_gaussians"' in manifest
    assert "\nnetwork = " in manifest and "LICENSE" in names
    assert '"./wheels/plyfile-1.0.3-py3-none-any.whl"' in manifest
    # ISA-L's inflate for .spz: a wheel per platform and supported Python, none of which narrows `platforms`.
    isal = {n for n in names if n.startswith("wheels/isal-")}
    for python in ("cp311", "cp313"):
        for platform in ("manylinux", "macosx_11_0_arm64", "x86_64.whl", "win_amd64", "aarch64"):
            assert any(python in n and platform in n for n in isal), (python, platform)
    assert all(f'"./{n}"' in manifest for n in isal) and "\nplatforms" not in manifest
    assert f'"./{engine_wheel}"' in manifest
    for module in ("engine/__init__.py", "engine/ply.py", "engine/protocol.py", "cuda_ext/__init__.py",
                   "engine/motion/handler.py", "engine/segment/handler.py", "engine/query4d/handler.py"):
        assert module in wheel_names
    # The presets and model profiles the engine loads when installed from the wheel (engine/data_files.py).
    presets = {n for n in wheel_names if n.startswith("engine/presets/motion/") and n.endswith(".json")}
    assert len(presets) >= 12 and "engine/presets/motion/bounce.json" in wheel_names
    assert any(n.startswith("engine/presets/models/") and n.endswith(".json") for n in wheel_names)


def test_installs_enables_and_imports(extension_zip: Path, tmp_path: Path, primitives_ply: Path,
                                     primitives_scene) -> None:
    script = tmp_path / "install.py"
    script.write_text(INSTALL_SCRIPT)
    out = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["BLENDER_USER_RESOURCES"] = str(tmp_path / "user")   # keep the real user's preferences untouched
    proc = subprocess.run([sys.executable, str(script), str(extension_zip), str(tmp_path / "repo"),
                           str(primitives_ply), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    info = json.loads(out.read_text())
    assert info["install"] == ["FINISHED"] and info["enabled"], info
    assert info["import"] == ["FINISHED"], info
    # The engine modules came from the extension's bundled wheel, not from this checkout.
    assert info["engine_from"].startswith(str(tmp_path)), info["engine_from"]
    assert info["inflater"] == "isal", info   # this platform's isal wheel was installed and is used
    assert len(info["objects"]) == 1
    obj = info["objects"][0]
    assert obj["name"] == "primitives" and obj["vertices"] == primitives_scene.gaussians.count
    for attribute in ("f_dc", "opacity", "scale", "rotation", "segment", "sh_1", "sh_15"):
        assert attribute in obj["attributes"]


def test_blenders_own_validator_accepts_the_zip(extension_zip: Path) -> None:
    """The manifest and the zip pass this Blender's `extension validate` (the rules of its extension platform)."""
    import bpy

    cli = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    assert cli.is_file(), cli
    proc = subprocess.run([sys.executable, str(cli), "validate", str(extension_zip)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "Success" in proc.stdout, proc.stdout + proc.stderr
