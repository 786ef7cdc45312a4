"""The Gaussian Splats render engine in the bpy module: F12 (`render.render(write_still=True)`) and Render Animation
write what the engine renders for the camera (equal to Render Splats' frames within 1/255), with resolution %,
pixel aspect, border and crop, film transparency, the Depth pass and mesh objects ignored; a missing engine is an
error in the render, not a crash. The viewport's camera is checked against the render camera's."""

from __future__ import annotations


import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from PIL import Image  # noqa: E402

from blender_addon.engine_link import engine_client  # noqa: E402
from blender_addon.render import render_request, render_splats  # noqa: E402
from engine_python import ENGINE_PYTHON  # noqa: E402
from blender_addon.render.camera_data import camera_from_blender  # noqa: E402
from blender_addon.io.gaussian_object import import_ply  # noqa: E402
from blender_addon.render.render_region import scaled_view_camera  # noqa: E402
from blender_addon.render.splat_render_engine import ENGINE_ID  # noqa: E402

EMPTY_DEPTH = 1.0e10     # engine/render/pixels.py's value for "no splat here" (that module needs torch)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """The sRGB transfer function, in numpy: this file also runs in the torch-free venvs of Blender 4.2 and 5.3."""
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.maximum(c, 0.0031308) ** (1 / 2.4) - 0.055)

from engine.synthetic_scene import make_primitives_scene  # noqa: E402
from exr_reader import read_exr  # noqa: E402
from blender_fixtures import addon  # noqa: E402,F401 (fixture)

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def small_ply(tmp_path_factory):
    path = tmp_path_factory.mktemp("splat_engine") / "small.ply"
    return make_primitives_scene(gaussians_per_object=250, sh_degree=1, seed=3).write(path)


@pytest.fixture(scope="module")
def client():
    c = engine_client.EngineClient(python=ENGINE_PYTHON)
    yield c
    c.stop()


@pytest.fixture
def scene(addon, small_ply, client, monkeypatch):  # noqa: F811
    monkeypatch.setattr(engine_client, "get_client", lambda: client)
    monkeypatch.setattr(engine_client, "preferred_device", lambda: "cpu")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    obj = import_ply(small_ply, bpy.context)
    camera = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(camera)
    camera.rotation_euler = (np.radians(68.0), 0.0, 0.0)
    scene.camera = camera
    scene.frame_start, scene.frame_end = 1, 3
    scene.render.resolution_x, scene.render.resolution_y = 96, 64
    scene.render.resolution_percentage = 50
    for frame, x in ((1, 0.0), (3, 1.5)):   # the object slides +x, the camera dollies in
        obj.location = (x, 0.0, 0.0)
        obj.keyframe_insert("location", frame=frame)
    for frame, y in ((1, -7.0), (3, -6.0)):
        camera.location = (0.0, y, 3.0)
        camera.keyframe_insert("location", frame=frame)
    scene.frame_set(2)
    scene.render.engine = ENGINE_ID
    # The splats' colours are display-referred: the Standard view shows them as they are (docs/render_engine.md).
    scene.view_settings.view_transform = "Standard"
    scene.render.dither_intensity = 0.0
    return scene


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA"), dtype=np.int32)


def render_splats_frames(scene, out_dir) -> list[np.ndarray]:
    files = render_splats.render_splats_blocking(scene, out_dir, None, "cpu", write_video=False)
    return [png(f) for f in files]


def f12(scene, path) -> np.ndarray:
    scene.render.filepath = str(path)
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    return png(path)


def test_f12_writes_the_engines_frame_for_the_camera(scene, tmp_path, monkeypatch):
    from blender_addon.render import splat_render_engine

    expected = render_splats_frames(scene, tmp_path / "splats")[1]   # frame 2 of 1..3
    read = []
    views = splat_render_engine._final_pixels.views
    monkeypatch.setattr(splat_render_engine._final_pixels, "views", lambda shapes: read.append(shapes) or views(shapes))
    image = f12(scene, tmp_path / "f12.png")
    assert read == [{"combined": (1, 32, 48, 4)}]                    # the frame came through shared memory
    assert image.shape == (32, 48, 4)                                # 96 × 64 at 50 %
    assert image[..., :3].std() > 5                                  # the primitives are in view
    assert np.abs(image - expected).max() <= 1                       # within 1/255


