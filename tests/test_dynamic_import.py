"""Dynamic 3D Gaussians sequences: params.npz reading/validation, and the Blender import that plays on the
timeline (evaluated positions at frame t are means3D[t] after the axis conversion) and shows a 4D highlight."""

from __future__ import annotations

import numpy as np
import pytest

from engine.dynamic import DynamicFormatError, make_moving_sequence, read_dynamic, speeds, write_dynamic

from blender_fixtures import addon, bpy, clean_scene  # noqa: F401

pytestmark = pytest.mark.blender


def test_npz_round_trip_and_frames(tmp_path):
    seq = make_moving_sequence(40, timesteps=8, move_start=2, move_end=5)
    back = read_dynamic(write_dynamic(tmp_path / "params.npz", seq))
    assert back.means.shape == (8, seq.count, 3) and back.quats_wxyz.shape == (8, seq.count, 4)
    np.testing.assert_array_equal(back.means, seq.means)
    np.testing.assert_array_equal(back.labels, seq.labels)
    f = back.frame(3)
    np.testing.assert_allclose(f.colors(), np.clip(back.rgb_at(3), 0, 1), atol=1e-6)
    moving = seq.labels == 1
    moved = [bool(speeds(seq, t)[moving].min() > 0) for t in range(8)]
    assert moved == [False, False, True, True, True, True, False, False]
    assert speeds(seq, 4)[~moving].max() == 0


def test_bad_npz_files_say_what_is_wrong(tmp_path):
    seq = make_moving_sequence(20, timesteps=3)
    with pytest.raises(DynamicFormatError, match="lacks log_scales"):
        np.savez(tmp_path / "a.npz", means3D=seq.means, unnorm_rotations=seq.quats_wxyz, rgb_colors=seq.rgb[0],
                 logit_opacities=seq.opacity_logit)
        read_dynamic(tmp_path / "a.npz")
    bad = seq.means.copy()
    bad[1, 0, 0] = np.nan
    with pytest.raises(DynamicFormatError, match="NaN"):
        np.savez(tmp_path / "b.npz", means3D=bad, unnorm_rotations=seq.quats_wxyz, rgb_colors=seq.rgb[0],
                 logit_opacities=seq.opacity_logit, log_scales=seq.log_scales)
        read_dynamic(tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(DynamicFormatError):
        read_dynamic(tmp_path / "c.npz")


def _world_positions(obj, frame: int) -> np.ndarray:
    bpy.context.scene.frame_set(frame)
    mesh = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    m = np.array(obj.matrix_world)
    return co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]


def test_dynamic_import_plays_on_the_timeline(tmp_path, monkeypatch, clean_scene):  # noqa: F811
    from blender_addon.io.dynamic_import import import_dynamic, set_query_highlight, timestep_for_frame
    from blender_addon.io.gaussian_layout import AXIS_CONVERSION

    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    seq = make_moving_sequence(30, timesteps=8, move_start=2, move_end=5)
    path = write_dynamic(tmp_path / "params.npz", seq)
    clean_scene.frame_start = 5
    obj = import_dynamic(path)
    assert clean_scene.frame_start == 5 and clean_scene.frame_end == 12
    obj.modifiers["Gaussian Splats"].show_viewport = False     # read the points before the splat display
    for t in (0, 3, 7):
        expected = seq.means[t] @ AXIS_CONVERSION[:3, :3].T
        np.testing.assert_allclose(_world_positions(obj, 5 + t), expected, atol=1e-5)
    assert not np.allclose(seq.means[3], seq.means[0])          # the check above would catch a frozen object
    assert timestep_for_frame(obj, 100) == 7 and timestep_for_frame(obj, 0) == 0
    # 4D highlight: `selection` = peak inside each Gaussian's frames, 0 outside.
    n = seq.count
    start, end = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
    start[:10], end[:10] = 6, 8
    set_query_highlight(obj, start, end, np.linspace(0.5, 1.0, n).astype(np.float32))
    for frame, on in ((5, False), (7, True), (9, False)):
        bpy.context.scene.frame_set(frame)
        mesh = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
        sel = np.empty(n, np.float32)
        mesh.attributes["selection"].data.foreach_get("value", sel)
        assert (sel[:10] > 0).all() == on and (sel[10:] == 0).all()
