"""The lifting settings an artist picks (the Animate panel's Advanced box; the batch's --lift-effort and
--smoothness), torch-free so that the add-on checks them by the engine's own names and ranges. The engine turns
them into LiftOptions (engine/motion/lifting.py: LiftOptions.from_request)."""

from __future__ import annotations

from ..errors import AnimateGaussiansError

# What `effort` sets: the rigid fit's solver evaluations (per frame when tracking, and of all frames together)
# and the non-rigid fit's Adam steps per frame. "default" is LiftOptions' own.
LIFT_EFFORTS: dict[str, dict[str, int]] = {
    "fast": {"tracking_steps": 3, "refine_steps": 4, "iterations": 10},
    "default": {},
    "thorough": {"tracking_steps": 8, "refine_steps": 20, "iterations": 40},
}
# A factor on the smoothness priors: 0 follows every frame of the video, 1 is the default.
SMOOTHNESS_MAX = 100.0


class LiftingError(AnimateGaussiansError):
    """The animate request's lifting settings are not ones the fit knows."""

    hint = "check the Advanced settings of the Animate panel, or the batch's --lift-effort and --smoothness"


def check_lift_settings(effort: str, smoothness: float) -> None:
    """Raise LiftingError unless `effort` is one of LIFT_EFFORTS and `smoothness` within 0..SMOOTHNESS_MAX."""
    if effort not in LIFT_EFFORTS:
        raise LiftingError(f"lifting effort must be one of {', '.join(LIFT_EFFORTS)}, got {effort!r}")
    if not 0.0 <= smoothness <= SMOOTHNESS_MAX:
        raise LiftingError(f"lifting smoothness must be within 0-{SMOOTHNESS_MAX:g} (1 is the default), "
                           f"got {smoothness:g}")


def lifting_options(effort: str, smoothness: float) -> dict:
    """The animate request's `options.lifting` for what an artist picked: only the settings off their
    defaults, so a request from the panel or the batch reads the same as one that set nothing."""
    check_lift_settings(effort, smoothness)
    out: dict = {}
    if effort != "default":
        out["effort"] = effort
    if smoothness != 1.0:
        out["smoothness"] = float(smoothness)
    return out
