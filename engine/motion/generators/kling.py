"""Kling's hosted image-to-video: first image + optional tail image + prompt -> video.

Flow (Kling API docs): POST /v1/videos/image2video -> {code: 0, data: {task_id}}; GET /v1/videos/image2video/{task_id}
until data.task_status is "succeed" (data.task_result.videos[0].url) or "failed" (task_status_msg); then download.
Auth: a JWT (HS256, iss = access key, exp = now + 30 min, nbf = now - 5 s) signed with the secret key, sent as a
Bearer token. Keys: options["access_key"/"secret_key"] (add-on preferences), else $KLING_ACCESS_KEY / $KLING_SECRET_KEY.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import Any, Callable

from ..http_api import (ApiError, ApiKeyMissingError, ApiSession, HostedGenerator, RetryPolicy, TaskState,
                        png_base64)
from ..video_framing import plan_framing, to_model_frame
from .base import GeneratedMotion, MotionRequest, Progress
from .runway import closest_ratio

BASE_URL = "https://api-singapore.klingai.com"
ACCESS_ENV, SECRET_ENV = "KLING_ACCESS_KEY", "KLING_SECRET_KEY"
# Kling picks its output aspect from the first image; we pad to one of these (model pixel sizes at 720p).
RATIOS = [(1280, 720), (720, 1280), (960, 960)]
_STATUS = {"submitted": "pending", "processing": "running", "succeed": "succeeded", "failed": "failed"}
# 429 with these codes are account problems (arrears, resource pack used up): retrying cannot help.
_ACCOUNT_CODES = {1100, 1101, 1102}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def kling_jwt(access_key: str, secret_key: str, now: float | None = None, lifetime_s: int = 1800) -> str:
    """The Bearer token Kling expects: HS256 JWT {iss: access key, exp: now + lifetime, nbf: now - 5}."""
    now = int(time.time() if now is None else now)
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps({"iss": access_key, "exp": now + lifetime_s, "nbf": now - 5},
                                 separators=(",", ":")).encode())
    signature = hmac.new(secret_key.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def api_keys(options: dict) -> tuple[str, str]:
    access = (options.get("access_key") or os.environ.get(ACCESS_ENV, "")).strip()
    secret = (options.get("secret_key") or os.environ.get(SECRET_ENV, "")).strip()
    if not access or not secret:
        raise ApiKeyMissingError("no Kling keys: set the access and secret key in the add-on preferences or in "
                                 f"${ACCESS_ENV} and ${SECRET_ENV}")
    return access, secret


def takes_cfg_scale(model: str) -> bool:
    """Kling's v1 models take cfg_scale; its v2 models reject or ignore it (API docs: "Kling-v2.x models do
    not support this parameter")."""
    return str(model).startswith("kling-v1")


def _error_message(payload: Any) -> str:
    if isinstance(payload, dict):
        return f"code {payload.get('code')}: {payload.get('message') or payload}"[:300]
    return str(payload)[:300]


def _retryable(status: int, payload: Any) -> bool:
    code = payload.get("code") if isinstance(payload, dict) else None
    if status == 429:
        return code not in _ACCOUNT_CODES
    return status >= 500


def _data(answer: dict) -> dict:
    """Kling wraps every answer as {code, message, data}; a non-zero code is an error even with HTTP 200."""
    if answer.get("code", 0) != 0:
        raise ApiError(f"Kling refused the request ({_error_message(answer)})")
    return answer.get("data") or {}


class KlingGenerator(HostedGenerator):
    name = "kling"

    def generate(self, request: MotionRequest, progress: Progress, check_cancelled: Callable[[], None]
                 ) -> GeneratedMotion:
        options = request.options
        access, secret = api_keys(options)
        if request.first_frame is None:
            raise ValueError("the kling generator needs the first frame rendered from the camera")
        width, height = closest_ratio(request.width, request.height, RATIOS)
        framing = plan_framing(request.height, request.width, height, width)
        duration = str(options.get("duration") or (5 if request.frames / max(request.fps, 1e-6) <= 5.0 else 10))
        model = options.get("model") or "kling-v1-6"
        body = {"model_name": model, "image": png_base64(to_model_frame(request.first_frame, framing)),
                "prompt": request.prompt[:2500], "mode": options.get("mode") or "pro", "duration": duration}
        if takes_cfg_scale(model):
            body["cfg_scale"] = float(options.get("cfg_scale", 0.5))
        if options.get("negative_prompt"):
            body["negative_prompt"] = str(options["negative_prompt"])
        if request.last_frame is not None:
            # The tail image needs "pro" mode on Kling's models that support it.
            body["image_tail"] = png_base64(to_model_frame(request.last_frame, framing))
            body["mode"] = "pro"

        session = ApiSession("Kling", self.base_url or options.get("base_url") or BASE_URL,
                             lambda: {"Authorization": f"Bearer {kling_jwt(access, secret)}"},
                             secrets=[access, secret], timeout=float(options.get("request_timeout", 60.0)),
                             retry=RetryPolicy(attempts=int(options.get("retries", 5))),
                             sleep=self.sleep, session=self.session,
                             error_message=_error_message, retryable=_retryable)
        progress(0.02, "Kling: creating the task")
        task_id = str(_data(session.request_json("POST", "v1/videos/image2video", body, create=True)).get("task_id") or "")
        if not task_id:
            raise ApiError("Kling accepted the request but returned no task id")

        def fetch_state() -> TaskState:
            data = _data(session.request_json("GET", f"v1/videos/image2video/{task_id}"))
            status = _STATUS.get(str(data.get("task_status", "")).lower(), "running")
            videos = (data.get("task_result") or {}).get("videos") or []
            return TaskState(status, None, [v["url"] for v in videos if v.get("url")],
                             str(data.get("task_status_msg") or ""), data)

        # Kling takes minutes (the seed measured about 10): poll gently.
        return self.await_video(session, fetch_state, request, framing, options, interval=5.0, max_interval=30.0,
                                timeout=1800.0, progress=progress, check_cancelled=check_cancelled,
                                info={"model": model, "task_id": task_id,
                                      "last_frame_used": request.last_frame is not None,
                                      "duration_s": int(duration), "model_size": [width, height]})
