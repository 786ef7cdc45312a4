"""The "Gaussians" tab of the 3D Viewport sidebar: the main panel and its sections, and the Advanced settings boxes
(the stage packages hold their operators; segment/ its own section)."""
