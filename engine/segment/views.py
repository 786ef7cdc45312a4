"""Views of a scene for segmentation: the capture's own images and cameras, or views rendered around it.

Every view is in the scene's file frame (the .ply's own coordinates) and follows engine/cameras.py
(OpenCV world-to-camera `viewmat`, `K` in pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class View:
    """One camera on the scene: where it is, and its picture when the capture has one (else None: render it)."""

    name: str
    viewmat: np.ndarray              # (4, 4) file frame → OpenCV camera
    K: np.ndarray                    # (3, 3) pixels
    width: int
    height: int
    image: np.ndarray | None = None  # (H, W, 3) uint8, the captured photo
