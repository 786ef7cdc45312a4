"""The interpreter the tests start the engine with: $ANIMATE_GAUSSIANS_PYTHON when set, else this one.

The Blender-side tests also run in venvs that hold only bpy (Blender 4.2 LTS, 5.3: `make test-bpy-versions`);
there the Makefile points ANIMATE_GAUSSIANS_PYTHON at .venv's python, which has torch, as a user points the
add-on at the engine environment.
"""

from __future__ import annotations

import os
import sys

ENGINE_PYTHON = os.environ.get("ANIMATE_GAUSSIANS_PYTHON") or sys.executable
