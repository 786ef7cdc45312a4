"""An engine process whose `diffusers` generator loads tiny random pipelines of the real classes instead of
downloading a model: everything else (the request, the profile chosen by --model, its steps, the lifting) is
the real code. The profiles are shrunk to 32×32 pixels and 9 frames so a CPU runs them in seconds."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent

_LAUNCHER = f"""import sys
sys.path.insert(0, {str(TESTS.parent)!r})
from engine.motion.generators import diffusers_i2v
from engine.motion.generators.tiny_pipelines import tiny_pipeline

for profile in diffusers_i2v.PROFILES.values():
    profile.update(width=32, height=32, frames=9, call_options={{}})

def load_pipeline(profile, device, progress=None, offload=False):
    return tiny_pipeline(profile["pipeline"])

diffusers_i2v.load_pipeline = load_pipeline
diffusers_i2v.is_available = lambda model_id: model_id in diffusers_i2v.PROFILES   # "weights" of every profile
from engine.server import main
sys.exit(main())
"""


def tiny_diffusers_engine_python(folder: Path) -> str:
    """An 'interpreter' for EngineClient that runs the real engine with tiny diffusers pipelines."""
    from motion_fakes import launcher_python
    return launcher_python(folder, "tiny_diffusers_engine", _LAUNCHER)
