"""Runway's hosted image-to-video (Gen-3 Alpha Turbo / Gen-4 Turbo): first (and last) keyframe + prompt -> video.

Flow (docs.dev.runwayml.com): POST /v1/image_to_video -> {id}; GET /v1/tasks/{id} until SUCCEEDED (output: [url])
or FAILED (failure); then download. Key: options["api_key"] (from the add-on preferences), else $RUNWAY_API_KEY,
else $RUNWAYML_API_SECRET (the name Runway's own SDK reads). The key is sent as a Bearer token and never logged.
"""

from __future__ import annotations

import math
import os
from typing import Callable

from ..http_api import (ApiError, ApiKeyMissingError, ApiSession, HostedGenerator, RetryPolicy, TaskState,
                        png_data_uri)
from ..video_framing import plan_framing, to_model_frame
from .base import GeneratedMotion, MotionRequest, Progress

BASE_URL = "https://api.dev.runwayml.com/v1"
API_VERSION = "2024-11-06"
KEY_ENV = ("RUNWAY_API_KEY", "RUNWAYML_API_SECRET")

# Output sizes (width, height) each model accepts, and whether it takes a last keyframe.
MODELS = {
    "gen3a_turbo": {"ratios": [(1280, 768), (768, 1280)], "last_frame": True, "durations": (5, 10)},
    "gen4_turbo": {"ratios": [(1280, 720), (720, 1280), (1104, 832), (832, 1104), (960, 960), (1584, 672)],
                   "last_frame": False, "durations": (5, 10)},
}
_STATUS = {"PENDING": "pending", "THROTTLED": "pending", "RUNNING": "running", "SUCCEEDED": "succeeded",
           "FAILED": "failed", "CANCELLED": "failed"}


def api_key(options: dict) -> str:
    """The Runway key from the request options, else the environment; ApiKeyMissingError when there is none."""
    key = (options.get("api_key") or "").strip()
    for name in KEY_ENV:
        key = key or os.environ.get(name, "").strip()
    if not key:
        raise ApiKeyMissingError("no Runway API key: set it in the add-on preferences or in $RUNWAY_API_KEY")
    return key


def closest_ratio(width: int, height: int, ratios: list[tuple[int, int]]) -> tuple[int, int]:
    """The model size whose aspect ratio is closest to the camera's (in log space: 2:1 and 1:2 are equally far)."""
    return min(ratios, key=lambda r: abs(math.log((r[0] / r[1]) / (width / height))))


class RunwayGenerator(HostedGenerator):
    name = "runway"

    def generate(self, request: MotionRequest, progress: Progress, check_cancelled: Callable[[], None]
                 ) -> GeneratedMotion:
        options = request.options
        key = api_key(options)
        if request.first_frame is None:
            raise ValueError("the runway generator needs the first frame rendered from the camera")
        use_last = request.last_frame is not None
        model = options.get("model") or ("gen3a_turbo" if use_last else "gen4_turbo")
        spec = MODELS.get(model, {"ratios": MODELS["gen4_turbo"]["ratios"], "last_frame": use_last,
                                  "durations": (5, 10)})
        width, height = closest_ratio(request.width, request.height, spec["ratios"])
        framing = plan_framing(request.height, request.width, height, width)
        duration = int(options.get("duration") or (5 if request.frames / max(request.fps, 1e-6) <= 5.0 else 10))
        if duration not in spec["durations"]:
            duration = min(spec["durations"], key=lambda d: abs(d - duration))

        images = [{"uri": png_data_uri(to_model_frame(request.first_frame, framing)), "position": "first"}]
        sent_last = use_last and spec["last_frame"]
        if sent_last:
            images.append({"uri": png_data_uri(to_model_frame(request.last_frame, framing)), "position": "last"})
        body = {"model": model, "promptImage": images, "promptText": request.prompt[:1000],
                "ratio": f"{width}:{height}", "duration": duration}
        if "seed" in options:
            body["seed"] = int(options["seed"])

        session = ApiSession("Runway", self.base_url or options.get("base_url") or BASE_URL,
                             lambda: {"Authorization": f"Bearer {key}", "X-Runway-Version": API_VERSION},
                             secrets=[key], timeout=float(options.get("request_timeout", 60.0)),
                             retry=RetryPolicy(attempts=int(options.get("retries", 5))),
                             sleep=self.sleep, session=self.session)
        progress(0.02, "Runway: creating the task")
        task = session.request_json("POST", "image_to_video", body, create=True)
        task_id = str(task.get("id") or "")
        if not task_id:
            raise ApiError("Runway accepted the request but returned no task id")

        def fetch_state() -> TaskState:
            answer = session.request_json("GET", f"tasks/{task_id}")
            status = _STATUS.get(str(answer.get("status", "")).upper(), "running")
            reason = answer.get("failure") or answer.get("failureCode") or ""
            fraction = answer.get("progress")
            return TaskState(status, float(fraction) if isinstance(fraction, (int, float)) else None,
                             list(answer.get("output") or []), str(reason), answer)

        return self.await_video(session, fetch_state, request, framing, options, interval=2.0, max_interval=10.0,
                                timeout=600.0, progress=progress, check_cancelled=check_cancelled,
                                info={"model": model, "task_id": task_id, "last_frame_used": sent_last,
                                      "duration_s": duration, "model_size": [width, height]})
