"""The batch CLI (DESIGN.md "Batch CLI"): the add-on's steps in order, from the command line, with a JSON report.

    blender -b [scene.blend] -P blender_addon/batch.py -- [options]
    python blender_addon/batch.py [--blend scene.blend] [options]      # the same, with the bpy module

Each step is (name, predicate on the arguments, function of the run's context) and calls what the operators
call (import_ply, segment_blocking, animate_blocking, ...); a new step goes into STEPS at its place. The command
line is cli/batch_args.py, the report cli/batch_report.py. A failure exits non-zero with one line on stderr and
writes no .blend.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

if __package__ in (None, ""):
    # Run as a script file (python batch.py / blender -P batch.py): import the add-on as package `blender_addon`
    # from the repository root, and the shared `engine` beside it. `python batch.py` also puts this folder first
    # on sys.path, where the add-on's packages (io, render, ...) would pass for top-level modules: take it off.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from blender_addon import notices  # noqa: E402
from blender_addon.cli import batch_args, batch_report  # noqa: E402
from blender_addon.cli.batch_args import PROG, BatchError, build_parser  # noqa: E402,F401 (re-exported)
from blender_addon.cli.batch_progress import say  # noqa: E402
from blender_addon.cli.batch_report import one_line  # noqa: E402
from engine.errors import AnimateGaussiansError, InputFileError  # noqa: E402
from engine.formats.sequence import is_sequence_spec  # noqa: E402


class NotAvailableError(BatchError):
    """An option of a later version."""

    hint = "leave the option out; this version of Animate Gaussians does not have it yet"


@dataclass
class BatchContext:
    """What steps share: the parsed arguments, what was made, and the report being built."""

    args: argparse.Namespace
    objects: list[str] = field(default_factory=list)       # names of objects made, in order
    files: list[str] = field(default_factory=list)         # files written
    steps: list[dict] = field(default_factory=list)        # {"name", "seconds"}
    errors: list[str] = field(default_factory=list)
    last_segment: str | None = None                        # the object --animate works on by default
    views: dict | None = None                              # segmentation views from --images (None: orbit)
    segments: list[dict] = field(default_factory=list)     # {"name", "source", "query", "method", ...} per --select
    queries: list[dict] = field(default_factory=list)      # per --query: text, span (frames), Gaussians matched
    last_dynamic: str | None = None                        # the object --dynamic made (what --query asks)
    animations: list[dict] = field(default_factory=list)   # per --animate: object, motion, frames, engine info

    @property
    def gaussian_object(self):
        """The last Gaussian object made (or, in a loaded .blend, the active/first one)."""
        import bpy
        from blender_addon.io.gaussian_object import is_gaussian_object

        for name in reversed(self.objects):
            obj = bpy.data.objects.get(name)
            if is_gaussian_object(obj):
                return obj
        active = bpy.context.view_layer.objects.active
        if is_gaussian_object(active):
            return active
        obj = next((o for o in bpy.context.scene.objects if is_gaussian_object(o)), None)
        if obj is None:
            raise BatchError("there is no Gaussian object to work on", hint="add --ply PATH")
        return obj


# ---------------------------------------------------------------------------------------------------- steps

def step_open_blend(ctx: BatchContext) -> None:
    """Open the .blend; one that Blender cannot read is the user's input error, not ours (Blender's own
    message goes into ours instead of stdout)."""
    import bpy
    from blender_addon.cli.batch_progress import captured_stdout

    path = Path(ctx.args.blend).resolve()
    with captured_stdout() as said:
        try:
            bpy.ops.wm.open_mainfile(filepath=str(path))
        except RuntimeError as error:
            failure = error
        else:
            return
    detail = one_line(str(failure).replace("Error:", "")) or one_line(said())
    raise InputFileError(f"--blend: Blender cannot read {path}: {detail}",
                         hint="check that it is a .blend saved by Blender 4.2 or later and not truncated")


def step_import_ply(ctx: BatchContext) -> None:
    import bpy
    from blender_addon.io import gaussian_object, ply_sequence
    from blender_addon.preferences import settings

    if is_sequence_spec(ctx.args.ply):   # a folder or numbered pattern of .ply frames: one animated object
        obj, _ = ply_sequence.import_sequence(ctx.args.ply, bpy.context)
        ctx.last_dynamic = obj.name
    else:
        obj = gaussian_object.import_ply(ctx.args.ply, bpy.context,
                                         points_only_threshold=settings().points_only_threshold)
    ctx.objects.append(obj.name)


def step_import_dynamic(ctx: BatchContext) -> None:
    import bpy
    from blender_addon.io import dynamic_import

    obj = dynamic_import.import_dynamic(ctx.args.dynamic, bpy.context)
    ctx.objects.append(obj.name)
    ctx.last_dynamic = obj.name


def step_query(ctx: BatchContext) -> None:
    """4D query on the dynamic object (--dynamic, else the scene's first one), else on the scene's animated
    Gaussian objects, with the --query-* thresholds; the answer is highlighted and marked on the timeline, and
    reported under "queries" (with the thresholds the engine used)."""
    import bpy
    from blender_addon.io import dynamic_import
    from blender_addon.query4d import query4d_answer, query4d_request

    scene = bpy.context.scene
    obj = bpy.data.objects.get(ctx.last_dynamic) if ctx.last_dynamic else None
    if obj is None:
        obj = next((o for o in scene.objects if dynamic_import.is_dynamic(o)), None)
    answer = query4d_request.query_blocking(scene, obj, ctx.args.query, device=ctx.args.device or "auto",
                                            report=say, thresholds=batch_args.query_thresholds(ctx.args))
    query4d_answer.apply_answer(scene, answer)
    if answer.span_frames is None:
        say(f"query: {answer.no_match_message()}")
    ctx.queries.append(answer.summary())


def step_capture_images(ctx: BatchContext) -> None:
    from blender_addon.segment.segment_query import views_for_capture

    ctx.views = views_for_capture(Path(ctx.args.images).resolve())


def step_select(ctx: BatchContext) -> None:
    """Segment from the active camera's view (render resolution), as the Segment tools do from the viewport's,
    and split the selection into its own object. Everything is asked and checked before the scene changes."""
    import bpy
    from blender_addon.render.camera_data import scene_camera_view
    from blender_addon.segment import object_subsets, segment_query, segment_train
    from engine.errors import CameraError

    args, scene = ctx.args, bpy.context.scene
    obj = ctx.gaussian_object
    if scene.camera is None:
        raise CameraError("--select needs a camera: the scene has no active camera",
                          hint="open a .blend with a camera (--blend), or set the scene's camera")
    mode, where = (("click", {"point": args.select_point}) if args.select_point is not None else
                   ("box", {"box": args.select_box}) if args.select_box is not None else ("text", {"text": args.select}))
    query = segment_query.query_on_view(scene, obj, mode, *scene_camera_view(scene), views=ctx.views, **where)
    obj = bpy.data.objects[query.object_name]      # for a click or box, the object seen there
    granularity = 0.5 if args.granularity is None else args.granularity
    method = "auto"
    if args.train_features:
        segment_train.train_blocking(obj, args.device or "auto", ctx.views, args.sam_model, report=say)
        method = "saga"
    options = {"sam_variant": args.sam_model} if args.sam_model else {}
    mask, answer = segment_query.segment_blocking(obj, query, granularity, method, device=args.device or "auto",
                                                  report=say, options=options)
    segment = object_subsets.split_selected(obj, mask, args.segment_name or "segment")
    ctx.objects.append(segment.name)
    ctx.last_segment = segment.name
    ctx.segments.append({"name": segment.name, "source": obj.name, "query": query.describe(),
                         "granularity": granularity, "method": answer.get("method"),
                         "gaussians": int(mask.sum())})


def step_animate(ctx: BatchContext) -> None:
    """Animate --target (else the last segment, else the Gaussian object) from the prompt; keys on it, or on
    its rig (then the armature is reported too)."""
    import bpy
    from blender_addon.animate.animate_ops import AnimateOptions, animate_blocking, scene_fps

    args, scene = ctx.args, bpy.context.scene
    name = args.target or ctx.last_segment
    obj = bpy.data.objects.get(name) if name else ctx.gaussian_object
    if obj is None:
        raise BatchError(f"--target: there is no object named {name!r}", hint="give the name of a Gaussian object")
    options = AnimateOptions(prompt=args.animate, generator=args.generator or "preset",
                             frames=args.frames if args.frames is not None else 48,
                             fps=args.fps if args.fps is not None else scene_fps(scene),
                             video_path=str(Path(args.video).resolve()) if args.video else "",
                             motion=args.motion or "auto", handles=args.handles or 8,
                             device=args.device or "auto", options=batch_args.generator_options(args))
    summary = animate_blocking(scene, obj, options, report=say)
    ctx.animations.append({"name": summary.object_name, "armature": summary.armature_name,
                           "motion": summary.motion, "frames": summary.frames, "keyframes": summary.keyframes,
                           "lifting": dict(zip(("effort", "smoothness"), batch_args.lift_settings(args))),
                           "info": summary.info})
    for made in (summary.object_name, summary.armature_name):
        if made and made not in ctx.objects:
            ctx.objects.append(made)


def step_render(ctx: BatchContext) -> None:
    import bpy
    from blender_addon.cli.batch_progress import RenderEstimate
    from blender_addon.render.camera_data import render_resolution
    from blender_addon.render.render_splats import render_splats_blocking

    scene = bpy.context.scene
    resolution = tuple(ctx.args.resolution) if ctx.args.resolution else None
    estimate = RenderEstimate(say, resolution is not None, resolution or render_resolution(scene))

    def progress(text: str) -> None:
        say(text)
        estimate(0.0, text)

    files = render_splats_blocking(scene, Path(ctx.args.render).resolve(), resolution=resolution,
                                   device=ctx.args.device, report=progress, write_video=not ctx.args.no_video,
                                   frame_format=ctx.args.render_frames or "png")
    ctx.files.extend(str(Path(f).resolve()) for f in files)


def step_export_ply(ctx: BatchContext) -> None:
    from blender_addon.io import gaussian_object

    path = gaussian_object.export_ply(ctx.gaussian_object, ctx.args.export_ply)
    ctx.files.append(str(Path(path).resolve()))


def step_export(ctx: BatchContext) -> None:
    from blender_addon.io import splat_export

    ctx.files.extend(str(Path(p).resolve()) for p in splat_export.export_target(ctx.gaussian_object, ctx.args.export))


def step_save(ctx: BatchContext) -> None:
    import bpy

    path = Path(ctx.args.save).resolve()
    result = bpy.ops.wm.save_as_mainfile(filepath=str(path), check_existing=False)
    if "FINISHED" not in result or not path.exists():
        raise BatchError(f"Blender could not save {path}", hint="check the folder is writable")
    ctx.files.append(str(path))


@dataclass(frozen=True)
class Step:
    name: str
    wanted: Callable[[argparse.Namespace], bool]
    run: Callable[[BatchContext], None] | None      # None: the option exists but is not available yet
    options: str                                    # the option(s) that ask for it, for messages


# In DESIGN order. A step whose `run` is None fails before anything is done, naming its option.
STEPS: list[Step] = [
    Step("open_blend", lambda a: a.blend is not None, step_open_blend, "--blend"),
    Step("import_ply", lambda a: a.ply is not None, step_import_ply, "--ply"),
    Step("import_dynamic", lambda a: a.dynamic is not None, step_import_dynamic, "--dynamic"),
    Step("capture_images", lambda a: a.images is not None, step_capture_images, "--images"),
    Step("select", lambda a: any(v is not None for v in (a.select, a.select_point, a.select_box)), step_select,
         "--select/--select-point/--select-box"),
    Step("animate", lambda a: a.animate is not None, step_animate, "--animate"),
    Step("query", lambda a: a.query is not None, step_query, "--query"),
    Step("render", lambda a: a.render is not None, step_render, "--render"),
    Step("export_ply", lambda a: a.export_ply is not None, step_export_ply, "--export-ply"),
    Step("export", lambda a: a.export is not None, step_export, "--export"),
    Step("save", lambda a: a.save is not None, step_save, "--save"),
]


# ------------------------------------------------------------------------------------------------- arguments

def script_arguments(argv: Sequence[str]) -> list[str]:
    """The arguments meant for us: after `--` (blender -P form, or python form if given), else all of them."""
    argv = list(argv)
    return argv[argv.index("--") + 1:] if "--" in argv else argv[1:]


def validate(args: argparse.Namespace) -> list[Step]:
    """The steps to run, after refusing everything that cannot be done (before any step runs)."""
    wanted = [s for s in STEPS if s.wanted(args)]
    for step in wanted:
        if step.run is None:
            raise NotAvailableError(f"{step.options} is not available yet in this version")
    batch_args.check_arguments(args, {s.name for s in wanted})
    if not wanted:
        raise BatchError("nothing to do: give at least one step option such as --ply PATH")
    return wanted


# ------------------------------------------------------------------------------------------------------- main

def _register_addon() -> bool:
    """Register the add-on unless Blender already has it; True when this run registered it."""
    import bpy
    import blender_addon

    # Inside Blender the installed extension may already provide the operators; do not register twice.
    if not blender_addon.is_registered() and not hasattr(bpy.types, "GAUSSIANS_OT_import_ply"):
        blender_addon.register()
        return True
    return False


def _unregister_addon() -> None:
    # bpy 4.2 (the module) crashes at interpreter exit (SIGSEGV, exit 139) while an operator class is still
    # registered: its exit handler frees the operator types after Python began finalising. Leave nothing behind.
    import blender_addon
    if blender_addon.is_registered():
        blender_addon.unregister()


def _start_scene(args: argparse.Namespace) -> None:
    """Without a .blend, start from an empty scene rather than Blender's default cube, light and camera."""
    import bpy
    if args.blend is None and not bpy.data.filepath:
        bpy.ops.wm.read_homefile(use_empty=True)


def run(argv: Sequence[str]) -> int:
    """Run the batch; returns the exit status (0 ok, 1 failed, 2 bad command line)."""
    try:
        args = build_parser().parse_args(list(argv))
        steps = validate(args)
    except AnimateGaussiansError as error:
        message = one_line(error.user_message())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        batch_report.command_line_report(argv, message)
        return 2
    notices.require(batch_args.required_codes(args))
    ctx = BatchContext(args=args)
    status = 0
    registered = False
    try:
        registered = _register_addon()
        _start_scene(args)
        for step in steps:
            start = time.perf_counter()
            seen = len(batch_report.warnings())
            try:
                step.run(ctx)
            finally:
                ctx.steps.append({"name": step.name, "seconds": round(time.perf_counter() - start, 4)})
                for w in batch_report.warnings()[seen:]:
                    say(f"warning: {one_line(w['message'])}")
    except (AnimateGaussiansError, OSError) as error:
        message = error.user_message() if isinstance(error, AnimateGaussiansError) else f"{type(error).__name__}: {error}"
        ctx.errors.append(one_line(message))
        status = 1
    except Exception as error:   # a bug: still one line, the traceback only on request
        ctx.errors.append(one_line(f"internal error {type(error).__name__}: {error} (please report it; set "
                                   "ANIMATE_GAUSSIANS_DEBUG=1 for the traceback)"))
        if os.environ.get("ANIMATE_GAUSSIANS_DEBUG"):
            traceback.print_exc()
        status = 1
    if args.report is not None:
        try:
            batch_report.write_report(ctx)
            ctx.files.append(str(Path(args.report).resolve()))
        except OSError as error:
            ctx.errors.append(one_line(f"cannot write the report: {error}"))
            status = status or 1
    if registered:
        _unregister_addon()
    if ctx.errors:
        print(f"{PROG}: error: {ctx.errors[0]}", file=sys.stderr)
    return status


def main() -> None:
    sys.exit(run(script_arguments(sys.argv)))


if __name__ == "__main__":
    main()
