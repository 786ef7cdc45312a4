"""The "Gaussian Splats" render engine: F12, Render Animation, `blender -b scene.blend -a` and the viewport's
Rendered mode draw the true splats with the engine, through Blender's own image pipeline (output format, frame
range, border, film transparency, passes, compositor).

Each frame is one "render" request (render_request.build_pixels_request: the same scene description Render
Splats sends) answered with Blender's Combined and Depth passes. Only Gaussian objects are drawn; other
objects (meshes, curves, lights) are ignored by this engine (docs/render_engine.md).
"""

from __future__ import annotations

import atexit
import time

import bpy
import numpy as np

from engine import fallbacks, shared_pixels
from engine.errors import AnimateGaussiansError, CameraError, CancelledError, EngineError

from ..engine_link import engine_client
from .camera_data import camera_from_blender
from .render_region import ViewportSchedule, border_rect, cropped_intrinsics, pass_pixels, scaled_view_camera
from .render_request import build_pixels_request

ENGINE_ID = "GAUSSIAN_SPLATS"
REQUEST_TYPE = "render"
POLL_SECONDS = 0.002      # how often a waiting render looks for the engine's answer (and for Esc)


def wait_for(client: engine_client.EngineClient, request_id: int, cancelled=lambda: False,
             on_progress=lambda fraction: None) -> tuple[dict, dict[str, np.ndarray]]:
    """The request's (params, arrays); `cancelled()` is asked between polls and cancels it in the engine."""
    asked_cancel = False
    while True:
        for event in client.poll(request_id):
            if event.kind == "progress":
                on_progress(event.fraction)
            elif event.kind == "result":
                return event.params, event.arrays
            else:
                raise event.error or EngineError("the render failed")
        if not asked_cancel and cancelled():
            client.cancel(request_id)
            asked_cancel = True
        time.sleep(POLL_SECONDS)


_final_pixels = shared_pixels.PixelBuffer()   # F12 / animation frames land here (one render at a time)
atexit.register(_final_pixels.close)


def _shared_name(buffer: shared_pixels.PixelBuffer, shapes: dict) -> str | None:
    """The segment for an answer of these shapes, or None (the pipe then carries it) where the OS gives none."""
    try:
        return buffer.name_for(shared_pixels.nbytes(shapes))
    except OSError:
        return None


def _original(obj):
    return obj.original if obj is not None and obj.is_evaluated else obj


