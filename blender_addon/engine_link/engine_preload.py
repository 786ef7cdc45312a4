"""The engine started right after a splat import in the UI, so the first request finds it warm (torch, CUDA,
gsplat, the render job loaded) and the scene read and on the device: a "preload" request, polled from a timer,
whose state the main panel shows ("Engine: starting…", "loading …", "ready").

Not in batch runs or scripts (bpy.app.background): there the request that follows an import comes at once and
does most of the same loading itself. *Start Engine on Import* in the preferences turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy

from engine.errors import AnimateGaussiansError

from . import engine_client

POLL_SECONDS = 0.25


@dataclass
class PreloadState:
    """What the panel says about the engine since the last import (no bpy: the tests drive it with events)."""

    request_id: int | None = None
    objects: tuple[str, ...] = ()   # the objects being loaded (the line is about them: another file has none)
    phase: str = "idle"         # idle | starting | loading | ready | failed
    stage: str = ""
    message: str = ""           # why it failed
    client: engine_client.EngineClient | None = None

    def advance(self, hello: bool, events) -> bool:
        """Apply the engine's hello and the request's events; True when the panel's line changed."""
        before = (self.phase, self.stage)
        if self.phase == "starting" and hello:
            self.phase = "loading"
        for event in events:
            if event.kind == "progress":
                self.phase, self.stage = "loading", event.stage
            elif event.kind == "result":
                self.phase = "ready"
            else:
                self.phase, self.message = "failed", event.error.user_message() if event.error else "it failed"
        return (self.phase, self.stage) != before

    @property
    def names(self) -> str:
        return ", ".join(self.objects)

    @property
    def finished(self) -> bool:
        return self.phase in ("idle", "ready", "failed")

    def line(self) -> tuple[str, str] | None:
        """(text, icon) of the panel's line, None when there is nothing to say."""
        if self.phase == "starting":
            return "Engine: starting…", "SORTTIME"
        if self.phase == "loading":
            return f"Engine: {self.stage or 'loading'} ({self.names})…", "SORTTIME"
        if self.phase == "ready":
            return f"Engine ready: {self.names} loaded", "CHECKMARK"
        if self.phase == "failed":
            return f"Engine could not preload {self.names}: {self.message} (the next request loads it)", "ERROR"
        return None


_state = PreloadState()


def state() -> PreloadState:
    return _state


def interactive() -> bool:
    """True in Blender's UI; False in background runs (batch, scripts, the bpy module)."""
    return not bpy.app.background


def wanted(context) -> bool:
    """Whether an import in this session should start the engine: in the UI, with the preference on."""
    from ..preferences import settings

    return interactive() and settings(context).start_engine_on_import


def preload_scene(scene: bpy.types.Scene, device: str | None = None,
                  client: engine_client.EngineClient | None = None) -> int | None:
    """Start the engine if needed and send it the "preload" of the scene's Gaussian objects (the ones a render
    of the scene sends, in its order, so the render finds them on the device); returns at once with the
    request's id (None when the scene has none). A failure to start is the panel's line, not an error: the
    request that needs the engine reports it properly."""
    global _state
    from ..render.render_request import gaussian_objects, object_sources

    objects = gaussian_objects(scene)
    if not objects:
        return None
    names = tuple(obj.name for obj in objects)
    try:
        client = client or engine_client.get_client()
        started = client.running
        entries, rows = object_sources(objects)
        request_id = client.submit("preload", {"objects": entries,
                                               "device": device or engine_client.preferred_device()}, rows)
    except AnimateGaussiansError as error:
        _state = PreloadState(objects=names, phase="failed", message=error.user_message())
        _redraw()
        return None
    _state = PreloadState(request_id=request_id, objects=names, client=client,
                          phase="loading" if started and client.hello is not None else "starting")
    if not bpy.app.timers.is_registered(poll):   # persistent: the request is followed to its end across file loads
        bpy.app.timers.register(poll, first_interval=POLL_SECONDS, persistent=True)
    _redraw()
    return request_id


def poll() -> float | None:
    """The timer: follow the preload until it ends (then stop), redrawing the panel when its line changes."""
    st = _state
    if st.client is None or st.request_id is None or st.finished:
        return None
    if st.advance(st.client.hello is not None, st.client.poll(st.request_id)):
        _redraw()
    return None if st.finished else POLL_SECONDS


def _redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in (wm.windows if wm is not None else []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def draw(layout) -> None:
    """The main panel's line about the engine's start after the last import (nothing when there was none, or
    when its objects are not in the open file)."""
    line = _state.line()
    if line is not None and all(name in bpy.data.objects for name in _state.objects):
        layout.label(text=line[0], icon=line[1])


def unregister() -> None:
    """Stop following the preload (the add-on's unregister then stops the engine itself)."""
    global _state
    if bpy.app.timers.is_registered(poll):
        bpy.app.timers.unregister(poll)
    _state = PreloadState()
