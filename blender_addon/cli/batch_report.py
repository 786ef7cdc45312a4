"""The batch CLI's JSON report (--report): each object made, segments, animations, queries, files written,
warnings, the engine's backend, seconds per step and errors. Written on every failure too, a refused command line
included, so a script always learns what happened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .. import notices
from ..engine_link import engine_client


def one_line(text: str) -> str:
    """`text` on one line (a report entry or the one error line on stderr)."""
    return " ".join(str(text).split())


def warnings() -> list[dict]:
    """Every fallback the engine (or the add-on) took in this run: {"source", "code", "message"}."""
    return notices.history()


def _keyframe_count(obj) -> tuple[int, list[float] | None]:
    anim = obj.animation_data
    action = anim.action if anim else None
    if action is None:
        return 0, None
    fcurves = list(getattr(action, "fcurves", []) or [])
    if not fcurves and hasattr(action, "layers"):       # Blender 4.4+ layered actions
        for layer in action.layers:
            for strip in layer.strips:
                for bag in getattr(strip, "channelbags", []):
                    fcurves.extend(bag.fcurves)
    return sum(len(fc.keyframe_points) for fc in fcurves), [float(f) for f in action.frame_range]


def build_report(ctx) -> dict:
    """The report of a run (`ctx`: the batch's BatchContext)."""
    import bpy

    from ..io.gaussian_object import gaussian_count, is_gaussian_object, object_layout

    objects = []
    for name in ctx.objects:
        obj = bpy.data.objects.get(name)
        if obj is None:
            continue
        entry: dict = {"name": obj.name}
        if is_gaussian_object(obj):
            entry["gaussians"] = gaussian_count(obj)
            entry["sh_degree"] = object_layout(obj).sh_degree
        entry["keyframes"], entry["frame_range"] = _keyframe_count(obj)
        objects.append(entry)
    return {"ok": not ctx.errors, "objects": objects, "segments": ctx.segments, "queries": ctx.queries,
            "animations": ctx.animations,
            "files": ctx.files, "warnings": warnings(), "engine_backend": engine_client.current_backend(),
            "seconds": {s["name"]: s["seconds"] for s in ctx.steps}, "steps": ctx.steps, "errors": ctx.errors}


def write_report(ctx) -> None:
    path = Path(ctx.args.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        report = build_report(ctx)
    except Exception as error:   # the report must still say what went wrong
        report = {"ok": False, "objects": [], "files": ctx.files, "steps": ctx.steps, "warnings": warnings(),
                  "engine_backend": engine_client.current_backend(),
                  "seconds": {s["name"]: s["seconds"] for s in ctx.steps},
                  "errors": ctx.errors + [f"report: {error}"]}
    path.write_text(json.dumps(report, indent=2))


def command_line_report(argv: Sequence[str], message: str) -> None:
    """The report of a run refused before it started (the command line is wrong), when --report is given."""
    argv = list(argv)
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--report=")), None)
    if path is None and "--report" in argv[:-1]:
        path = argv[argv.index("--report") + 1]
    if not path:
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"ok": False, "objects": [], "segments": [], "queries": [], "files": [],
                                          "warnings": [], "seconds": {}, "steps": [], "errors": [message]},
                                         indent=2))
    except OSError:
        pass   # the error line on stderr already says what is wrong