class GaussianSplatsRenderEngine(bpy.types.RenderEngine):
    """True 3D Gaussian Splatting renders from the Animate Gaussians engine"""

    bl_idname = ENGINE_ID
    bl_label = "Gaussian Splats"
    bl_use_preview = False
    bl_use_postprocess = True      # Blender composites and sequences our result (False: the engine would own it)
    bl_use_eevee_viewport = True   # Material Preview keeps showing the Geometry Nodes display

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_viewport_state()

    def _init_viewport_state(self) -> None:
        self._schedule = ViewportSchedule()
        self._scene_serial = 0
        self._texture = None
        self._request_id: int | None = None
        self._request_size: tuple[int, int] | None = None
        self._client: engine_client.EngineClient | None = None
        self._timer = None
        self._viewport_error = ""
        self._pixels = shared_pixels.PixelBuffer()

    def __del__(self):
        pixels = getattr(self, "_pixels", None)
        if pixels is not None:
            pixels.close()

    # -- final render (F12, Render Animation, -a) -----------------------------------------------------------
    def update_render_passes(self, scene=None, renderlayer=None):
        self.register_pass(scene, renderlayer, "Combined", 4, "RGBA", "COLOR")
        if renderlayer is not None and renderlayer.use_pass_z:
            self.register_pass(scene, renderlayer, "Depth", 1, "Z", "VALUE")

    def render(self, depsgraph):
        scene = depsgraph.scene.original
        width, height = int(self.resolution_x), int(self.resolution_y)
        render = scene.render
        rect = border_rect(width, height, (render.border_min_x, render.border_max_x, render.border_min_y,
                                           render.border_max_y) if render.use_border else None)
        layer_name = depsgraph.view_layer.name
        try:
            camera_obj = _original(self.camera_override) or scene.camera
            if camera_obj is None:
                raise CameraError("the scene has no active camera")
            viewmat, K, near, far = camera_from_blender(scene, camera_obj, width, height, depsgraph)
            camera = (viewmat, cropped_intrinsics(K, rect, height), near, far)
            passes = ("combined", "depth") if depsgraph.view_layer.use_pass_z else ("combined",)
            shapes = shared_pixels.pass_shapes(passes, 1, rect.height, rect.width)
            params, arrays = build_pixels_request(scene, depsgraph, camera, rect.width, rect.height,
                                                  engine_client.preferred_device(), passes=passes,
                                                  shared_memory=_shared_name(_final_pixels, shapes))
            self.update_stats("", "Gaussian Splats: rendering")
            client = engine_client.get_client()
            request_id = client.submit(REQUEST_TYPE, params, arrays)
            result_params, pixels = wait_for(client, request_id, self.test_break, self.update_progress)
        except CancelledError:
            return
        except AnimateGaussiansError as exc:
            self._fail(exc.user_message())
            return
        if result_params.get("shared_memory"):
            pixels = _final_pixels.views(shapes)
        result = self.begin_result(0, 0, rect.width, rect.height, layer=layer_name)
        try:
            render_passes = result.layers[0].passes
            render_passes["Combined"].rect.foreach_set(pass_pixels(pixels["combined"][0]))
            depth = render_passes.get("Depth")
            if depth is not None and "depth" in pixels:
                depth.rect.foreach_set(pass_pixels(pixels["depth"][0]))
        finally:
            del pixels
            self.end_result(result)
        for message in [w["message"] for w in fallbacks.warnings_of(result_params)]:
            self.report({"WARNING"}, message)

    def _fail(self, message: str) -> None:
        """The error shown in the render window (and on stderr in the background): the result stays empty."""
        self.report({"ERROR"}, f"Gaussian Splats: {message}")
        self.error_set(f"Gaussian Splats: {message}")

    # -- viewport Rendered mode -------------------------------------------------------------------------------
    def view_update(self, context, depsgraph):
        self._scene_serial += 1   # objects, keys or the frame changed: what the view shows is stale

    def view_draw(self, context, depsgraph):
        region, region_3d, space = context.region, context.region_data, context.space_data
        now = time.monotonic()
        self._collect()
        key = (np.array(region_3d.view_matrix).tobytes(), np.array(region_3d.window_matrix).tobytes(),
               region.width, region.height, self._scene_serial)
        scale = self._schedule.request(key, now)
        if scale is not None:
            try:
                camera, w, h = scaled_view_camera(region_3d.view_matrix, region_3d.window_matrix, region.width,
                                                  region.height, space.clip_start, space.clip_end, scale)
                shapes = shared_pixels.pass_shapes(("combined",), 1, h, w)
                params, arrays = build_pixels_request(context.scene, depsgraph, camera, w, h,
                                                      engine_client.preferred_device(), viewport=True,
                                                      passes=("combined",),
                                                      shared_memory=_shared_name(self._pixels, shapes))
                self._client = engine_client.get_client()
                self._request_id = self._client.submit(REQUEST_TYPE, params, arrays)
                self._request_size = (w, h)
                self._viewport_error = ""
            except AnimateGaussiansError as exc:
                self._schedule.failed()
                self._viewport_error = exc.user_message()
        if self._viewport_error:
            self.update_stats("", f"Gaussian Splats: {self._viewport_error}")
        if self._schedule.wants_redraw(now) and self._timer is None:
            self._start_timer()
        self._draw_texture(context.scene, region.width, region.height)

    def _collect(self) -> None:
        """Take the viewport request's answer if it arrived: upload it as the texture shown."""
        if self._request_id is None:
            return
        for event in self._client.poll(self._request_id):
            if event.kind == "result":
                w, h = self._request_size
                pixels = (self._pixels.views(shared_pixels.pass_shapes(("combined",), 1, h, w))
                          if event.params.get("shared_memory") else event.arrays)
                self._upload(pixels["combined"][0], w, h)
                del pixels
                self._schedule.landed()
                self._request_id = None
            elif event.kind != "progress":
                self._schedule.failed()
                self._request_id = None
                self._viewport_error = (event.error or EngineError("the render failed")).user_message()

    def _upload(self, combined: np.ndarray, width: int, height: int) -> None:
        import gpu

        data = gpu.types.Buffer("FLOAT", width * height * 4, pass_pixels(combined))
        self._texture = gpu.types.GPUTexture((width, height), format="RGBA16F", data=data)

    def _draw_texture(self, scene, width: int, height: int) -> None:
        if self._texture is None:
            return
        import gpu
        from gpu_extras.presets import draw_texture_2d

        gpu.state.blend_set("ALPHA_PREMULT")
        self.bind_display_space_shader(scene)
        draw_texture_2d(self._texture, (0, 0), width, height)   # a reduced frame is scaled up to the region
        self.unbind_display_space_shader()
        gpu.state.blend_set("NONE")

    def _start_timer(self) -> None:
        """Redraw while a request is in flight (view_draw takes its answer) or until the full-size frame is
        due; stops when neither is true."""
        def tick():
            try:
                self.tag_redraw()
                if self._schedule.wants_redraw(time.monotonic()):
                    return 0.02 if self._schedule.busy else self._schedule.still_after / 2
            except ReferenceError:   # the engine was freed (the viewport left Rendered mode)
                return None
            self._timer = None
            return None

        self._timer = tick
        bpy.app.timers.register(tick, first_interval=0.02)


def _compatible_panels() -> list[type]:
    """Blender's own panels that work with any engine (output format, frame range, dimensions, colour
    management, post processing ...): they list 'BLENDER_RENDER' among their engines, as Cycles relies on."""
    found, stack = [], list(bpy.types.Panel.__subclasses__())
    while stack:
        panel = stack.pop()
        stack.extend(panel.__subclasses__())
        engines = getattr(panel, "COMPAT_ENGINES", None)
        if isinstance(engines, set) and ("BLENDER_RENDER" in engines or panel.__name__.startswith(
                "RENDER_PT_color_management")):
            found.append(panel)
    return found


class GAUSSIANS_PT_splat_passes(bpy.types.Panel):
    """The passes the Gaussian Splats engine writes"""

    bl_label = "Passes"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "view_layer"
    COMPAT_ENGINES = {ENGINE_ID}

    @classmethod
    def poll(cls, context):
        return context.engine in cls.COMPAT_ENGINES

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.prop(context.view_layer, "use_pass_combined")
        layout.prop(context.view_layer, "use_pass_z", text="Depth")


classes = (GaussianSplatsRenderEngine, GAUSSIANS_PT_splat_passes)


def register_panels() -> None:
    for panel in _compatible_panels():
        panel.COMPAT_ENGINES.add(ENGINE_ID)


def unregister_panels() -> None:
    for panel in _compatible_panels():
        panel.COMPAT_ENGINES.discard(ENGINE_ID)
    _final_pixels.close()
