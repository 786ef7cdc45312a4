"""Build the Blender extension zip (and optionally the engine's Python environment).

    python build_addon.py                      # dist/animate_gaussians-<version>.zip
    python build_addon.py --wheel-dir DIR      # take plyfile's wheel from DIR instead of PyPI
    python build_addon.py --engine-env DIR     # also create the engine environment (tools/engine_env.py):
                                               # torch for this machine, requirements.txt, gsplat with CUDA

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
# The Python of each supported Blender: every bundled wheel must load on all of them.
BLENDER_PYTHONS = {"4.2": (3, 11), "4.5": (3, 11), "5.0": (3, 11), "5.1": (3, 13), "5.2": (3, 13), "5.3": (3, 13)}
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


def wheel_tags(wheel_name: str) -> tuple[set[str], set[str], set[str]]:
    """(python tags, abi tags, platform tags) of a wheel file name (PEP 427; compressed tag sets split)."""
    parts = wheel_name[:-len(".whl")].split("-")
    if len(parts) < 5:
        raise ValueError(f"not a wheel file name: {wheel_name}")
    python, abi, plat = parts[-3:]
    return set(python.split(".")), set(abi.split(".")), set(plat.split("."))


def wheel_loads_on(wheel_name: str, version: tuple[int, int]) -> bool:
    """Whether CPython `version` can install this wheel (its python and ABI tags; platforms are separate)."""
    pythons, abis, _ = wheel_tags(wheel_name)
    major, minor = version
    cp = f"cp{major}{minor}"
    if pythons & {f"py{major}", f"py{major}{minor}", cp} and abis & {"none", cp}:
        return True
    # cp3X-abi3: the stable ABI, loads on every CPython 3.Y with Y >= X
    stable = [p for p in pythons if p.startswith(f"cp{major}") and p[len(f"cp{major}"):].isdigit()]
    return "abi3" in abis and any(int(p[len(f"cp{major}"):]) <= minor for p in stable)


# Wheel platform tags → Blender's platform names (as Blender's own `extension build --split-platforms` maps them).
_PLATFORMS = (("manylinux", "x86_64", "linux-x64"), ("manylinux", "aarch64", "linux-arm64"),
              ("linux", "x86_64", "linux-x64"), ("linux", "aarch64", "linux-arm64"),
              ("win", "amd64", "windows-x64"), ("win", "arm64", "windows-arm64"),
              ("macosx", "arm64", "macos-arm64"), ("macosx", "x86_64", "macos-x64"),
              ("macosx", "universal2", "macos-arm64"), ("macosx", "universal2", "macos-x64"))


def blender_platforms(wheels: list[str]) -> list[str] | None:
    """The platforms the extension runs on: None when every wheel is pure (`any`: all platforms), else the
    platforms every platform-specific wheel covers."""
    covered: set[str] | None = None
    for wheel in wheels:
        plats = wheel_tags(wheel)[2]
        if plats == {"any"}:
            continue
        here = {name for plat in plats for prefix, machine, name in _PLATFORMS
                if plat.startswith(prefix) and plat.endswith(machine)}
        covered = here if covered is None else covered & here
    return None if covered is None else sorted(covered)


def check_wheels(wheels: list[str]) -> None:
    """Refuse to build an extension whose wheels would not load on a supported Blender."""
    for wheel in wheels:
        for blender, python in BLENDER_PYTHONS.items():
            if not wheel_loads_on(wheel, python):
                raise SystemExit(f"{wheel} does not load on Blender {blender} (Python {python[0]}.{python[1]}): "
                                 "bundle a pure-Python wheel or one per Python version")


def manifest_with_wheels(wheels: list[str]) -> str:
    text = (ADDON_DIR / "blender_manifest.toml").read_text()
    listed = "wheels = [\n" + "".join(f'  "./wheels/{w}",\n' for w in wheels) + "]\n"
    platforms = blender_platforms(wheels)
    if platforms is not None:
        listed += "platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]\n"
    text = re.sub(r"^(wheels|platforms)\s*=\s*\[[^\]]*\]\n?", "", text, flags=re.M)
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
    check_wheels([w.name for w in wheels])
    dist.mkdir(parents=True, exist_ok=True)
    zip_path = dist / f"{EXTENSION_ID}-{version}.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in _source_files(ADDON_DIR):
            arc = path.relative_to(ADDON_DIR).as_posix()
            if arc == "blender_manifest.toml":
                continue
            zf.write(path, arc)
        zf.writestr("blender_manifest.toml", manifest_with_wheels([w.name for w in wheels]))
        zf.write(ROOT / "LICENSE", "LICENSE")
        for wheel in wheels:
            zf.write(wheel, f"wheels/{wheel.name}")
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder (default dist/)")
    parser.add_argument("--wheel-dir", type=Path, help="folder holding plyfile-1.0.3 wheel (offline build)")
    parser.add_argument("--engine-env", type=Path, help="also create the engine environment here")
    parser.add_argument("--gsplat-wheel", help="with --engine-env on CUDA: a prebuilt gsplat wheel (file or URL) "
                        "instead of gsplat from PyPI, which compiles its CUDA code on first use (needs nvcc)")
    parser.add_argument("--dry-run", action="store_true", help="with --engine-env: print the pip steps only")
    args = parser.parse_args(argv)
    zip_path = build_extension(args.dist, args.wheel_dir)
    print(zip_path)
    if args.engine_env:
        sys.path.insert(0, str(ROOT / "tools"))
        import engine_env

        wheel = next((ROOT / "build" / "wheels").glob("animate_gaussians_engine-*.whl"))
        python, _ = engine_env.create(args.engine_env, wheel, args.gsplat_wheel, args.dry_run)
        if not args.dry_run:
            from engine.backend_probe import summary
            backend = engine_env.backend_of(python)
            print(f"engine rasterizer: {summary(backend)}")
            if backend.get("warning"):
                print(f"engine env: warning: {backend['warning']['message']}", file=sys.stderr)
        print(f"engine interpreter: {python} (set it in the add-on preferences, or export "
              f"ANIMATE_GAUSSIANS_PYTHON={python})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
