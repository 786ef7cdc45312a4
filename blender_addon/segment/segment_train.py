"""Train the scene's SAGA features (the engine's "segment_train" request) from Blender or the batch, so the
Segment panel's "SAGA Features" method and --train-features can be used. Training renders views of the whole
scene, masks them with SAM and fits a feature per Gaussian (minutes on a GPU); the engine caches the result by
the scene's content, so it is done once per .ply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import bpy

from engine.errors import AnimateGaussiansError

from .. import notices
from ..engine_link import engine_client
from ..engine_link.modal_engine import EngineRequestModal
from ..io import gaussian_object
from ..io.gaussian_layout import SOURCE_KEY
from ..ui.advanced_settings import advanced
from .segment_query import views_for_capture


def train_request(obj: bpy.types.Object, device: str = "auto", views: dict | None = None,
                  sam_variant: str | None = None) -> dict:
    """The "segment_train" params for `obj`'s source scene (features belong to the whole .ply)."""
    if not gaussian_object.is_gaussian_object(obj):
        raise gaussian_object.NotGaussianObjectError(f"{obj.name if obj else 'nothing'} is not a Gaussian object")
    source = obj.get(SOURCE_KEY)
    if not source or not Path(source).is_file():
        raise AnimateGaussiansError(f"the source .ply of {obj.name!r} is missing: {source}",
                                    "re-import the .ply or put the file back")
    params: dict = {"ply_path": str(source), "device": device}
    if views:
        params["views"] = dict(views)
    if sam_variant:
        params["sam_variant"] = sam_variant
    return params


def train_blocking(obj: bpy.types.Object, device: str = "auto", views: dict | None = None,
                   sam_variant: str | None = None, report: Callable[[str], None] | None = None,
                   client=None) -> dict:
    """Train and wait (batch); returns the engine's answer {count, iterations, seconds, cached}."""
    params = train_request(obj, device, views, sam_variant)
    result, _ = engine_client.request_blocking("segment_train", params, report=report, client=client,
                                               label="train features")
    return result


class GAUSSIANS_OT_segment_train(EngineRequestModal, bpy.types.Operator):
    """Train segmentation features for the active object's scene (SAM masks of many views; minutes on a GPU).
    Then the SAGA Features method selects with them"""

    bl_idname = "gaussians.segment_train"
    bl_label = "Train Features"
    bl_options = {"REGISTER"}

    _label = "Training features"

    @classmethod
    def poll(cls, context):
        return gaussian_object.is_gaussian_object(context.active_object)

    def _request(self, context):
        adv = advanced(context.scene)
        params = train_request(context.active_object, engine_client.preferred_device(),
                               views_for_capture(context.scene.gaussians_segment.capture),
                               None if adv.sam_model == "auto" else adv.sam_model)
        return "segment_train", params, None

    def _on_result(self, context, params: dict, arrays: dict) -> set[str]:
        context.scene.gaussians_segment.method = "saga"
        self.report({"INFO"}, f"Features trained in {float(params.get('seconds', 0)):.0f} s; "
                              "Segment now uses SAGA Features")
        notices.report(self, notices.latest("segment_train"))
        return {"FINISHED"}


classes = (GAUSSIANS_OT_segment_train,)
