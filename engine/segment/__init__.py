"""Segmentation (Animate3DGS stage A, after SAGA): views of a scene, 2D masks lifted onto Gaussians, queries."""
