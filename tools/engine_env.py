"""The engine environment `python build_addon.py --engine-env DIR` creates: what to install on this machine.

torch is built for the machine (CUDA where a CUDA GPU is, else the CPU build, which is 10× smaller on Linux),
then requirements.txt, then gsplat where CUDA is (requirements-cuda.txt, or a prebuilt wheel). The plan is a
pure function of the machine's facts, so tests check it for every kind of machine; `create` runs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_INDEX = "https://download.pytorch.org/whl"
TORCH_CUDA_TAG = "cu126"       # the CUDA build of the pinned torch for Windows (Linux PyPI wheels are CUDA builds)


@dataclass
class Machine:
    platform: str                  # sys.platform
    gpu: str | None                # the CUDA GPU's name, None without one
    nvcc: str | None               # the CUDA compiler, for gsplat's first-use build


@dataclass
class Plan:
    steps: list[list[str]]         # pip arguments, in order
    notes: list[str] = field(default_factory=list)   # what the user must know (said, never silent)


def this_machine() -> Machine:
    sys.path.insert(0, str(ROOT))
    from engine.backend_probe import cuda_device_name
    return Machine(sys.platform, cuda_device_name(), shutil.which("nvcc"))


def plan(machine: Machine, gsplat_wheel: str | None = None) -> Plan:
    torch = ["install", "torch", "torchvision", "-c", str(ROOT / "requirements.txt")]
    steps, notes = [], []
    if machine.gpu is None:
        if machine.platform.startswith("linux") or machine.platform == "win32":
            torch += ["--index-url", f"{TORCH_INDEX}/cpu"]
        notes.append("no CUDA GPU found: the engine renders with the torch rasterizer on the CPU (slow); "
                     "gsplat is not installed")
    elif machine.platform == "win32":
        torch += ["--index-url", f"{TORCH_INDEX}/{TORCH_CUDA_TAG}"]
    steps.append(torch)
    steps.append(["install", "-r", str(ROOT / "requirements.txt")])
    if machine.gpu is not None:
        if gsplat_wheel:
            steps.append(["install", gsplat_wheel])
        else:
            steps.append(["install", "-r", str(ROOT / "requirements-cuda.txt")])
            if machine.nvcc is None:
                notes.append(f"{machine.gpu}: gsplat is installed but compiles its CUDA code on first use, "
                             "which needs nvcc (the CUDA toolkit, matching torch's CUDA) on PATH or in CUDA_HOME; "
                             "without it the engine falls back to the torch rasterizer and warns. Install the "
                             "toolkit, or rerun with --gsplat-wheel pointing at a prebuilt gsplat wheel for your "
                             "torch and CUDA (https://docs.gsplat.studio/whl)")
    return Plan(steps, notes)


def env_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def create(env_dir: Path, engine_wheel: Path | None = None, gsplat_wheel: str | None = None,
           dry_run: bool = False) -> tuple[Path, Plan]:
    """Create the venv and run the plan; returns the interpreter and the plan (its notes are printed)."""
    chosen = plan(this_machine(), gsplat_wheel)
    python = env_python(env_dir)
    for note in chosen.notes:
        print(f"engine env: note: {note}", file=sys.stderr)
    if dry_run:
        for step in chosen.steps:
            print("pip " + " ".join(step))
        return python, chosen
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    for step in chosen.steps:
        subprocess.run([str(python), "-m", "pip", *step[:1], "--quiet", *step[1:]], check=True)
    if engine_wheel is not None:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
                        str(engine_wheel)], check=True)
    return python, chosen


def backend_of(python: Path) -> dict:
    """What the engine in that environment will render with (its hello's backend), asked of it."""
    code = ("import json; from engine import backend_probe, server; "
            "print(json.dumps(backend_probe.probe(*server.torch_version_without_import())))")
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
