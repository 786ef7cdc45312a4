"""The extension's build checks (no Blender needed): every bundled wheel loads on each supported Blender's
Python, `platforms` follows the wheels' tags, the manifest asks for network with a reason, the LICENSE ships,
and the engine environment's plan installs gsplat exactly where CUDA is."""

from __future__ import annotations

import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import build_addon

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import engine_env  # noqa: E402


@pytest.mark.parametrize("wheel, on311, on313", [
    ("plyfile-1.0.3-py3-none-any.whl", True, True),
    ("animate_gaussians_engine-0.1.0-py3-none-any.whl", True, True),
    ("numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True, False),
    ("numpy-2.2.0-cp313-cp313-win_amd64.whl", False, True),
    ("cryptography-44.0.0-cp39-abi3-manylinux_2_28_x86_64.whl", True, True),
    ("x-1.0-cp314-abi3-manylinux_2_28_x86_64.whl", False, False),
    ("x-1.0-py2-none-any.whl", False, False),
])
def test_wheel_tags_against_the_blender_pythons(wheel, on311, on313):
    assert build_addon.wheel_loads_on(wheel, (3, 11)) is on311
    assert build_addon.wheel_loads_on(wheel, (3, 13)) is on313


def test_a_wheel_for_one_python_is_refused():
    build_addon.check_wheels(["plyfile-1.0.3-py3-none-any.whl"])
    with pytest.raises(SystemExit, match=r"does not load on Blender 5\.1 \(Python 3\.13\)"):
        build_addon.check_wheels(["numpy-1.26.4-cp311-cp311-manylinux_2_28_x86_64.whl"])


def test_platforms_follow_the_wheels():
    assert build_addon.blender_platforms(["a-1-py3-none-any.whl", "b-1-py3-none-any.whl"]) is None
    assert build_addon.blender_platforms(["a-1-py3-none-any.whl", "b-1-cp39-abi3-manylinux_2_28_x86_64.whl"]) == [
        "linux-x64"]
    assert build_addon.blender_platforms(["b-1-cp39-abi3-macosx_11_0_universal2.whl"]) == ["macos-arm64",
                                                                                          "macos-x64"]
    # two platform wheels: the extension runs only where both do
    assert build_addon.blender_platforms(["b-1-cp39-abi3-macosx_11_0_universal2.whl",
                                          "c-1-cp39-abi3-macosx_11_0_arm64.whl"]) == ["macos-arm64"]


ISAL = ["isal-1.9.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl",
        "isal-1.9.1-cp313-cp313-win_amd64.whl"]


def test_accelerators_narrow_no_platform_but_need_every_python():
    # Where isal has no wheel, .spz inflates with zlib: the extension still runs there.
    assert build_addon.blender_platforms(["plyfile-1.0.3-py3-none-any.whl", *ISAL]) is None
    assert build_addon.blender_platforms([*ISAL, "c-1-cp39-abi3-macosx_11_0_arm64.whl"]) == ["macos-arm64"]
    build_addon.check_wheels(ISAL)   # one wheel for each supported Python, of any platform
    # Blender reads the Pythons an extension supports off its wheels: a missing one would refuse that Blender.
    with pytest.raises(SystemExit, match=r"does not load on Blender 5\.1 \(Python 3\.13\)"):
        build_addon.check_wheels(ISAL[:1])
    # A required platform wheel's own platforms add up over its Pythons.
    assert build_addon.blender_platforms(["n-1-cp311-cp311-win_amd64.whl", "n-1-cp313-cp313-win_amd64.whl",
                                          "n-1-cp313-cp313-macosx_11_0_arm64.whl"]) == ["macos-arm64",
                                                                                       "windows-x64"]


def test_bundled_wheels_are_plyfile_and_every_pinned_accelerator(tmp_path):
    for name in ["plyfile-1.0.3-py3-none-any.whl", "plyfile-1.0.2-py3-none-any.whl", *ISAL,
                 "isal-1.8.0-cp311-cp311-win_amd64.whl", "numpy-1.26.4-cp311-cp311-win_amd64.whl"]:
        (tmp_path / name).write_bytes(b"")
    assert sorted(w.name for w in build_addon.bundled_wheels(tmp_path)) == sorted(
        ["plyfile-1.0.3-py3-none-any.whl", *ISAL])
    (tmp_path / "plyfile-1.0.3-py3-none-any.whl").unlink()
    with pytest.raises(SystemExit, match="--download-wheels"):
        build_addon.bundled_wheels(tmp_path)


def test_manifest_platforms_and_permissions():
    pure = tomllib.loads(build_addon.manifest_with_wheels(["plyfile-1.0.3-py3-none-any.whl"]))
    assert "platforms" not in pure and pure["wheels"] == ["./wheels/plyfile-1.0.3-py3-none-any.whl"]
    assert pure["license"] == ["SPDX:GPL-3.0-or-later"]
    permissions = pure["permissions"]
    assert set(permissions) == {"files", "network"}
    for reason in permissions.values():     # Blender's rules: at most 64 characters, no final punctuation
        assert 0 < len(reason) <= 64 and reason[-1].isalnum()
    specific = tomllib.loads(build_addon.manifest_with_wheels(["b-1-cp39-abi3-win_amd64.whl"]))
    assert specific["platforms"] == ["windows-x64"]


def test_license_is_the_gpl3_text_and_ships_in_the_zip(tmp_path):
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE") and "Version 3, 29 June 2007" in text
    assert "END OF TERMS AND CONDITIONS" in text
    wheels = sorted((ROOT / "build" / "wheelhouse").glob("plyfile-1.0.3-*.whl"))
    if not wheels:
        pytest.skip("no plyfile wheel in build/wheelhouse: `make setup` downloads the bundled wheels")
    zip_path = build_addon.build_extension(tmp_path, wheels[0].parent)
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.read("LICENSE").decode() == text


@pytest.mark.parametrize("machine, torch_index, gsplat, note", [
    (engine_env.Machine("linux", "NVIDIA H200", "/usr/local/cuda/bin/nvcc"), None, "requirements-cuda.txt", None),
    (engine_env.Machine("linux", "NVIDIA L4", None), None, "requirements-cuda.txt", "nvcc"),
    (engine_env.Machine("linux", None, None), "/cpu", None, "no CUDA GPU"),
    (engine_env.Machine("win32", "NVIDIA RTX 4090", "nvcc.exe"), "/cu126", "requirements-cuda.txt", None),
    (engine_env.Machine("darwin", None, None), None, None, "no CUDA GPU"),
])
def test_engine_env_plan(machine, torch_index, gsplat, note):
    plan = engine_env.plan(machine)
    torch_step = plan.steps[0]
    assert torch_step[:3] == ["install", "torch", "torchvision"]
    index = torch_step[torch_step.index("--index-url") + 1] if "--index-url" in torch_step else None
    assert (index is None) == (torch_index is None) and (index or "").endswith(torch_index or "")
    flat = [" ".join(step) for step in plan.steps]
    assert any(s.endswith("requirements.txt") and "-r" in s for s in flat)
    assert any(s.endswith("requirements-cuda.txt") for s in flat) == (gsplat is not None)
    if note is None:
        assert plan.notes == []
    else:
        assert any(note in n for n in plan.notes)


def test_engine_env_plan_takes_a_prebuilt_gsplat_wheel():
    plan = engine_env.plan(engine_env.Machine("linux", "NVIDIA L4", None), gsplat_wheel="/w/gsplat-1.5.3.whl")
    assert plan.steps[-1] == ["install", "/w/gsplat-1.5.3.whl"] and plan.notes == []
    assert "gsplat" in (ROOT / "requirements-cuda.txt").read_text()


def test_engine_env_dry_run_prints_the_steps(capsys, tmp_path):
    python, plan = engine_env.create(tmp_path / "env", dry_run=True)
    out = capsys.readouterr().out
    assert out.count("pip install") == len(plan.steps) and not (tmp_path / "env").exists()
