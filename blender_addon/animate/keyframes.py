"""Dense sampled motion -> a few editable Bézier keys within a tolerance (pure numpy), and the bpy writer that
puts them on F-curves in bulk (keyframe_points.add + foreach_set), for legacy and layered (4.4+) actions.

A segment between two keys is Blender's Bézier with handles at a third of the segment in time, so its time
is linear in the curve parameter and the value is the cubic Hermite of the keys' values and slopes: what we
fit is exactly what Blender evaluates. Keys are added where the error is largest until every sample is
within the tolerance, so the first and last samples are always keys and keys sit on sampled values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Keyframe enum values as foreach_set wants them: Blender's C values (BEZT_IPO_BEZ; HD_FREE, HD_ALIGN), which
# are not the enum items' order.
INTERPOLATION_BEZIER = 2
HANDLE_FREE, HANDLE_ALIGNED = 0, 3
_MIN_TOLERANCE = 1e-9


@dataclass
class BezierKeys:
    """Keys shared by C channels: times (K,), values (K, C), slopes into (left) and out of (right) each key."""

    times: np.ndarray
    values: np.ndarray
    slope_left: np.ndarray
    slope_right: np.ndarray

    @property
    def count(self) -> int:
        return int(self.times.shape[0])


def _sample_slopes(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(backward, central, forward) derivative estimates at every sample: second order (quadratic through
    three samples, uneven spacing allowed) where three samples exist, else the chord."""
    n = len(t)
    back, central, fwd = (np.zeros_like(y) for _ in range(3))
    if n < 2:
        return back, central, fwd
    chord = (y[1:] - y[:-1]) / (t[1:] - t[:-1])[:, None]
    back[1:], fwd[:-1] = chord, chord
    back[0], fwd[-1] = chord[0], chord[-1]
    if n >= 3:
        h1 = (t[1:-1] - t[:-2])[:, None]
        h2 = (t[2:] - t[1:-1])[:, None]
        y0, y1, y2 = y[:-2], y[1:-1], y[2:]
        central[1:-1] = -y0 * h2 / (h1 * (h1 + h2)) + y1 * (h2 - h1) / (h1 * h2) + y2 * h1 / (h2 * (h1 + h2))
        back[2:] = y0 * h2 / (h1 * (h1 + h2)) - y1 * (h1 + h2) / (h1 * h2) + y2 * (h1 + 2 * h2) / (h2 * (h1 + h2))
        fwd[:-2] = -y0 * (2 * h1 + h2) / (h1 * (h1 + h2)) + y1 * (h1 + h2) / (h1 * h2) - y2 * h1 / (h2 * (h1 + h2))
        # next to an end only one side has three samples: the centred quadratic serves the other side
        back[1], fwd[-2] = central[1], central[-2]
    central[0], central[-1] = fwd[0], back[-1]
    return back, central, fwd


def hermite(t: np.ndarray, t0: np.ndarray, t1: np.ndarray, y0: np.ndarray, y1: np.ndarray, m0: np.ndarray,
            m1: np.ndarray) -> np.ndarray:
    """Blender's Bézier segment with handles at thirds: the cubic Hermite of (t0, y0, m0) -> (t1, y1, m1)."""
    d = (t1 - t0)[:, None]
    u = ((t - t0) / (t1 - t0))[:, None]
    u2, u3 = u * u, u * u * u
    return ((2 * u3 - 3 * u2 + 1) * y0 + (u3 - 2 * u2 + u) * d * m0 + (3 * u2 - 2 * u3) * y1
            + (u3 - u2) * d * m1)


def evaluate_keys(keys: BezierKeys, times: np.ndarray) -> np.ndarray:
    """The keys' curves at `times` (within their range), (len(times), C); what Blender's F-curves evaluate to."""
    times = np.asarray(times, np.float64)
    if keys.count == 1:
        return np.repeat(keys.values[:1], len(times), axis=0)
    seg = np.clip(np.searchsorted(keys.times, times, side="right") - 1, 0, keys.count - 2)
    return hermite(times, keys.times[seg], keys.times[seg + 1], keys.values[seg], keys.values[seg + 1],
                   keys.slope_right[seg], keys.slope_left[seg + 1])


