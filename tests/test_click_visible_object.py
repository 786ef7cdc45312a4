"""A click picks what is visible at that pixel across every Gaussian object: after an Apply split the ball off
the scene (saved in a .blend), the same click on that .blend selects in the ball's segment (not the ground
behind it, not "nothing under the click"), and a second Apply splits the segment further."""

from __future__ import annotations

import json

import numpy as np
import pytest
from blender_fixtures import addon, bpy, clean_scene  # noqa: F401 (fixtures)
from segment_fakes import InProcessClient, label_segment

from blender_addon import batch
from blender_addon.engine_link import engine_client
from blender_addon.io.gaussian_layout import AXIS_CONVERSION
from blender_addon.segment.visible_object import front_object, pixel_weights
from engine.cameras import project_points
from test_batch_select import _labels, camera_blend, labelled  # noqa: F401 (fixtures)

pytestmark = pytest.mark.blender


def test_the_front_gaussian_wins_the_pixel():
    K = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
    viewmat = np.eye(4)
    means = np.array([[0.0, 0, 5], [0.0, 0, 3], [2.0, 0, 2]])      # behind, in front, off to the side
    weights = pixel_weights(means, np.array([0.2, 0.2, 0.2]), np.array([0.9, 0.9, 0.9]), np.array([0, 1, 2]),
                            viewmat, K, np.array([[50.0, 50.0]]), 3)
    assert front_object(weights) == 1 and weights[2] == 0
    empty = pixel_weights(means, np.full(3, 0.01), np.full(3, 0.9), np.arange(3), viewmat, K,
                          np.array([[5.0, 5.0]]), 3)
    assert front_object(empty) == -1


def test_a_click_on_an_applied_segment_selects_in_it(camera_blend, labelled, monkeypatch, capsys, tmp_path):
    scene, ply = labelled
    blend, viewmat, K = camera_blend
    client = InProcessClient({"segment": label_segment})
    monkeypatch.setattr(engine_client, "get_client", lambda: client)
    obj = scene.object("red_sphere")
    world = AXIS_CONVERSION[:3, :3] @ obj.center + [0.0, 0.0, 0.3 * obj.size]
    x, y = project_points(world[None], viewmat, K)[0][0]
    a_blend, report = tmp_path / "a.blend", tmp_path / "report.json"
    status = batch.run([str(v) for v in ("--blend", blend, "--ply", ply, "--select-point", x, y, "--segment-name",
                                         "a", "--save", a_blend)])
    assert status == 0, capsys.readouterr().err
    count_a = len(bpy.data.objects["a"].data.vertices)
    # the same click on the saved .blend: the ball is now object "a", in front of what is left of the scene
    status = batch.run([str(v) for v in ("--blend", a_blend, "--select-point", x, y, "--segment-name", "b",
                                         "--granularity", 0.2, "--report", report)])
    assert status == 0, capsys.readouterr().err
    (segment,) = json.loads(report.read_text())["segments"]
    assert segment["source"] == "a"
    assert set(_labels(bpy.data.objects["b"])) == set(_labels(bpy.data.objects["a"]))   # the ball's label only
    # a second Apply split the segment further (granularity 0.2: the ball's upper part)
    assert 0 < segment["gaussians"] < count_a
    assert len(bpy.data.objects["a"].data.vertices) == count_a - segment["gaussians"]
