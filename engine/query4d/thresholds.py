"""The 4D query's thresholds a user may set: their defaults, ranges and meaning, once for every place that sets
them (the engine's QuerySettings and request, the 4D Query panel's Advanced box, the batch's --query-* options).
Torch-free, so the add-on imports it without the engine's dependencies.

A value outside its range is refused with QueryThresholdError rather than clamped: a clamped value would
answer a different query than the one asked, with nothing to say so. The spatial threshold alone may be
automatic (None: Otsu's cut per query, never below MIN_SPATIAL_THRESHOLD); an automatic value is left out of
the request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from engine.errors import AnimateGaussiansError

# The automatic spatial cut is never below this: Otsu's cut over a span where nearly every Gaussian scores
# alike would otherwise select half the scene. Also the value the panel shows when Auto is turned off.
MIN_SPATIAL_THRESHOLD = 0.5


class QueryThresholdError(AnimateGaussiansError):
    """A 4D query threshold is outside the range where it means something."""

    hint = "set it within the range the message gives (docs/query4d.md explains each threshold)"


@dataclass(frozen=True)
class Threshold:
    name: str            # the request param and QuerySettings field
    label: str           # the panel's name for it
    default: float       # the engine's default (the spatial one: the value shown when Auto is off)
    low: float           # inclusive range
    high: float
    description: str     # the panel's tooltip and the batch option's help

    @property
    def option(self) -> str:
        """The batch command line's option."""
        return "--query-" + self.name.replace("_", "-")

    def check(self, value: object, what: str | None = None) -> float:
        """`value` as a float within [low, high], else QueryThresholdError naming it as `what` (the panel's
        label, the request param, ...; default the param)."""
        what = what or self.name
        hint = f"{self.description}; the default is {self.default_text}"
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise QueryThresholdError(f"{what} must be a number from {self.low:g} to {self.high:g}, got {value!r}",
                                      hint=hint) from None
        if not (math.isfinite(number) and self.low <= number <= self.high):
            raise QueryThresholdError(f"{what} must be between {self.low:g} and {self.high:g}, got {number:g}",
                                      hint=hint)
        return number

    @property
    def default_text(self) -> str:
        return "auto" if self.name == "spatial_threshold" else f"{self.default:g}"


THRESHOLDS: dict[str, Threshold] = {t.name: t for t in (
    Threshold("spatial_threshold", "Spatial Threshold", MIN_SPATIAL_THRESHOLD, 0.0, 1.0,
              "the cut on each Gaussian's relevancy (0 to 1 of the query's peak) that puts it in a frame's mask; "
              f"auto: Otsu's cut per query, never below {MIN_SPATIAL_THRESHOLD:g}; higher selects fewer Gaussians"),
    Threshold("temporal_threshold", "Temporal Threshold", 0.5, 0.0, 1.0,
              "the fraction of the temporal score's rise a frame must reach to be in the span; "
              "higher gives a shorter span"),
    Threshold("smoothing", "Smoothing", 1.0, 0.0, 100.0,
              "sigma in frames of the Gaussian smoothing of the temporal score before the span is cut "
              "(0: none); higher ignores brief dips and blips"),
    Threshold("min_relevancy", "Min Relevancy", 0.52, 0.5, 1.0,
              "the raw relevancy the query's best Gaussians must reach for anything to match (0.5: as close to "
              "the text as to a generic negative); higher answers 'no match' more often"),
    Threshold("grow_threshold", "Grow Threshold", 0.4, 0.0, 1.0,
              "the mean relevancy over the span a neighbour of a selected Gaussian needs to join the mask "
              "(fills shaded sides and unseen parts); 0 turns the growth off"),
)}


def request_thresholds(params: Mapping[str, object], what: Mapping[str, str] | None = None) -> dict[str, float]:
    """The thresholds in a query request's params, checked (QueryThresholdError names a bad one as
    `what[name]`, default the param). A spatial_threshold of None or "auto" is the automatic cut: left out."""
    out: dict[str, float] = {}
    for name, threshold in THRESHOLDS.items():
        value = params.get(name)
        if value is None or (name == "spatial_threshold" and value == "auto"):
            continue
        out[name] = threshold.check(value, (what or {}).get(name))
    return out