def test_pixel_aspect_and_percentage_follow_the_render_settings(scene, tmp_path):
    scene.render.resolution_percentage = 75
    scene.render.pixel_aspect_x = 2.0
    expected = render_splats_frames(scene, tmp_path / "splats")[1]
    image = f12(scene, tmp_path / "f12.png")
    assert image.shape == (48, 72, 4)
    assert np.abs(image - expected).max() <= 1
    scene.render.pixel_aspect_x = 1.0
    assert np.abs(f12(scene, tmp_path / "square.png") - image).max() > 20   # the aspect did change the image


def test_transparent_film_writes_premultiplied_alpha_that_round_trips(scene, tmp_path):
    scene.render.film_transparent = True
    scene.render.image_settings.color_mode = "RGBA"
    expected = render_splats_frames(scene, tmp_path / "splats")[1]
    image = f12(scene, tmp_path / "f12.png")
    assert (image[..., 3] == 0).any() and (image[..., 3] == 255).any()
    assert np.abs(image[..., 3] - expected[..., 3]).max() <= 1
    seen = expected[..., 3] >= 16   # colour is exact where the splats are not a faint fringe
    assert np.abs(image[..., :3] - expected[..., :3])[seen].max() <= 1


def test_animation_writes_the_frame_range_with_the_keys(scene, tmp_path):
    expected = render_splats_frames(scene, tmp_path / "splats")
    scene.render.filepath = str(tmp_path / "anim" / "f_")
    assert bpy.ops.render.render(animation=True) == {"FINISHED"}
    files = sorted((tmp_path / "anim").iterdir())
    assert [f.name for f in files] == ["f_0001.png", "f_0002.png", "f_0003.png"]
    images = [png(f) for f in files]
    for image, reference in zip(images, expected):
        assert np.abs(image - reference).max() <= 1
    assert np.abs(images[0] - images[2]).mean() > 2                  # the object and the camera moved
    assert scene.frame_current == 2


def test_depth_pass_holds_the_engines_depth(scene, tmp_path, client):
    scene.view_layers[0].use_pass_z = True
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):     # Blender 5.0+: multilayer EXR is a media type of its own
        settings.media_type = "MULTI_LAYER_IMAGE"
    settings.file_format = "OPEN_EXR_MULTILAYER"
    settings.exr_codec = "NONE"
    settings.color_depth = "32"
    scene.render.filepath = str(tmp_path / "f12.exr")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    channels = read_exr(tmp_path / "f12.exr")
    depth = next(v for k, v in channels.items() if k.endswith("Depth.Z"))
    # the engine's depth of Render Splats' own request for frame 2, asked for as pixels
    scene.frame_start = scene.frame_end = 2
    params, arrays = render_request.build_render_request(scene, tmp_path / "unused", None, "cpu")
    params["return_pixels"] = True
    _, pixels = client.request("render", params, arrays)
    engine_depth = pixels["depth"][0][::-1]                          # Blender's rows are bottom-up, EXR's top-down
    assert depth.shape == (32, 48)
    np.testing.assert_allclose(depth, engine_depth, rtol=1e-5)
    drawn = depth < EMPTY_DEPTH
    assert drawn.mean() > 0.3 and (~drawn).any()                     # splats and empty sky
    assert 4.0 < np.median(depth[drawn]) < 12.0                      # the primitives are ~7 units from the camera
    combined_r = next(v for k, v in channels.items() if k.endswith("Combined.R"))
    np.testing.assert_allclose(combined_r, pixels["combined"][0][::-1, :, 0], atol=1e-6)


def test_border_renders_the_region_cropped_or_in_place(scene, tmp_path):
    full = f12(scene, tmp_path / "full.png")
    render = scene.render
    render.use_border = True
    render.border_min_x, render.border_max_x, render.border_min_y, render.border_max_y = 0.2, 0.7, 0.1, 0.6
    render.use_crop_to_border = True
    cropped = f12(scene, tmp_path / "cropped.png")
    # 48 × 32: x 9..33 (int(0.2·48), int(0.7·48)), y 3..19 from the bottom = rows 13..29 from the top
    assert cropped.shape == (16, 24, 4)
    assert np.abs(cropped - full[13:29, 9:33]).max() <= 1
    render.use_crop_to_border = False
    in_place = f12(scene, tmp_path / "in_place.png")
    assert in_place.shape == full.shape
    assert np.abs(in_place[13:29, 9:33] - cropped).max() <= 1
    assert (in_place[:13] == 0).all() and (in_place[29:] == 0).all()


