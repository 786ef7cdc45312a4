"""SAGA (Segment Any 3D GAussians): a scale-gated affinity feature per Gaussian, trained contrastively from
multi-granularity 2D masks through feature rendering, then queried by a click or by text in milliseconds.

Training starts in closed form (initialisation): the feature dimensions are BANDS scale bands; per band every
pixel's identity is its smallest mask of at least the band's scale (masks); masks of different views are
associated into 3D segments by the overlap of their footprints on the Gaussians (random sketches rendered once
per view); each Gaussian takes its segment per band by direct lifting (lifting.assign_labels on per-view weight
shares from engine.render.contributions) and its feature is the segments' orthonormal codes. The gate is set
in closed form to keep the band of the granularity (features). Then SAGA's contrastive loss fine-tunes the
features through feature rendering (training; gsplat on CUDA, on the CPU the torch rasterizer's compositing
weights as sparse matrices: rendering). Scales are handled as quantiles of all masks' 3D scales, so granularity
0..1 is the gate's input itself. Queries: queries.
"""

from .features import (BANDS, CLICK_THRESHOLD, FEATURE_DIM, OFF_GATE, AffinityFeatures, SagaError, ScaleGate,
                       features_path, features_ready, load_features)
from .masks import sam_view_masks
from .queries import click_scores, mask_scores, render_feature_map, text_scores
from .training import handle_segment_train, train_features

__all__ = ["BANDS", "CLICK_THRESHOLD", "FEATURE_DIM", "OFF_GATE", "AffinityFeatures", "SagaError", "ScaleGate",
           "features_path", "features_ready", "load_features", "sam_view_masks", "click_scores", "mask_scores",
           "render_feature_map", "text_scores", "handle_segment_train", "train_features"]
