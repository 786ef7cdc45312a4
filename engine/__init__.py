"""Animate Gaussians engine: the torch process beside Blender, and the torch-free modules both sides share.

Modules the Blender add-on imports (`errors`, `ply`, `protocol`, `cameras`, `synthetic_scene`, `sh_rotation`)
must stay numpy + stdlib only; everything that needs torch is imported lazily by the server.
"""

__version__ = "0.1.0"
