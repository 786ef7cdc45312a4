"""The batch CLI's command line: the options, the ones that only qualify a step, and their checks.

Kept apart from batch.py (the steps) so both stay small. Pure argparse: no bpy, no torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine import fallbacks
from engine.errors import AnimateGaussiansError, InputFileError
from engine.formats.detect import export_format
from engine.formats.sequence import is_sequence_spec, is_sequence_target
from engine.motion.lift_settings import (LIFT_EFFORTS, SMOOTHNESS_MAX, LiftingError, check_lift_settings,
                                         lifting_options)
from engine.query4d.thresholds import THRESHOLDS

PROG = "batch.py"
MOTIONS = ("auto", "rigid", "nonrigid")
SAM_MODELS = ("vit_b", "vit_l", "vit_h")


class BatchError(AnimateGaussiansError):
    """The command line asks for something this version cannot do, or is inconsistent."""

    hint = "run with --help for the options"


_QUERY = "query_"   # the 4D query's thresholds are options --query-<threshold>, attributes query_<threshold>

# Options that only qualify a step: given without that step, they would do nothing, so they are refused.
MODIFIERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "segment_name": ("--segment-name", ("select",)),
    "granularity": ("--granularity", ("select",)),
    "sam_model": ("--sam-model", ("select",)),
    "train_features": ("--train-features", ("select",)),
    "target": ("--target", ("animate",)),
    "generator": ("--generator", ("animate",)),
    "video": ("--video", ("animate",)),
    "frames": ("--frames", ("animate",)),
    "fps": ("--fps", ("animate",)),
    "model": ("--model", ("animate",)),
    "steps": ("--steps", ("animate",)),
    "seed": ("--seed", ("animate",)),
    "offload": ("--offload", ("animate",)),
    "depth_model": ("--depth-model", ("animate",)),
    "motion": ("--motion", ("animate",)),
    "handles": ("--handles", ("animate",)),
    "lift_effort": ("--lift-effort", ("animate",)),
    "smoothness": ("--smoothness", ("animate",)),
    "resolution": ("--resolution", ("render",)),
    "render_frames": ("--render-frames", ("render",)),
    "no_video": ("--no-video", ("render",)),
    "device": ("--device", ("import_dynamic", "capture_images", "select", "animate", "query", "render")),
    **{_QUERY + name: (t.option, ("query",)) for name, t in THRESHOLDS.items()},
}
# Options that only mean something for the model generators.
_DIFFUSERS_ONLY = (("model", "--model"), ("steps", "--steps"), ("offload", "--offload"))


def require_option(code: str) -> str:
    """The batch option that refuses the fallback `code` (`--require-depth` for "no_depth", ...)."""
    return fallbacks.CODES[code]


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, our error type, instead of usage + exit 2
        raise BatchError(message)


def _number_or_auto(text: str) -> float | str:
    """--query-spatial-threshold's value: a number, or "auto" (the engine's own cut, as leaving it out)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Animate Gaussians in batch: import, segment, animate, render, export.")
    p.add_argument("--blend", metavar="PATH", help="open this .blend first (its active camera is used below)")
    p.add_argument("--ply", metavar="PATH",
                   help="import a splat scene: .ply, .compressed.ply, .splat, .spz, .sog or a SOG folder (format from "
                        "the content), or a PLY sequence (a folder of .ply frames or a frame_####.ply pattern)")
    p.add_argument("--dynamic", metavar="PATH", help="import a Dynamic 3D Gaussians params.npz sequence")
    p.add_argument("--images", metavar="DIR", help="the capture (COLMAP folder) of the imported scene")
    p.add_argument("--select", metavar="TEXT", help="segment by text")
    p.add_argument("--select-point", nargs=2, type=float, metavar=("X", "Y"),
                   help="segment by a click at pixel (X, Y) of the active camera's image; the Gaussian object "
                        "seen in front at that pixel is the one segmented")
    p.add_argument("--select-box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"),
                   help="segment by a box in the active camera's image")
    p.add_argument("--segment-name", metavar="NAME", help="name of the segment object (default: segment)")
    p.add_argument("--granularity", type=float, metavar="G",
                   help="for --select*: from a small part (0) to the whole object (1); default 0.5")
    p.add_argument("--sam-model", choices=SAM_MODELS,
                   help="for --select*: the SAM checkpoint to use (default: the largest one on this machine)")
    p.add_argument("--train-features", action="store_true", default=None,
                   help="for --select*: train SAGA features for the scene first (minutes on a GPU; needs SAM), "
                        "then select with them")
    p.add_argument("--animate", metavar="TEXT", help="animate the last segment (or --target) from a prompt")
    p.add_argument("--target", metavar="NAME", help="the object --animate animates")
    p.add_argument("--generator", choices=("preset", "video", "diffusers", "runway", "kling"),
                   help="motion source for --animate (default: preset)")
    p.add_argument("--video", metavar="PATH", help="a motion video for --generator video")
    p.add_argument("--frames", type=int, metavar="N", help="frames of motion for --animate")
    p.add_argument("--fps", type=float, metavar="F", help="frames per second for --animate")
    p.add_argument("--model", metavar="ID",
                   help="for --generator diffusers: the video model (a profile id of presets/models or a unique "
                        "start of one: ltx, cogvideox, svd, wan2.1-i2v, wan2.1-flf2v); default ltx-video-0.9.5, "
                        "which fits a 24 GB GPU")
    p.add_argument("--steps", type=int, metavar="N", help="for --generator diffusers: denoising steps "
                                                          "(default: the model's)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed of the motion generator (default 0)")
    p.add_argument("--offload", action="store_true", default=None,
                   help="for --generator diffusers: keep the model in CPU memory and move each part to the GPU "
                        "when it runs (slower; for GPUs smaller than the model)")
    p.add_argument("--depth-model", metavar="ID", help="the depth model that lifts the video to 3D "
                                                       "(default: the engine's; see docs/motion.md)")
    p.add_argument("--motion", choices=MOTIONS, help="rigid (object keys), nonrigid (an armature) or auto "
                                                     "(default: auto)")
    p.add_argument("--handles", type=int, metavar="N", help="bones of the non-rigid rig (default 8)")
    p.add_argument("--lift-effort", choices=tuple(LIFT_EFFORTS),
                   help="solver steps for lifting the video's motion to 3D: fast, default or thorough "
                        "(several times the time, for hard videos)")
    p.add_argument("--smoothness", type=float, metavar="F",
                   help="how strongly the lifted motion is held to a steady path: 1 the default, 0 follows every "
                        f"frame of the video, up to {SMOOTHNESS_MAX:g} for a shaky video")
    p.add_argument("--query", metavar="TEXT",
                   help="4D text query on the --dynamic object, else on the animated scene: when and which "
                        "Gaussians (extractor: env ANIMATE_GAUSSIANS_QUERY4D_EXTRACTOR, default auto)")
    for t in THRESHOLDS.values():
        auto = t.name == "spatial_threshold"
        p.add_argument(t.option, type=_number_or_auto if auto else float, metavar="X|auto" if auto else "X",
                       help=f"for --query: {t.description} ({t.low:g} to {t.high:g}; default {t.default_text})")
    p.add_argument("--render", metavar="DIR", help="render splat frames from the active camera to DIR")
    p.add_argument("--resolution", nargs=2, type=int, metavar=("W", "H"), help="render resolution")
    p.add_argument("--render-frames", choices=("png", "none"),
                   help="the frame files --render writes: png (default) or none (the MP4 only)")
    p.add_argument("--no-video", action="store_true", default=None, help="--render writes no render.mp4")
    p.add_argument("--export-ply", metavar="PATH", help="write the imported object back to a 3DGS .ply")
    p.add_argument("--export", metavar="PATH",
                   help="write the object in the format of PATH's extension (.ply, .compressed.ply, .splat, .spz), or "
                        "as a PLY sequence of the frame range to a folder (ending in /) or a frame_####.ply pattern")
    p.add_argument("--save", metavar="PATH", help="save the .blend")
    p.add_argument("--report", metavar="PATH", help="write a JSON summary of the run (its folder is created)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), help="where the engine runs (default: auto)")
    for code, option in fallbacks.CODES.items():
        p.add_argument(option, dest=_dest(option), action="store_true",
                       help=f"fail instead of falling back ({code})")
    return p


def required_codes(args: argparse.Namespace) -> list[str]:
    """The fallback codes the run refuses (from the --require-* options)."""
    return [code for code, option in fallbacks.CODES.items() if getattr(args, _dest(option), False)]


def check_arguments(args: argparse.Namespace, step_names: set[str]) -> None:
    """Checks of values and combinations (the steps themselves are checked by batch.validate)."""
    for attr, (option, needs) in MODIFIERS.items():
        if getattr(args, attr) is not None and not step_names.intersection(needs):
            raise BatchError(f"{option} only applies to {_step_options(needs)}, which is not given")
    if sum(v is not None for v in (args.select, args.select_point, args.select_box)) > 1:
        raise BatchError("give one of --select, --select-point and --select-box")
    if args.render_frames == "none" and args.no_video:
        raise BatchError("--render-frames none with --no-video leaves --render nothing to write")
    if args.granularity is not None and not 0.0 <= args.granularity <= 1.0:
        raise BatchError(f"--granularity must be between 0 and 1, got {args.granularity:g}")
    for attr, option in _DIFFUSERS_ONLY:
        if getattr(args, attr) is not None and (args.generator or "preset") != "diffusers":
            raise BatchError(f"{option} only applies to --generator diffusers")
    if args.steps is not None and args.steps < 1:
        raise BatchError(f"--steps must be at least 1, got {args.steps}")
    if args.smoothness is not None:
        try:
            check_lift_settings("default", args.smoothness)
        except LiftingError as exc:
            raise BatchError(f"--smoothness: {exc}") from None
    for name, t in THRESHOLDS.items():
        value = getattr(args, _QUERY + name)
        if value is not None and value != "auto":
            t.check(value, t.option)   # QueryThresholdError: the range, what the threshold does, its default
    if args.handles is not None and not 2 <= args.handles <= 64:
        raise BatchError(f"--handles must be between 2 and 64, got {args.handles}")
    if args.motion == "rigid" and args.handles is not None:
        raise BatchError("--handles only applies to --motion nonrigid or auto")
    if args.model is not None:
        from engine.motion.model_profiles import resolve_model_id
        args.model = resolve_model_id(args.model, error=BatchError)
    for option, value, kind in (("--blend", args.blend, "file"), ("--ply", args.ply, "splats"),
                                ("--dynamic", args.dynamic, "file"), ("--images", args.images, "dir"),
                                ("--video", args.video, "file")):
        if value is None or kind == "splats" and is_sequence_spec(value):   # a pattern: the import names what is missing
            continue
        path = Path(value)
        if not path.exists():
            raise InputFileError(f"{option}: {value} does not exist")
        if kind == "file" and not path.is_file():
            raise InputFileError(f"{option}: {value} is not a file")
        if kind == "dir" and not path.is_dir():
            raise InputFileError(f"{option}: {value} is not a folder")
    if args.export is not None and not is_sequence_target(args.export):
        export_format(args.export)   # refuses an unknown extension before anything runs
    for option, value in (("--export-ply", args.export_ply), ("--save", args.save)):
        if value is not None and not Path(value).resolve().parent.is_dir():
            raise InputFileError(f"{option}: the folder of {value} does not exist", hint="create it first")


def _step_options(needs: tuple[str, ...]) -> str:
    names = {"select": "--select/--select-point/--select-box", "animate": "--animate", "render": "--render",
             "import_dynamic": "--dynamic", "capture_images": "--images", "query": "--query"}
    return " or ".join(names.get(n, n) for n in needs)


def generator_options(args: argparse.Namespace) -> dict:
    """The animate request's generator options from the command line (only those given)."""
    options: dict = {}
    for attr in ("model", "steps", "seed", "offload", "depth_model"):
        value = getattr(args, attr)
        if value is not None:
            options[attr] = value
    lifting = lifting_options(*lift_settings(args))
    if lifting:
        options["lifting"] = lifting
    if args.generator == "diffusers" and "model" not in options:
        from engine.motion.model_profiles import DEFAULT_24GB_MODEL
        options["model"] = DEFAULT_24GB_MODEL
    return options


def lift_settings(args: argparse.Namespace) -> tuple[str, float]:
    """(effort, smoothness) for the animate request and the report: --lift-effort and --smoothness, or their
    defaults."""
    return args.lift_effort or "default", 1.0 if args.smoothness is None else float(args.smoothness)


def query_thresholds(args: argparse.Namespace) -> dict[str, float | str]:
    """The query request's thresholds from the command line (only those given; "auto" for the spatial one is
    the engine's default, left for build_query_request to leave out)."""
    return {name: getattr(args, _QUERY + name) for name in THRESHOLDS if getattr(args, _QUERY + name) is not None}
