"""The render request answered with pixels (the Gaussian Splats render engine): Blender's scene-linear,
premultiplied Combined and its Depth pass, rows from the bottom, equal to the PNGs of the same request; and the
Gaussians kept on the device between requests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cameras import intrinsics_from_fov, look_at
from engine.render import job, render_gaussians
from engine.render.job import handle_render
from engine.render.pixels import EMPTY_DEPTH, blender_pixels, linear_to_srgb, srgb_to_linear
from engine.synthetic_scene import make_primitives_scene
from tests.motion_fixtures import QuietContext

W, H = 40, 30


@pytest.fixture(scope="module")
def ply(tmp_path_factory):
    return make_primitives_scene(gaussians_per_object=200, sh_degree=1, seed=2).write(
        tmp_path_factory.mktemp("pixels") / "scene.ply")


def _request(ply, out_dir=None, background=(0.1, 0.2, 0.3), frames=2, **overrides):
    viewmats = [look_at(np.array([0.5 * i, -4.0, 2.5]), np.array([0.0, 0.0, 0.3]), up=(0.0, 0.0, 1.0))
                for i in range(frames)]
    params = {"width": W, "height": H, "frames": list(range(1, frames + 1)), "near": 0.05, "far": 100.0,
              "device": "cpu", "background": None if background is None else list(background), "write_video": False,
              "objects": [{"name": "scene", "ply_path": str(ply)}]}
    if out_dir is not None:
        params["out_dir"] = str(out_dir)
    params.update(overrides)
    arrays = {"viewmats": np.asarray(viewmats, np.float32),
              "Ks": np.repeat(intrinsics_from_fov(W, H, 55.0)[None], frames, 0).astype(np.float32),
              "object_matrices": np.repeat(np.eye(4, dtype=np.float32)[None, None], frames, 0)}
    return params, arrays


def _linear_to_srgb8(linear: np.ndarray) -> np.ndarray:
    srgb = linear_to_srgb(torch.from_numpy(np.ascontiguousarray(linear, np.float32))).numpy()
    return np.clip(srgb * 255 + 0.5, 0, 255).astype(np.int32)


def test_srgb_to_linear_known_values_and_round_trip():
    c = torch.tensor([0.0, 0.04045, 0.5, 1.0])
    np.testing.assert_allclose(srgb_to_linear(c).numpy(), [0.0, 0.04045 / 12.92, 0.21404114, 1.0], rtol=1e-5)
    c = torch.linspace(0, 1, 1001)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(c)).numpy(), c.numpy(), atol=1e-6)


def test_blender_pixels_premultiplies_flips_and_marks_empty_depth():
    rgb = torch.tensor([[[0.25, 0.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0.5, 0.0], [0.0, 0.0, 0.0]]])   # premultiplied
    alpha = torch.tensor([[0.5, 0.0], [1.0, 0.0]])
    depth = torch.tensor([[2.0, 0.0], [3.0, 0.0]])
    combined, z = blender_pixels(rgb, alpha, depth, transparent=True)
    # row 0 of the result is the image's bottom row: the engine's row 1
    np.testing.assert_allclose(combined[0, 0].numpy(), [0.0, 0.21404114, 0.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(combined[1, 0].numpy(), [0.5 * 0.21404114, 0.0, 0.0, 0.5], rtol=1e-5)
    np.testing.assert_array_equal(combined[:, 1].numpy(), 0.0)
    np.testing.assert_array_equal(z.numpy(), [[3.0, EMPTY_DEPTH], [2.0, EMPTY_DEPTH]])
    opaque, _ = blender_pixels(rgb, alpha, depth, transparent=False)
    np.testing.assert_array_equal(opaque[..., 3].numpy(), 1.0)


@pytest.mark.parametrize("background", [(0.1, 0.2, 0.3), None])
def test_pixels_equal_the_pngs_of_the_same_request(ply, tmp_path, background):
    params, arrays = _request(ply, tmp_path / "png", background)
    result, _ = handle_render(QuietContext(), params, arrays)
    params, arrays = _request(ply, None, background, return_pixels=True)
    result_px, pixels = handle_render(QuietContext(), params, arrays)
    assert result_px["frames"] == [] and pixels["combined"].shape == (2, H, W, 4) and pixels["depth"].shape == (2, H, W)
    for i, path in enumerate(result["frames"]):
        expected = np.asarray(Image.open(path).convert("RGBA"), np.int32)
        combined = pixels["combined"][i][::-1]          # back to rows from the top
        a = combined[..., 3]
        straight = combined[..., :3] / np.maximum(a, 1e-6)[..., None]
        assert np.abs(np.clip(a * 255 + 0.5, 0, 255).astype(np.int32) - expected[..., 3]).max() <= 1
        seen = expected[..., 3] >= 16
        assert np.abs(_linear_to_srgb8(straight) - expected[..., :3])[seen].max() <= 1
    assert not (tmp_path / "pixels").exists()
    drawn = pixels["depth"] < EMPTY_DEPTH
    assert drawn.mean() > 0.2 and (~drawn).any()
    assert 2.0 < np.median(pixels["depth"][drawn]) < 8.0


def test_the_gaussians_stay_on_the_device_between_requests(ply):
    job._device_cache.clear()
    params, arrays = _request(ply, None, return_pixels=True, frames=1)
    handle_render(QuietContext(), params, arrays)
    ((_, first),) = job._device_cache.values()
    handle_render(QuietContext(), params, arrays)
    assert next(iter(job._device_cache.values()))[1] is first       # no reload, no upload
    arrays["indices_0"] = np.arange(0, first.count, 2)
    _, pixels = handle_render(QuietContext(), params, arrays)
    ((_, second),) = job._device_cache.values()
    handle_render(QuietContext(), params, arrays)
    assert next(iter(job._device_cache.values()))[1] is second
    arrays["indices_0"] = arrays["indices_0"].copy()
    arrays["indices_0"][0] = 1                                        # as many rows, one of them another
    handle_render(QuietContext(), params, arrays)
    assert next(iter(job._device_cache.values()))[1] is not second
    assert second is not first and second.count == (first.count + 1) // 2
    assert pixels["combined"].shape == (1, H, W, 4)


def test_only_the_passes_asked_for_are_sent(ply):
    params, arrays = _request(ply, None, return_pixels=True, frames=1, passes=["combined"])
    _, pixels = handle_render(QuietContext(), params, arrays)
    assert set(pixels) == {"combined"}
    params["passes"] = ["combined", "normal"]
    with pytest.raises(job.RenderRequestError, match="passes"):
        handle_render(QuietContext(), params, arrays)


def test_pixels_written_into_shared_memory_equal_the_piped_ones(ply):
    from engine import shared_pixels

    params, arrays = _request(ply, None, return_pixels=True, frames=2)
    _, piped = handle_render(QuietContext(), params, arrays)
    buffer = shared_pixels.PixelBuffer()
    try:
        shapes = shared_pixels.pass_shapes(("combined", "depth"), 2, H, W)
        params["shared_memory"] = buffer.name_for(shared_pixels.nbytes(shapes))
        result, sent = handle_render(QuietContext(), params, arrays)
        assert result["shared_memory"] is True and sent == {}        # nothing through the pipe
        shared = buffer.views(shapes)
        np.testing.assert_array_equal(shared["combined"], piped["combined"])
        np.testing.assert_array_equal(shared["depth"], piped["depth"])
        del shared
        small = shared_pixels.PixelBuffer()
        params["shared_memory"] = small.name_for(16)
        with pytest.raises(job.RenderRequestError, match="shared pixel buffer"):
            handle_render(QuietContext(), params, arrays)
        small.close()
    finally:
        buffer.close()


def test_a_scaled_object_keeps_its_true_depth(ply):
    # The scaled object's scale goes into the camera (engine/render/posing.py); Blender's Z pass must still
    # read camera depth in scene units: the same pixels as drawing the scaled Gaussians themselves.
    params, arrays = _request(ply, None, return_pixels=True)
    scaled = np.stack([np.diag([k, k, k, 1.0]) for k in (1.4, 0.75)])[:, None].astype(np.float32)
    _, pixels = handle_render(QuietContext(), params, {**arrays, "object_matrices": scaled})
    g = job.load_objects(QuietContext(), params["objects"], torch.device("cpu"))
    for i in range(2):
        means, quats, scales, sh = job.posed_gaussians(g, scaled[i].astype(np.float64))
        out = render_gaussians(means, quats, scales, g.opacities, sh, arrays["viewmats"][i], arrays["Ks"][i], W, H,
                               near=0.05, far=100.0, background=torch.tensor([0.1, 0.2, 0.3]),
                               sh_degree=g.sh_degree)
        combined, depth = blender_pixels(out.rgb, out.alpha, out.depth, transparent=False)
        drawn = depth.numpy() < EMPTY_DEPTH
        assert drawn.mean() > 0.2
        np.testing.assert_allclose(pixels["depth"][i][drawn], depth.numpy()[drawn], rtol=1e-3)
        np.testing.assert_allclose(pixels["combined"][i], combined.numpy(), atol=2e-3)
    assert np.median(pixels["depth"][0][drawn]) != pytest.approx(np.median(pixels["depth"][1][drawn]), rel=0.05)
