"""Motion (Animate3DGS stages B and C): a prompt or a video becomes a 3D trajectory of a segment's Gaussians."""
