"""Build the Blender extension zip (and optionally the engine's Python environment).

    python build_addon.py                      # dist/animate_gaussians-<version>.zip
    python build_addon.py --wheel-dir DIR      # take the bundled wheels from DIR instead of PyPI
    python build_addon.py --download-wheels DIR  # put them in DIR (for offline builds), build nothing
    python build_addon.py --engine-env DIR     # also create the engine environment (tools/engine_env.py):
                                               # torch for this machine, requirements.txt, gsplat with CUDA

The zip holds the add-on package (blender_addon/), its manifest, and the wheels Blender installs beside it:
plyfile, our own `animate_gaussians_engine` wheel (packages `engine` and `cuda_ext`), so the add-on imports the
shared torch-free modules (PLY reader, protocol, cameras) and can start the engine process from the same code,
and ISA-L's `isal` (its gzip inflate is 2.3x zlib's: .spz import, see engine/formats/inflate.py), one wheel per
platform and supported Python. Blender installs the one that fits; where none does (e.g. Windows on ARM) the
add-on runs the same on the standard library's zlib, so `isal` does not narrow the extension's `platforms`.
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
# Compiled wheels that only make something faster: bundled per platform where they exist, never required.
ACCELERATOR_REQUIREMENTS = {"isal": "isal==1.9.1"}
ACCELERATOR_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_28_aarch64", "macosx_11_0_arm64",
                         "macosx_10_13_x86_64", "win_amd64")
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


def _pip_download(dest: Path, requirement: str, *options: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--dest", str(dest), *options, requirement], check=True)


def download_wheels(dest: Path) -> list[Path]:
    """Every third-party wheel the zip bundles, from PyPI into `dest`: plyfile, and each accelerator for each
    platform and supported Blender Python."""
    dest.mkdir(parents=True, exist_ok=True)
    _pip_download(dest, PLYFILE_REQUIREMENT)
    for requirement in ACCELERATOR_REQUIREMENTS.values():
        for major, minor in sorted(set(BLENDER_PYTHONS.values())):
            for platform in ACCELERATOR_PLATFORMS:
                _pip_download(dest, requirement, "--python-version", f"{major}.{minor}", "--platform", platform)
    return bundled_wheels(dest)


def _pinned(requirement: str) -> str:
    name, version = requirement.split("==")
    return f"{name.replace('-', '_')}-{version}-*.whl"


def bundled_wheels(folder: Path) -> list[Path]:
    """The third-party wheels in `folder` the zip bundles: plyfile's, and every wheel of the pinned accelerators
    (those of other platforms and Pythons too: Blender installs the one that fits)."""
    plyfile = sorted(folder.glob(_pinned(PLYFILE_REQUIREMENT)))
    if not plyfile:
        raise SystemExit(f"no {PLYFILE_REQUIREMENT} wheel in {folder}: `python build_addon.py --download-wheels "
                         f"{folder}` puts the bundled wheels there")
    accelerators = [w for r in ACCELERATOR_REQUIREMENTS.values() for w in sorted(folder.glob(_pinned(r)))]
    return plyfile[:1] + accelerators


def fetch_wheels(out_dir: Path, wheel_dir: Path | None) -> list[Path]:
    """The third-party wheels to bundle, copied into `out_dir` (from `wheel_dir`, else downloaded from PyPI)."""
    if wheel_dir is None:
        return download_wheels(out_dir)
    return [Path(shutil.copy2(w, out_dir)) for w in bundled_wheels(wheel_dir)]


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


def distribution(wheel_name: str) -> str:
    return wheel_name.split("-", 1)[0].lower()


def blender_platforms(wheels: list[str]) -> list[str] | None:
    """The platforms the extension runs on: None when every required wheel is pure (`any`: all platforms), else
    the platforms every platform-specific wheel covers (the wheels of one distribution together). Accelerators
    only speed things up where they have a wheel: they narrow nothing."""
    covers: dict[str, set[str]] = {}
    for wheel in wheels:
        plats = wheel_tags(wheel)[2]
        if plats == {"any"} or distribution(wheel) in ACCELERATOR_REQUIREMENTS:
            continue
        covers.setdefault(distribution(wheel), set()).update(
            name for plat in plats for prefix, machine, name in _PLATFORMS
            if plat.startswith(prefix) and plat.endswith(machine))
    if not covers:
        return None
    return sorted(set.intersection(*covers.values()))


def check_wheels(wheels: list[str]) -> None:
    """Refuse to build an extension whose wheels would not load on a supported Blender: each distribution needs
    a wheel for every supported Python (Blender also reads the Pythons an extension supports off its wheels, so
    an accelerator without one would make the whole extension refuse that Blender)."""
    groups: dict[str, list[str]] = {}
    for wheel in wheels:
        groups.setdefault(distribution(wheel), []).append(wheel)
    for names in groups.values():
        for blender, python in BLENDER_PYTHONS.items():
            if not any(wheel_loads_on(wheel, python) for wheel in names):
                raise SystemExit(f"{', '.join(names)} does not load on Blender {blender} (Python "
                                 f"{python[0]}.{python[1]}): bundle a pure-Python wheel or one per Python version")


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
    wheels = [*fetch_wheels(work, wheel_dir), build_engine_wheel(work, version)]
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
    parser.add_argument("--wheel-dir", type=Path, help="folder holding the bundled wheels (offline build; "
                        "--download-wheels fills it)")
    parser.add_argument("--download-wheels", type=Path, metavar="DIR",
                        help="download the bundled third-party wheels into DIR and stop")
    parser.add_argument("--engine-env", type=Path, help="also create the engine environment here")
    parser.add_argument("--gsplat-wheel", help="with --engine-env on CUDA: a prebuilt gsplat wheel (file or URL) "
                        "instead of gsplat from PyPI, which compiles its CUDA code on first use (needs nvcc)")
    parser.add_argument("--dry-run", action="store_true", help="with --engine-env: print the pip steps only")
    args = parser.parse_args(argv)
    if args.download_wheels:
        for wheel in download_wheels(args.download_wheels):
            print(wheel)
        return 0
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