def test_mesh_objects_are_ignored(scene, tmp_path):
    before = f12(scene, tmp_path / "before.png")
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(0.0, -4.0, 2.0))   # right in front of the camera
    after = f12(scene, tmp_path / "after.png")
    assert np.array_equal(before, after)


def test_the_engine_starts_on_demand(scene, tmp_path, monkeypatch):
    fresh = engine_client.EngineClient(python=ENGINE_PYTHON)
    monkeypatch.setattr(engine_client, "get_client", lambda: fresh)
    try:
        assert not fresh.running
        assert f12(scene, tmp_path / "f12.png")[..., :3].std() > 5
        assert fresh.running
    finally:
        fresh.stop()


def test_a_missing_engine_is_an_error_in_the_render_not_a_crash(scene, tmp_path, monkeypatch):
    broken = engine_client.EngineClient(python=str(tmp_path / "no-such-python"))
    monkeypatch.setattr(engine_client, "get_client", lambda: broken)
    scene.render.filepath = str(tmp_path / "f12.png")
    with pytest.raises(RuntimeError, match="Gaussian Splats: cannot start the engine"):
        bpy.ops.render.render(write_still=True)
    for obj in list(scene.objects):
        if obj.type == "MESH":
            bpy.data.objects.remove(obj)
    with pytest.raises(RuntimeError, match="no Gaussian objects"):
        bpy.ops.render.render(write_still=True)


def test_the_viewport_camera_from_a_view_matrix_is_the_render_camera(scene):
    """A viewport looking through the camera (view = camera⁻¹, window = the camera's projection) asks the
    engine for the very camera F12 renders."""
    camera = scene.camera
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = camera.evaluated_get(depsgraph)
    window = evaluated.calc_matrix_camera(depsgraph, x=48, y=32)
    view = evaluated.matrix_world.inverted()
    (viewmat, K, near, far), w, h = scaled_view_camera(view, window, 48, 32, camera.data.clip_start,
                                                       camera.data.clip_end)
    ref_viewmat, ref_K, ref_near, ref_far = camera_from_blender(scene, camera, 48, 32)
    np.testing.assert_allclose(viewmat, ref_viewmat, atol=1e-5)
    np.testing.assert_allclose(K, ref_K, rtol=1e-5)
    assert (w, h, near, far) == (48, 32, ref_near, ref_far)
    (_, K_half, _, _), w2, h2 = scaled_view_camera(view, window, 48, 32, 0.1, 100.0, scale=0.5)
    assert (w2, h2) == (24, 16)
    np.testing.assert_allclose(K_half[:2], ref_K[:2] / 2, rtol=1e-5)


class ViewportEngine:
    """The engine's viewport logic (view_update, view_draw, taking answers) on a plain object: a RenderEngine
    cannot be instantiated from Python, and background Blender has no GPU to draw with, so the texture upload
    is recorded instead (its layout is tested in test_render_region.py)."""

    from blender_addon.render.splat_render_engine import GaussianSplatsRenderEngine as _E

    view_update, view_draw, _collect, _init_viewport_state = (_E.view_update, _E.view_draw, _E._collect,
                                                              _E._init_viewport_state)

    def __init__(self):
        self._init_viewport_state()
        self.uploads, self.stats, self.timers = [], [], 0

    def _upload(self, combined, width, height):
        self.uploads.append((np.array(combined), width, height))

    def _draw_texture(self, scene, width, height):
        pass

    def _start_timer(self):
        self.timers += 1

    def update_stats(self, stats, info):
        self.stats.append(info)


def _viewport_context(scene, window_matrix=None):
    from types import SimpleNamespace

    depsgraph = bpy.context.evaluated_depsgraph_get()
    camera = scene.camera.evaluated_get(depsgraph)
    region_3d = SimpleNamespace(view_matrix=camera.matrix_world.inverted(),
                                window_matrix=window_matrix or camera.calc_matrix_camera(depsgraph, x=48, y=32))
    context = SimpleNamespace(region=SimpleNamespace(width=48, height=32), region_data=region_3d, scene=scene,
                              space_data=SimpleNamespace(clip_start=scene.camera.data.clip_start,
                                                         clip_end=scene.camera.data.clip_end))
    return context, depsgraph