def reduce_keys(times: Sequence[float] | np.ndarray, values: np.ndarray,
                tolerance: float | Sequence[float] | np.ndarray) -> BezierKeys:
    """The fewest-ish Bézier keys whose curves pass within `tolerance` (per channel) of every sample.

    times (n,) increasing; values (n,) or (n, C) for channels sharing key times (a location's x, y, z).
    Slopes come from the samples (second-order differences); at a kink (one-sided slopes that disagree by
    several tolerances over one sample step) the key gets broken (FREE) handles. Keys are inserted at
    the worst sample of every segment out of tolerance until none is; with a key at every sample the
    curve passes through all of them, so this always ends.
    """
    t = np.asarray(times, np.float64)
    y = np.asarray(values, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    n, channels = y.shape
    if t.shape != (n,):
        raise ValueError(f"times has shape {t.shape}, values {y.shape}: they must have the same length")
    if n and np.any(np.diff(t) <= 0):
        raise ValueError("times must be strictly increasing")
    tol = np.maximum(np.broadcast_to(np.asarray(tolerance, np.float64), (channels,)), _MIN_TOLERANCE)
    if n <= 1:
        zero = np.zeros_like(y)
        return BezierKeys(t.copy(), y.copy(), zero, zero.copy())
    back, central, fwd = _sample_slopes(t, y)
    step = np.minimum(np.r_[np.diff(t), np.inf], np.r_[np.inf, np.diff(t)])[:, None]
    # A kink: one-sided slopes that disagree by clearly more than the tolerance over one step. Smooth curves
    # sampled coarsely disagree a little too (second-order error); those keep aligned handles.
    kink = np.abs(back - fwd) * step > 4.0 * tol
    left = np.where(kink, back, central)
    right = np.where(kink, fwd, central)
    left[0], right[-1] = fwd[0], back[-1]       # the outer handles continue the curve's end slopes

    keys = np.array([0, n - 1])
    err = np.zeros(n - 1)                      # every sample but the last, which is always a key
    redo = np.arange(n - 1)                    # samples whose segment changed since their error was computed
    while True:
        seg = np.repeat(np.arange(len(keys) - 1), np.diff(keys))
        a, b = keys[:-1][seg[redo]], keys[1:][seg[redo]]
        fit = hermite(t[redo], t[a], t[b], y[a], y[b], right[a], left[b])
        err[redo] = np.max(np.abs(fit - y[redo]) / tol, axis=1)
        worst = np.maximum.reduceat(err, keys[:-1])
        failing = worst > 1.0
        if not failing.any():
            break
        # the worst sample of each failing segment becomes a key (an exact tie adds both: harmless)
        keys = np.union1d(keys, np.flatnonzero((err == worst[seg]) & failing[seg]))
        redo = np.flatnonzero(failing[seg])
    return BezierKeys(t[keys], y[keys], left[keys], right[keys])


def bezier_buffers(keys: BezierKeys, channel: int) -> dict[str, np.ndarray]:
    """Flat float32/int32 buffers of one channel's keys for keyframe_points.foreach_set."""
    t = keys.times
    y = keys.values[:, channel]
    sl = keys.slope_left[:, channel]
    sr = keys.slope_right[:, channel]
    gaps = np.diff(t)
    before = np.r_[gaps[:1], gaps] / 3.0 if len(t) > 1 else np.ones(1)
    after = np.r_[gaps, gaps[-1:]] / 3.0 if len(t) > 1 else np.ones(1)
    aligned = np.isclose(sl, sr, rtol=1e-9, atol=1e-12)
    handle_type = np.where(aligned, HANDLE_ALIGNED, HANDLE_FREE).astype(np.int32)
    return {
        "co": np.stack([t, y], axis=1).astype(np.float32).ravel(),
        "handle_left": np.stack([t - before, y - sl * before], axis=1).astype(np.float32).ravel(),
        "handle_right": np.stack([t + after, y + sr * after], axis=1).astype(np.float32).ravel(),
        "interpolation": np.full(len(t), INTERPOLATION_BEZIER, np.int32),
        "handle_left_type": handle_type,
        "handle_right_type": handle_type.copy(),
    }


# ---------------------------------------------------------------------------------------------- Blender side

def _is_layered(action) -> bool:
    return hasattr(action, "layers") and not hasattr(action, "fcurves")


def channel_container(id_data, create: bool = True):
    """What holds the F-curves that animate `id_data` (an Object): the channelbag of its action slot
    (layered actions, Blender 4.4+) or the legacy action itself; None when it has none and `create` is False.
    A new action and slot are made when needed."""
    import bpy

    anim = id_data.animation_data
    if anim is None or anim.action is None:
        if not create:
            return None
        anim = anim or id_data.animation_data_create()
        anim.action = bpy.data.actions.new(f"{id_data.name}Action")
    action = anim.action
    if not _is_layered(action):
        return action
    slot = anim.action_slot
    if slot is None:
        if not create:
            return None
        slot = action.slots.new(id_type=id_data.id_type, name=id_data.name)
        anim.action_slot = slot
    from bpy_extras import anim_utils

    if create:
        return anim_utils.action_ensure_channelbag_for_slot(action, slot)
    return anim_utils.action_get_channelbag_for_slot(action, slot)


def remove_fcurves(container, data_paths: Sequence[str]) -> int:
    """Remove every F-curve of `container` animating one of `data_paths`; returns how many went."""
    if container is None:
        return 0
    doomed = [fc for fc in container.fcurves if fc.data_path in data_paths]
    for fc in doomed:
        container.fcurves.remove(fc)
    return len(doomed)


def _new_fcurve(container, data_path: str, index: int, group: str | None):
    try:    # layered channelbag (group_name) / legacy action (action_group)
        return container.fcurves.new(data_path, index=index, group_name=group or "")
    except TypeError:
        return container.fcurves.new(data_path, index=index, action_group=group or "")


def write_keys(container, data_path: str, keys: BezierKeys, group: str | None = None,
               indices: Sequence[int] | None = None) -> list:
    """Replace the F-curves `data_path`[indices] (default 0..C-1) of `container` with `keys`, in bulk."""
    indices = list(range(keys.values.shape[1])) if indices is None else list(indices)
    curves = []
    for channel, index in enumerate(indices):
        old = container.fcurves.find(data_path, index=index)
        if old is not None:
            container.fcurves.remove(old)
        fcurve = _new_fcurve(container, data_path, index, group)
        points = fcurve.keyframe_points
        points.add(keys.count)
        for name, buffer in bezier_buffers(keys, channel).items():
            points.foreach_set(name, buffer)
        fcurve.update()
        curves.append(fcurve)
    return curves


def keyframe_count(id_data) -> int:
    """Keys on all F-curves animating `id_data` (its action slot's channelbag, or its legacy action)."""
    container = channel_container(id_data, create=False)
    return 0 if container is None else sum(len(fc.keyframe_points) for fc in container.fcurves)
