"""Procedural motion presets: JSON data in presets/motion/, matched from a prompt, scaled to the object and
kept resting on what is below it. numpy only (CLIP matching is used when helper models are present).

A preset is a list of tracks (translate / rotate / roll / drop) with named curves; lengths are in object
sizes, angles in degrees (or turns), directions named relative to the camera on the ground plane.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data_files import presets_dir
from .generators.base import GeneratorError

PRESET_DIR = presets_dir() / "motion"
DIRECTIONS = ("up", "down", "right", "left", "forward", "back")
OPPOSITE = {"up": "down", "down": "up", "right": "left", "left": "right", "forward": "back", "back": "forward"}
TRACK_TYPES = ("translate", "rotate", "roll", "drop")
# Points below the support by less than this (object sizes) still count as resting on it.
SUPPORT_TOLERANCE = 0.02
# CLIP text-text cosine a prompt must reach with a preset's phrases to be taken as asking for it (open_clip
# ViT-B text embeddings: paraphrases score ~0.85-0.95, unrelated phrases of the same shape ~0.6-0.75).
CLIP_MIN_SIMILARITY = 0.8


@dataclass
class Preset:
    name: str
    aliases: list[str]
    description: str
    duration_s: float
    parameters: dict[str, float]
    tracks: list[dict]
    path: Path | None = None


@dataclass
class ObjectFrame:
    """Where the object is and which way is which: unit axes (file frame) and the robust box in them."""

    up: np.ndarray
    right: np.ndarray
    forward: np.ndarray
    center: np.ndarray        # box centre, file frame
    extent: np.ndarray        # (3,) box size along (right, up, forward)
    size: float               # longest box edge: the unit of preset lengths
    bottom: float             # lowest up-coordinate of the segment (exact: the no-sinking reference)
    support: float            # up-coordinate of what it rests on (≤ bottom when it rests or floats)

    def axis(self, name: str) -> np.ndarray:
        sign = -1.0 if name in ("down", "left", "back") else 1.0
        base = {"up": self.up, "down": self.up, "right": self.right, "left": self.right,
                "forward": self.forward, "back": self.forward}[name]
        return sign * base

    def half(self, name: str) -> float:
        return 0.5 * float(self.extent[{"right": 0, "left": 0, "up": 1, "down": 1, "forward": 2, "back": 2}[name]])


@dataclass
class PresetMatch:
    preset: Preset
    start: int                              # character position in the prompt (-1: not from the text)
    alias: str
    directions: dict[str, str] = field(default_factory=dict)   # remap of named directions from the prompt
    score: float = 1.0


# ---------------------------------------------------------------- loading

def _validate(data: dict, path: Path) -> Preset:
    where = path.name
    for key in ("name", "aliases", "tracks"):
        if key not in data:
            raise ValueError(f"{where}: missing {key!r}")
    params = {k: float(v) for k, v in data.get("parameters", {}).items()}
    for track in data["tracks"]:
        if track.get("type") not in TRACK_TYPES:
            raise ValueError(f"{where}: track type {track.get('type')!r} is not one of {TRACK_TYPES}")
        curve = track.get("curve", "linear")
        if curve not in CURVES:
            raise ValueError(f"{where}: unknown curve {curve!r} (known: {', '.join(sorted(CURVES))})")
        for key in ("direction", "axis", "tilt_toward"):
            if key in track and track[key] not in DIRECTIONS:
                raise ValueError(f"{where}: {key} {track[key]!r} is not one of {DIRECTIONS}")
        for value in [track.get(k) for k in ("distance", "angle")] + list(track.get("curve_args", {}).values()) + \
                list(track.get("pivot_offset", {}).values()):
            if isinstance(value, str) and value not in params:
                raise ValueError(f"{where}: {value!r} names no parameter of the preset")
    return Preset(name=str(data["name"]), aliases=[a.lower() for a in data["aliases"]],
                  description=str(data.get("description", "")), duration_s=float(data.get("duration_s", 2.0)),
                  parameters=params, tracks=list(data["tracks"]), path=path)


def load_presets(directory: str | Path = PRESET_DIR) -> dict[str, Preset]:
    """Every preset in the folder, by name (a broken file raises, naming the file and the problem)."""
    presets: dict[str, Preset] = {}
    for path in sorted(Path(directory).glob("*.json")):
        preset = _validate(json.loads(path.read_text()), path)
        presets[preset.name] = preset
    return presets


# ---------------------------------------------------------------- prompt matching

_DIRECTION_WORDS = [  # (regex, named direction the preset's "right" becomes)
    (r"\b(to the )?left\b|\bleftward", "left"),
    (r"\b(to the )?right\b|\brightward", "right"),
    (r"\btoward(s)? (the )?(camera|viewer|me|us)\b|\bcloser\b|\bat the camera\b", "back"),
    (r"\baway( from (the )?(camera|viewer|me|us))?\b|\bbackward(s)?\b|\binto the scene\b", "forward"),
]


def _direction_remap(text: str) -> dict[str, str]:
    """A prompt's direction words turn the preset's horizontal direction ("right") into the one asked for;
    the other ground axis turns with it, so tilts and pivots stay consistent."""
    turns = {"left": {"right": "left", "left": "right", "forward": "back", "back": "forward"},
             "back": {"right": "back", "left": "forward", "forward": "right", "back": "left"},
             "forward": {"right": "forward", "left": "back", "forward": "left", "back": "right"}}
    for pattern, target in _DIRECTION_WORDS:
        if re.search(pattern, text):
            return turns.get(target, {})
    return {}


def match_prompt(prompt: str, presets: dict[str, Preset], use_clip: bool = True, notes: list[str] | None = None,
                 min_similarity: float = CLIP_MIN_SIMILARITY) -> list[PresetMatch]:
    """The presets a prompt asks for, in the order it names them ("slides right and tips over" → slide,
    tip_over). Aliases match whole words, longest first; with no alias in the text, CLIP text similarity
    (engine.motion.text_similarity, when its model is present) picks the closest preset if it is at least
    `min_similarity`. Why CLIP found nothing (below the floor, or CLIP unusable) is appended to `notes`."""
    text = " ".join(prompt.lower().split())
    spans: list[tuple[int, int, str, Preset]] = []
    candidates = sorted(((alias, p) for p in presets.values() for alias in p.aliases), key=lambda a: -len(a[0]))
    taken = np.zeros(len(text) + 1, bool)
    for alias, preset in candidates:
        for m in re.finditer(r"\b" + re.escape(alias) + r"\b", text):
            if not taken[m.start():m.end()].any():
                taken[m.start():m.end()] = True
                spans.append((m.start(), m.end(), alias, preset))
    spans.sort(key=lambda s: s[0])
    matches: list[PresetMatch] = []
    for i, (start, end, alias, preset) in enumerate(spans):
        if matches and matches[-1].preset.name == preset.name:
            continue  # "spins and spins"
        following = text[end:spans[i + 1][0] if i + 1 < len(spans) else len(text)]
        matches.append(PresetMatch(preset, start, alias, _direction_remap(following)))
    if matches or not use_clip:
        return matches
    clip = _clip_match(text, presets, min_similarity, notes if notes is not None else [])
    return [clip] if clip is not None else []


def _clip_match(text: str, presets: dict[str, Preset], min_similarity: float, notes: list[str]
                ) -> PresetMatch | None:
    from .. import fallbacks

    phrases = {name: [f"an object {alias}" for alias in p.aliases[:4]] for name, p in presets.items()}
    try:
        from .text_similarity import best_match
        name, score = best_match(text, phrases)
    except Exception as exc:  # noqa: BLE001 - no open_clip, no weights, or the model failed to load
        reason = exc.user_message() if hasattr(exc, "user_message") else f"{type(exc).__name__}: {exc}"
        note = f"CLIP could not be used to match the prompt by meaning ({reason})"
        notes.append(note)
        fallbacks.warn("no_clip", f"{note}; presets were matched by their words only")
        return None
    preset = presets.get(name)
    if preset is None:
        return None
    if score < min_similarity:
        notes.append(f"the closest preset, {name!r}, is only {score:.2f} similar (needs {min_similarity:.2f})")
        return None
    return PresetMatch(preset, -1, name, _direction_remap(text), float(score))


# ---------------------------------------------------------------- curves (u in [0, 1] → value)

def _bounce(u: np.ndarray, count: float = 3, damping: float = 0.5) -> np.ndarray:
    """Parabolic bounces of heights 1, d, d², …; each lasts in proportion to √height (ballistic)."""
    n = max(1, int(round(count)))
    heights = damping ** np.arange(n)
    durations = np.sqrt(heights)
    edges = np.concatenate([[0.0], np.cumsum(durations) / durations.sum()])
    k = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, n - 1)
    local = (u - edges[k]) / (edges[k + 1] - edges[k])
    return heights[k] * 4 * local * (1 - local)


def _oscillate(u, count=2, phase=0.0):
    # A sine under a sin(πu) envelope: starts and ends at rest with zero speed.
    return np.sin(2 * np.pi * (count * u + phase)) * np.sin(np.pi * u) - np.sin(2 * np.pi * phase) * np.sin(np.pi * u)


CURVES = {
    "linear": lambda u: u,
    "ease_in_out": lambda u: u * u * (3 - 2 * u),
    "ease_in": lambda u: u * u,
    "ease_out": lambda u: 1 - (1 - u) ** 2,
    "tip": lambda u: u ** 3,
    "arc": lambda u: 4 * u * (1 - u),
    "bounce": _bounce,
    "oscillate": _oscillate,
    "damped_oscillate": lambda u, count=3: np.sin(2 * np.pi * count * u) * (1 - u) ** 2,
}


def _curve_values(track: dict, params: dict[str, float], u: np.ndarray) -> np.ndarray:
    span = track.get("span", [0.0, 1.0])
    local = np.clip((u - span[0]) / max(span[1] - span[0], 1e-9), 0.0, 1.0)
    args = {k: _value(v, params) for k, v in track.get("curve_args", {}).items()}
    return np.asarray(CURVES[track.get("curve", "linear")](local, **args), np.float64)


def _value(v, params: dict[str, float]) -> float:
    return float(params[v]) if isinstance(v, str) else float(v)


# ---------------------------------------------------------------- geometry

def object_frame(segment_means: np.ndarray, scene_means: np.ndarray, up: np.ndarray,
                 viewmat: np.ndarray | None = None) -> ObjectFrame:
    """The object's axes (up from the scene; right/forward from the camera, on the ground plane), its box,
    and the height of what is below it (the scene's Gaussians under its footprint, along `up`)."""
    up = np.asarray(up, np.float64)
    up = up / np.linalg.norm(up)
    cam_right = np.asarray(viewmat, np.float64)[0, :3] if viewmat is not None else np.array([1.0, 0.0, 0.0])
    right = cam_right - (cam_right @ up) * up
    if np.linalg.norm(right) < 1e-6:  # camera looking straight down with "right" along up: any ground axis
        right = np.cross(up, [1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.cross(up, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    forward = np.cross(up, right)  # away from the camera for an OpenCV camera (x right, y down, z forward)
    if viewmat is not None and np.asarray(viewmat)[2, :3] @ forward < 0:
        forward = -forward
    p = np.asarray(segment_means, np.float64)
    coords = np.stack([p @ right, p @ up, p @ forward], 1)
    lo, hi = (np.percentile(coords, [1, 99], axis=0) if len(p) > 50 else (coords.min(0), coords.max(0)))
    extent = np.maximum(hi - lo, 1e-6)
    mid = 0.5 * (lo + hi)
    center = mid[0] * right + mid[1] * up + mid[2] * forward
    size = float(extent.max())
    bottom = float(coords[:, 1].min())
    support = bottom
    s = np.asarray(scene_means, np.float64).reshape(-1, 3)
    if len(s):
        sc = np.stack([s @ right, s @ up, s @ forward], 1)
        pad = 0.1 * size
        under = ((sc[:, 0] > lo[0] - pad) & (sc[:, 0] < hi[0] + pad) & (sc[:, 2] > lo[2] - pad)
                 & (sc[:, 2] < hi[2] + pad) & (sc[:, 1] <= lo[1] + SUPPORT_TOLERANCE * size))
        if under.sum() >= 3:
            support = min(float(np.percentile(sc[under, 1], 95)), bottom)
    return ObjectFrame(up=up, right=right, forward=forward, center=center, extent=extent, size=size,
                       bottom=bottom, support=support)


def _pivot(frame: ObjectFrame, name: str, offset: dict, params: dict[str, float]) -> np.ndarray:
    """"center", "bottom", "bottom_right", "top_back", … : the box centre moved to the named faces."""
    point = frame.center.copy()
    for part in name.split("_"):
        if part == "center":
            continue
        if part == "bottom":
            point = point - frame.up * (frame.center @ frame.up - frame.bottom)
        elif part == "top":
            point = point + frame.up * frame.half("up")
        elif part in DIRECTIONS:
            point = point + frame.axis(part) * frame.half(part)
        else:
            raise ValueError(f"unknown pivot part {part!r} in {name!r}")
    for direction, amount in offset.items():
        point = point + frame.axis(direction) * _value(amount, params) * frame.size
    return point


def _rotation_matrices(axis: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(F, 3, 3) rotations about a unit axis (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    s, c = np.sin(angles)[:, None, None], np.cos(angles)[:, None, None]
    return np.eye(3)[None] + s * k[None] + (1 - c) * (k @ k)[None]


def preset_transforms(preset: Preset, frame: ObjectFrame, frames: int, params: dict | None = None,
                      directions: dict[str, str] | None = None) -> np.ndarray:
    """(F, 4, 4) rigid motion of the preset (before the support constraint): rotations about the object's
    rest-pose pivots, in track order, then the sum of the translations (so a roll turns about its moving centre)."""
    p = {**preset.parameters, **{k: float(v) for k, v in (params or {}).items()}}
    remap = directions or {}
    u = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    R = np.tile(np.eye(3), (len(u), 1, 1))
    t_rot = np.zeros((len(u), 3))      # from the rotations (about rest-pose pivots)
    t_move = np.zeros((len(u), 3))     # the translations, added last
    for track in preset.tracks:
        kind = track["type"]
        values = _curve_values(track, p, u)
        if kind == "translate":
            direction = frame.axis(remap.get(track["direction"], track["direction"]))
            t_move += values[:, None] * _value(track["distance"], p) * frame.size * direction
            continue
        if kind == "drop":
            t_move -= values[:, None] * (frame.bottom - frame.support) * frame.up
            continue
        if kind == "roll":
            travel = frame.axis(remap.get(track["direction"], track["direction"]))
            distance = _value(track["distance"], p) * frame.size
            # No slip: the turn is the distance over the radius (half the height).
            axis, angle, pivot = np.cross(frame.up, travel), distance / max(frame.half("up"), 1e-6), frame.center
            t_move += values[:, None] * distance * travel
        else:
            if "tilt_toward" in track:  # the top turns towards that side: axis = up × side
                axis = np.cross(frame.up, frame.axis(remap.get(track["tilt_toward"], track["tilt_toward"])))
            else:
                axis = frame.axis(remap.get(track["axis"], track["axis"]))
            angle = _value(track["angle"], p)
            angle = angle * 2 * np.pi if track.get("angle_unit") == "turns" else np.radians(angle)
            pivot_name = "_".join(remap.get(part, part) for part in track.get("pivot", "center").split("_"))
            offset = {remap.get(k, k): v for k, v in track.get("pivot_offset", {}).items()}
            pivot = _pivot(frame, pivot_name, offset, p)
        Rk = _rotation_matrices(axis / np.linalg.norm(axis), values * angle)
        # x' = Rk (x − c) + c after the rotations so far: (R, t) ← (Rk R, Rk t + c − Rk c)
        R = Rk @ R
        t_rot = np.einsum("fij,fj->fi", Rk, t_rot) + pivot - np.einsum("fij,j->fi", Rk, pivot)
    out = np.tile(np.eye(4), (len(u), 1, 1))
    out[:, :3, :3] = R
    out[:, :3, 3] = t_rot + t_move
    return out


def rest_on_support(transforms: np.ndarray, points: np.ndarray, frame: ObjectFrame) -> np.ndarray:
    """Lift each frame along `up` just enough that no point goes below what the object rests on."""
    floor = min(frame.support, frame.bottom)
    p = np.asarray(points, np.float64)
    heights = np.einsum("fij,nj->fni", transforms[:, :3, :3], p) @ frame.up + (transforms[:, :3, 3] @ frame.up)[:, None]
    lift = np.maximum(floor - heights.min(1), 0.0)
    out = transforms.copy()
    out[:, :3, 3] += lift[:, None] * frame.up
    return out


def _slerp_rigid(T: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(F, 4, 4): the rigid motion T scaled by fractions s (rotation angle and translation)."""
    from scipy.spatial.transform import Rotation

    rv = Rotation.from_matrix(T[:3, :3]).as_rotvec()
    out = np.tile(np.eye(4), (len(s), 1, 1))
    out[:, :3, :3] = Rotation.from_rotvec(s[:, None] * rv[None]).as_matrix()
    out[:, :3, 3] = s[:, None] * T[:3, 3]
    return out


def motion_from_prompt(prompt: str, segment_means: np.ndarray, scene_means: np.ndarray, up: np.ndarray,
                       viewmat: np.ndarray | None, frames: int, options: dict | None = None,
                       end_transform: np.ndarray | None = None,
                       presets: dict[str, Preset] | None = None) -> tuple[np.ndarray, dict]:
    """(F, 4, 4) file-frame rigid motion (T_0 = I) for a prompt, and what was used.

    Several presets named in the prompt play one after the other, each from where the last ended.
    `options`: "preset" (a name, skipping matching), "params" (overrides of the preset's parameters).
    With an `end_transform` (the artist's end pose), the motion is eased into ending there; with an
    empty prompt, that easing alone is the motion.
    """
    options = options or {}
    presets = presets if presets is not None else load_presets()
    frames = max(int(frames), 2)
    notes: list[str] = []
    if options.get("preset"):
        name = str(options["preset"])
        if name not in presets:
            raise GeneratorError(f"there is no motion preset {name!r}",
                                 hint=f"choose one of: {', '.join(sorted(presets))}")
        matches = [PresetMatch(presets[name], -1, name, _direction_remap(prompt.lower()))]
    else:
        matches = match_prompt(prompt, presets, use_clip=options.get("clip", True), notes=notes,
                               min_similarity=float(options.get("clip_min_similarity", CLIP_MIN_SIMILARITY)))
    if not matches and end_transform is None:
        why = "".join(f"; {note}" for note in notes)
        raise GeneratorError(f"no motion preset matches {prompt!r}{why}",
                             hint="the presets are: " + ", ".join(sorted(p.name.replace('_', ' ')
                                                                         for p in presets.values()))
                             + "; use one of their words, or set the end pose on the object, or use another "
                               "generator")
    points = np.asarray(segment_means, np.float64)
    base = object_frame(points, scene_means, up, viewmat)
    total = np.tile(np.eye(4), (frames, 1, 1))
    if matches:
        # Frames are shared among the chained presets by their natural durations.
        durations = np.array([m.preset.duration_s for m in matches])
        bounds = np.rint(np.concatenate([[0], np.cumsum(durations)]) / durations.sum() * (frames - 1)).astype(int)
        current = np.eye(4)
        for m, f0, f1 in zip(matches, bounds[:-1], bounds[1:]):
            if f1 <= f0:
                continue
            moved = points @ current[:3, :3].T + current[:3, 3]
            frame = object_frame(moved, scene_means, up, viewmat)
            frame.support = base.support  # the same ground under it
            local = preset_transforms(m.preset, frame, f1 - f0 + 1, options.get("params"), m.directions)
            local = rest_on_support(local, moved, frame)
            total[f0:f1 + 1] = local @ current
            current = total[f1]
        total[bounds[-1]:] = current
    if end_transform is not None:
        E = np.asarray(end_transform, np.float64)
        correction = E @ np.linalg.inv(total[-1])
        s = CURVES["ease_in_out"](np.linspace(0.0, 1.0, frames))
        total = np.einsum("fij,fjk->fik", _slerp_rigid(correction, s), total)
        total = rest_on_support(total, points, base)
    total[0] = np.eye(4)
    info = {"presets": [m.preset.name for m in matches], "aliases": [m.alias for m in matches],
            "scores": [m.score for m in matches], "size": base.size,
            "support_gap": base.bottom - base.support, "end_pose": end_transform is not None}
    return total, info