def _draw_until_uploaded(engine, context, depsgraph, count):
    import time

    deadline = time.monotonic() + 300
    while len(engine.uploads) < count and time.monotonic() < deadline:
        engine.view_draw(context, depsgraph)
        time.sleep(0.05)
    assert len(engine.uploads) == count, engine.stats


def test_view_draw_renders_the_view_reduced_then_full_and_again_after_a_scene_change(scene, tmp_path):
    expected = f12(scene, tmp_path / "f12.png")     # looking through the camera, the viewport shows the F12 frame
    engine = ViewportEngine()
    context, depsgraph = _viewport_context(scene)
    _draw_until_uploaded(engine, context, depsgraph, 1)
    combined, w, h = engine.uploads[0]
    assert (w, h) == (24, 16) and combined.shape == (16, 24, 4)      # a new view comes at half size first
    assert engine.timers >= 1                                          # ... and a redraw is due for the full one
    engine._schedule.still_after = 0.0                                 # the view has been still long enough
    _draw_until_uploaded(engine, context, depsgraph, 2)
    combined, w, h = engine.uploads[1]
    assert (w, h) == (48, 32)
    srgb = linear_to_srgb(combined[..., :3])
    image = (np.clip(srgb, 0, 1) * 255 + 0.5).astype(np.int32)[::-1]  # texture rows are bottom-up
    assert np.abs(image - expected[..., :3]).max() <= 1
    engine.view_draw(context, depsgraph)
    assert len(engine.uploads) == 2 and engine._request_id is None     # nothing changed: no request
    engine.view_update(context, depsgraph)                             # e.g. an object moved
    engine.view_draw(context, depsgraph)
    assert engine._request_id is not None


def test_view_draw_of_an_orthographic_view_says_why_it_is_empty(scene):
    from mathutils import Matrix

    ortho = Matrix(((0.2, 0, 0, 0), (0, 0.3, 0, 0), (0, 0, -0.02, -1.0), (0, 0, 0, 1.0)))
    engine = ViewportEngine()
    context, depsgraph = _viewport_context(scene, ortho)
    engine.view_draw(context, depsgraph)
    assert engine._request_id is None and not engine.uploads
    assert any("orthographic" in line for line in engine.stats)


@pytest.mark.gpu
def test_f12_on_the_gpu_writes_the_engines_gsplat_frame(scene, tmp_path, monkeypatch):
    monkeypatch.setattr(engine_client, "preferred_device", lambda: "cuda")
    files = render_splats.render_splats_blocking(scene, tmp_path / "splats", None, "cuda", write_video=False)
    expected = png(files[1])
    image = f12(scene, tmp_path / "f12.png")
    assert image[..., :3].std() > 5
    assert np.abs(image - expected).max() <= 1


def _invert_in_the_compositor(scene) -> None:
    """Render Layers → Invert → output, in the compositor API of this Blender (5.0+: a node group; 4.x: use_nodes)."""
    if hasattr(scene, "compositing_node_group"):
        tree = bpy.data.node_groups.new("invert", "CompositorNodeTree")
        scene.compositing_node_group = tree
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        out = tree.nodes.new("NodeGroupOutput")
    else:
        scene.use_nodes = True
        tree = scene.node_tree
        tree.nodes.clear()
        out = tree.nodes.new("CompositorNodeComposite")
    layers = tree.nodes.new("CompositorNodeRLayers")
    invert = tree.nodes.new("CompositorNodeInvert")
    tree.links.new(layers.outputs["Image"], invert.inputs["Color"])
    tree.links.new(invert.outputs[0], out.inputs[0])


def test_the_compositor_runs_on_the_splats(scene, tmp_path):
    plain = f12(scene, tmp_path / "plain.png")[..., :3]
    _invert_in_the_compositor(scene)
    inverted = f12(scene, tmp_path / "inverted.png")[..., :3]
    empty = plain.sum(axis=-1) == 0
    assert empty.any() and (inverted[empty] == 255).all()        # black sky, inverted in scene-linear: white
    assert np.abs(inverted - plain).mean() > 50
