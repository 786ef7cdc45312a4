"""Build the Blender extension zip (and optionally the engine's Python environment).

    python build_addon.py                      # dist/animate_gaussians-<version>.zip
    python build_addon.py --wheel-dir DIR      # take plyfile's wheel from DIR instead of PyPI
    python build_addon.py --engine-env DIR     # also create the engine environment from requirements.txt

The zip holds the add-on package (blender_addon/), its manifest, and two pure-Python wheels Blender installs
beside it: plyfile, and our own `animate_gaussians_engine` wheel (packages `engine` and `cuda_ext`), so the
add-on imports the shared torch-free modules (PLY reader, protocol, cameras) and can start the engine
process from the same code.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON_DIR = ROOT / "blender_addon"
EXTENSION_ID = "animate_gaussians"
PLYFILE_REQUIREMENT = "plyfile==1.0.3"  # 1.1+ needs numpy>=2; Blender 4.2–5.0 ship numpy 1.x
ENGINE_PACKAGES = ("engine", "cuda_ext")
SKIP_PARTS = {"__pycache__", ".pytest_cache"}


def addon_version() -> str:
    text = (ADDON_DIR / "blender_manifest.toml").read_text()
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    if not match:
        raise SystemExit("blender_addon/blender_manifest.toml has no version")
    return match.group(1)


def _source_files(package_dir: Path):
    for path in sorted(package_dir.rglob("*")):
        if path.is_file() and not SKIP_PARTS.intersection(path.parts) and path.suffix not in (".pyc", ".so"):
            yield path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest},{len(data)}"


def build_engine_wheel(out_dir: Path, version: str) -> Path:
    """A pure-Python wheel of the engine packages, written directly (no build backend needed offline)."""
    name = "animate_gaussians_engine"
    dist_info = f"{name}-{version}.dist-info"
    wheel_path = out_dir / f"{name}-{version}-py3-none-any.whl"
    files: list[tuple[str, bytes]] = []
    for package in ENGINE_PACKAGES:
        for path in _source_files(ROOT / package):
            files.append((path.relative_to(ROOT).as_posix(), path.read_bytes()))
    # The data files travel inside the engine package (engine/data_files.py finds them there when installed).
    for path in _source_files(ROOT / "presets"):
        files.append(("engine/" + path.relative_to(ROOT).as_posix(), path.read_bytes()))
    metadata = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                "Summary: Animate Gaussians engine (torch process) and the modules the Blender add-on shares\n"
                "Requires-Python: >=3.10\n").encode()
    wheel_meta = b"Wheel-Version: 1.0\nGenerator: build_addon.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files += [(f"{dist_info}/METADATA", metadata), (f"{dist_info}/WHEEL", wheel_meta),
              (f"{dist_info}/top_level.txt", "\n".join(ENGINE_PACKAGES).encode() + b"\n")]
    record = "".join(f"{arc},{_record_hash(data)}\n" for arc, data in files) + f"{dist_info}/RECORD,,\n"
    files.append((f"{dist_info}/RECORD", record.encode()))
    with zipfile.ZipFile(wheel_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, data in files:
            zf.writestr(arc, data)
    return wheel_path


def fetch_plyfile_wheel(out_dir: Path, wheel_dir: Path | None) -> Path:
    if wheel_dir is not None:
        found = sorted(wheel_dir.glob("plyfile-1.0.3-*.whl"))
        if not found:
            raise SystemExit(f"no plyfile 1.0.3 wheel in {wheel_dir}")
        return Path(shutil.copy2(found[0], out_dir))
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--dest", str(out_dir), PLYFILE_REQUIREMENT], check=True)
    found = sorted(out_dir.glob("plyfile-*.whl"))
    if not found:
        raise SystemExit("pip did not produce a plyfile wheel")
    return found[0]


def manifest_with_wheels(wheels: list[str]) -> str:
    text = (ADDON_DIR / "blender_manifest.toml").read_text()
    listed = "wheels = [\n" + "".join(f'  "./wheels/{w}",\n' for w in wheels) + "]\n"
    text = re.sub(r"^wheels\s*=\s*\[[^\]]*\]\n?", "", text, flags=re.M)
    # Top-level keys must come before the first [table].
    table = re.search(r"^\[", text, flags=re.M)
    at = table.start() if table else len(text)
    return text[:at] + listed + "\n" + text[at:]


def build_extension(dist: Path, wheel_dir: Path | None = None) -> Path:
    version = addon_version()
    work = ROOT / "build" / "wheels"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    wheels = [fetch_plyfile_wheel(work, wheel_dir), build_engine_wheel(work, version)]
    dist.mkdir(parents=True, exist_ok=True)
    zip_path = dist / f"{EXTENSION_ID}-{version}.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in _source_files(ADDON_DIR):
            arc = path.relative_to(ADDON_DIR).as_posix()
            if arc == "blender_manifest.toml":
                continue
            zf.write(path, arc)
        zf.writestr("blender_manifest.toml", manifest_with_wheels([w.name for w in wheels]))
        for wheel in wheels:
            zf.write(wheel, f"wheels/{wheel.name}")
    return zip_path


def create_engine_env(env_dir: Path, wheel: Path | None = None) -> Path:
    """A venv with requirements.txt and the engine wheel: the interpreter the add-on starts the engine with."""
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    python = env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(ROOT / "requirements.txt")],
                   check=True)
    if wheel is not None:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
                        str(wheel)], check=True)
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder (default dist/)")
    parser.add_argument("--wheel-dir", type=Path, help="folder holding plyfile-1.0.3 wheel (offline build)")
    parser.add_argument("--engine-env", type=Path, help="also create the engine environment here")
    args = parser.parse_args(argv)
    zip_path = build_extension(args.dist, args.wheel_dir)
    print(zip_path)
    if args.engine_env:
        wheel = next((ROOT / "build" / "wheels").glob("animate_gaussians_engine-*.whl"))
        python = create_engine_env(args.engine_env, wheel)
        print(f"engine interpreter: {python} (set it in the add-on preferences, or export "
              f"ANIMATE_GAUSSIANS_PYTHON={python})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
