"""Splat files in and out of Blender: import and export (.ply, .compressed.ply, .splat, .spz, SOG, PLY sequences,
Dynamic 3D Gaussians), the Gaussian object they become and its Geometry Nodes display. The engine half: engine/formats."""
