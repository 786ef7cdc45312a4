"""A fake "animate" engine handler with a known motion, and an engine client that serves it from a real engine
process, for the Blender-side motion tests (the real handler is engine/motion/handler.py)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import numpy as np
from engine_python import ENGINE_PYTHON

TESTS = Path(__file__).resolve().parent


def rotation_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def known_rigid_motion(frames: int) -> np.ndarray:
    """(F, 4, 4) file-frame motion: a slide along +x with a turn about the file's y axis around the point
    (0, 0, 3) and a lift along −y (up), smooth, T_0 = I."""
    u = np.linspace(0.0, 1.0, frames)
    T = np.tile(np.eye(4), (frames, 1, 1))
    pivot = np.array([0.0, 0.0, 3.0])
    for f, s in enumerate(u):
        R = rotation_y(1.2 * np.sin(0.5 * np.pi * s))
        T[f, :3, :3] = R
        T[f, :3, 3] = pivot - R @ pivot + np.array([1.5 * s * s, -0.4 * np.sin(np.pi * s), 0.0])
    return T


def known_nonrigid_motion(means: np.ndarray, frames: int, k: int = 3
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(handle_rest (K, 3), handle_transforms (F, K, 4, 4), weights (N, K)): handles along x through the
    points, each turning about the file y axis by a different angle; weights from distance, ≤ 2 per point."""
    lo, hi = means.min(axis=0), means.max(axis=0)
    centre = (lo + hi) / 2
    rest = np.tile(centre, (k, 1))
    rest[:, 0] = np.linspace(lo[0], hi[0], k)
    d = np.abs(means[:, None, 0] - rest[None, :, 0])
    w = np.maximum(1.0 - d / (rest[1, 0] - rest[0, 0] + 1e-9), 0.0)
    w /= w.sum(axis=1, keepdims=True)
    u = np.linspace(0.0, 1.0, frames)
    H = np.tile(np.eye(4), (frames, k, 1, 1))
    for j in range(k):
        for f, s in enumerate(u):
            R = rotation_y(0.6 * (j - (k - 1) / 2) * s)
            H[f, j, :3, :3] = R
            H[f, j, :3, 3] = rest[j] - R @ rest[j] + np.array([0.0, -0.3 * s * j, 0.0])
    return rest, H, w.astype(np.float32)


def handle_animate(ctx, params: dict, arrays: dict):
    """The fake: the known rigid (or, for motion "nonrigid", non-rigid) motion of the request's Gaussians."""
    from engine.scene_cache import load_scene

    frames = int(params["frames"])
    if params["prompt"] == "fail":
        from engine.motion.generators.base import GeneratorError
        raise GeneratorError("the fake generator was asked to fail")
    for f in range(frames):
        ctx.progress((f + 1) / frames, f"frame {f + 1} of {frames}")
        if params["prompt"] == "slow":
            import time
            time.sleep(0.05)
    received = {name: list(np.asarray(a).shape) for name, a in arrays.items()}
    info = {"received": received, "params": {k: params.get(k) for k in ("generator", "width", "height", "motion",
                                                                         "handles", "options", "require")}}
    if params["motion"] == "nonrigid":
        means = load_scene(params["ply_path"]).gaussians.means[np.asarray(arrays["indices"])]
        rest, H, w = known_nonrigid_motion(means.astype(np.float64), frames)
        return ({"motion": "nonrigid", "frames": frames, "fps": params["fps"], "generator": "fake", "info": info},
                {"handle_rest": rest, "handle_transforms": H, "weights": w})
    return ({"motion": "rigid", "frames": frames, "fps": params["fps"], "generator": "fake", "info": info},
            {"transforms": known_rigid_motion(frames)})


_LAUNCHER = f"""import sys
sys.path.insert(0, {str(TESTS)!r})
import engine.handlers as handlers
handlers.HANDLERS["animate"] = "motion_fakes:handle_animate"
from engine.server import main
sys.exit(main())
"""


def launcher_python(folder: Path, name: str, launcher_text: str) -> str:
    """An 'interpreter' for EngineClient: a shell script that runs `launcher_text` (which starts the engine)."""
    launcher = folder / f"{name}.py"
    launcher.write_text(launcher_text)
    script = folder / f"{name}_python"
    script.write_text(f"#!/bin/sh\nexec {ENGINE_PYTHON} {launcher}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def fake_engine_python(folder: Path) -> str:
    """An 'interpreter' for EngineClient that runs the real engine with the fake "animate" handler."""
    return launcher_python(folder, "fake_animate_engine", _LAUNCHER)
