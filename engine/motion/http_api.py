"""The one helper for hosted video APIs (Runway, Kling): JSON requests with retries and back-off, task polling,
downloads, and keeping the user's key out of every log line and error message.

Retried: connection errors, timeouts, 429 and 5xx (honouring Retry-After). Not retried: 401/403 (the key is wrong),
other 4xx (the request is wrong; the server's own message is shown).
"""

from __future__ import annotations

import base64
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .generators.base import GeneratorError

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
Sleep = Callable[[float], None]
Clock = Callable[[], float]


class ApiError(GeneratorError):
    """A hosted video API answered with an error we cannot recover from."""

    hint = "check the service's status page and your account, or try another generator"


class ApiAuthError(ApiError):
    """The service rejected the key."""

    hint = "check your key in the add-on preferences (or the environment variable) and that it is active"


class ApiKeyMissingError(ApiError):
    """No key was given."""

    hint = "set the key in the add-on preferences or in the environment variable named above"


class ApiTaskFailedError(ApiError):
    """The service accepted the task but could not make the video."""

    hint = "change the prompt or the keyframes (content filters reject some), or try again"


class ApiTimeoutError(ApiError):
    """The task did not finish in time, or the service did not answer."""

    hint = "try again later, or raise the timeout in the generator options"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off: attempt k (0-based) waits min(max_delay, base_delay * factor**k) before retrying."""

    attempts: int = 5
    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        backoff = min(self.max_delay, self.base_delay * self.factor ** attempt)
        # A server's Retry-After is a lower bound; never wait less than our own back-off.
        return max(backoff, min(retry_after, self.max_delay * 4)) if retry_after is not None else backoff


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by '***' (short strings are skipped: they would mangle ordinary words)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            # Also the escaped form: libraries quote bad header values with repr().
            for form in (secret, repr(secret)[1:-1]):
                text = text.replace(form, "***")
    return text


@dataclass
class TaskState:
    """A hosted task's state in our own terms (each API maps its status names onto these)."""

    status: str                                  # "pending" | "running" | "succeeded" | "failed"
    progress: float | None = None                # 0..1 when the service reports it
    output_urls: list[str] = field(default_factory=list)
    failure: str = ""                            # the service's reason, when failed
    raw: dict = field(default_factory=dict)


class ApiSession:
    """JSON over HTTPS to one service. `auth_headers` is called per request (Kling's JWT expires), and
    `secrets` are scrubbed from everything we log or raise."""

    def __init__(self, service: str, base_url: str, auth_headers: Callable[[], Mapping[str, str]],
                 secrets: Iterable[str], timeout: float = 60.0, retry: RetryPolicy | None = None,
                 sleep: Sleep = time.sleep, session: Any = None,
                 error_message: Callable[[Any], str] | None = None,
                 retryable: Callable[[int, Any], bool] | None = None) -> None:
        import requests

        self.service = service
        self.base_url = base_url.rstrip("/")
        self.auth_headers = auth_headers
        self.secrets = [s for s in secrets if s]
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.http = session or requests.Session()
        self.error_message = error_message or _default_error_message
        self.retryable = retryable or (lambda status, body: status == 429 or status >= 500)
        self._header_secrets: list[str] = []   # what the auth headers carried last (tokens derived from keys)

    def _safe(self, text: str) -> str:
        return redact(text, [*self.secrets, *self._header_secrets])

    def request_json(self, method: str, path: str, body: dict | None = None, create: bool = False) -> dict:
        """Send one JSON request (retrying as the policy says) and return the decoded JSON answer.

        `create`: the request starts paid work (a video task). It is retried only when it cannot have reached
        the service (no connection made, or 429: refused before any work); after a read time-out or a 5xx the
        task may exist, and a second try could be billed twice, so the user is told instead."""
        import requests

        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"
        last_problem = ""
        for attempt in range(self.retry.attempts):
            retry_after = None
            try:
                auth = dict(self.auth_headers())
                self._header_secrets = [part for value in auth.values() for part in (value, value.split(" ")[-1])]
                headers = {"Content-Type": "application/json", "Accept": "application/json", **auth}
                response = self.http.request(method, url, json=body, headers=headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last_problem = f"no answer ({type(exc).__name__})"
                if create and not _never_sent(exc):
                    raise ApiError(f"{self.service} did not answer {method} {path} ({type(exc).__name__}); the "
                                   "task may have been created", hint=_MAYBE_CREATED) from None
            except requests.RequestException as exc:
                # e.g. a key with a newline makes requests reject the header and quote it: never chain that.
                raise ApiError(f"{self.service}: cannot send {method} {path}: {self._safe(str(exc))}",
                               hint="check the key for stray characters, and the base URL") from None
            else:
                payload = _json_or_text(response)
                status = response.status_code
                if status < 300:
                    if isinstance(payload, dict):
                        return payload
                    raise ApiError(self._safe(f"{self.service} answered {method} {path} with something that is "
                                              f"not JSON: {str(payload)[:200]}"))
                message = self._safe(self.error_message(payload))
                if status in (401, 403):
                    raise ApiAuthError(f"{self.service} rejected the key (HTTP {status}: {message})")
                if not self.retryable(status, payload):
                    raise ApiError(f"{self.service} refused {method} {path} (HTTP {status}: {message})")
                if create and status != 429:
                    raise ApiError(f"{self.service} failed on {method} {path} (HTTP {status}: {message}); the "
                                   "task may have been created", hint=_MAYBE_CREATED)
                last_problem = f"HTTP {status}: {message}"
                retry_after = _retry_after(response)
            if attempt + 1 < self.retry.attempts:
                wait = self.retry.delay(attempt, retry_after)
                log.info("%s: %s %s failed (%s); retrying in %.1f s", self.service, method, path,
                         self._safe(last_problem), wait)
                self.sleep(wait)
        if last_problem.startswith("no answer"):
            raise ApiTimeoutError(f"{self.service} did not answer {method} {path} after {self.retry.attempts} tries "
                                  f"({last_problem})")
        raise ApiError(f"{self.service} kept refusing {method} {path} after {self.retry.attempts} tries "
                       f"({last_problem})", hint="the service is busy or rate-limiting you; try again in a few minutes")

    def download(self, url: str, target: str | Path, progress: Progress | None = None) -> Path:
        """Stream a result file (a signed URL: no auth header, which would leak the key to a CDN) to `target`."""
        import requests

        target = Path(target)
        partial = target.with_name(target.name + ".partial")
        for attempt in range(self.retry.attempts):
            try:
                with self.http.get(url, stream=True, timeout=self.timeout) as response:
                    if response.status_code >= 400:
                        problem = f"HTTP {response.status_code}"
                        if response.status_code < 500 and response.status_code != 429:
                            raise ApiError(f"{self.service}: cannot download the result ({problem})",
                                           hint="the result link may have expired; generate again")
                    else:
                        total = int(response.headers.get("Content-Length") or 0)
                        done = 0
                        with open(partial, "wb") as out:
                            for chunk in response.iter_content(1 << 16):
                                out.write(chunk)
                                done += len(chunk)
                                if progress is not None and total:
                                    progress(min(done / total, 1.0), f"downloading the {self.service} video")
                        partial.replace(target)
                        return target
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = type(exc).__name__
            if attempt + 1 < self.retry.attempts:
                self.sleep(self.retry.delay(attempt))
        partial.unlink(missing_ok=True)
        raise ApiTimeoutError(f"{self.service}: the result could not be downloaded ({problem})")


_MAYBE_CREATED = ("not retried, so you are not billed twice: check the service's task list (or your usage page) "
                  "before trying again")


def _never_sent(exc: Exception) -> bool:
    """Whether a connection error happened before the request could reach the server (nothing to bill)."""
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.Timeout):
        return False          # a read time-out: the server has the request
    text = repr(exc)
    return any(s in text for s in ("NewConnectionError", "NameResolutionError", "Connection refused",
                                   "Failed to establish a new connection"))


def poll_task(fetch_state: Callable[[], TaskState], service: str, *, interval: float = 2.0,
              max_interval: float = 15.0, timeout: float = 900.0, progress: Progress | None = None,
              check_cancelled: Callable[[], None] | None = None, sleep: Sleep = time.sleep,
              clock: Clock = time.monotonic) -> TaskState:
    """Ask for a task's state until it succeeds (returned) or fails (ApiTaskFailedError), waiting `interval`
    seconds at first and 1.5x longer each time up to `max_interval`; cancellation is checked every half second."""
    start = clock()
    wait = interval
    while True:
        if check_cancelled is not None:
            check_cancelled()
        state = fetch_state()
        if state.status == "succeeded":
            if not state.output_urls:
                raise ApiError(f"{service} reported success but gave no video")
            return state
        if state.status == "failed":
            raise ApiTaskFailedError(f"{service} could not make the video: {state.failure or 'no reason given'}")
        elapsed = clock() - start
        if progress is not None:
            fraction = state.progress if state.progress is not None else min(elapsed / timeout, 0.95)
            progress(float(fraction), f"{service}: {state.status} ({elapsed:.0f} s)")
        if elapsed + wait > timeout:
            raise ApiTimeoutError(f"{service} did not finish the video within {timeout:.0f} s "
                                  f"(last state: {state.status})")
        _wait(wait, sleep, check_cancelled)
        wait = min(wait * 1.5, max_interval)


def _wait(seconds: float, sleep: Sleep, check_cancelled: Callable[[], None] | None) -> None:
    """Sleep in slices so a cancel is noticed within half a second."""
    remaining = seconds
    while remaining > 0:
        step = min(0.5, remaining)
        sleep(step)
        remaining -= step
        if check_cancelled is not None:
            check_cancelled()


def png_base64(image: np.ndarray) -> str:
    """An (H, W, 3) uint8 image as base64-encoded PNG bytes (no data: prefix)."""
    from PIL import Image

    data = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[..., :3])
    buffer = io.BytesIO()
    Image.fromarray(data, "RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def png_data_uri(image: np.ndarray) -> str:
    """An (H, W, 3) uint8 image as a data:image/png;base64 URI."""
    return "data:image/png;base64," + png_base64(image)


def _json_or_text(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _default_error_message(payload: Any) -> str:
    if isinstance(payload, dict):
        for key in ("error", "message", "detail", "failure"):
            if payload.get(key):
                return str(payload[key])[:300]
    return str(payload)[:300]


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class HostedGenerator:
    """What Runway and Kling share: injectable sleep/clock/HTTP session (tests run the whole flow against a
    fake server without waiting), availability, and turning the finished task's video into camera frames."""

    name = "hosted"

    def __init__(self, base_url: str | None = None, sleep: Sleep | None = None, session: Any = None,
                 clock: Clock | None = None) -> None:
        self.base_url = base_url
        self.sleep = sleep or time.sleep
        self.clock = clock or time.monotonic
        self.session = session

    def available(self) -> tuple[bool, str]:
        # The key may arrive with the request (add-on preferences): generate() checks it and says where to set it.
        try:
            import requests  # noqa: F401
        except ImportError:
            return False, "install requests in the engine environment (pip install requests)"
        return True, ""

    def await_video(self, session: ApiSession, fetch_state: Callable[[], TaskState], request: Any, framing: Any,
                    options: Mapping, interval: float, max_interval: float, timeout: float, progress: Progress,
                    check_cancelled: Callable[[], None], info: dict) -> Any:
        """Poll the created task until it ends (its own defaults, overridable by the request's options), then
        download its video as camera frames: the GeneratedMotion both services return."""
        from .generators.base import GeneratedMotion

        state = poll_task(fetch_state, session.service, interval=float(options.get("poll_interval", interval)),
                          max_interval=float(options.get("max_poll_interval", max_interval)),
                          timeout=float(options.get("timeout", timeout)),
                          progress=lambda f, s: progress(0.05 + 0.8 * f, s), check_cancelled=check_cancelled,
                          sleep=self.sleep, clock=self.clock)
        check_cancelled()
        video, clip_info = self.fetch_video(session, state.output_urls[0], framing, request.frames, progress)
        return GeneratedMotion(video=video, fps=request.fps, info={"generator": self.name, **info, **clip_info})

    def fetch_video(self, session: ApiSession, url: str, framing: Any, frames: int, progress: Progress
                    ) -> tuple[np.ndarray, dict]:
        """Download the result, decode it, map it back to the camera's pixels and resample it to `frames`;
        also what the clip was (frame count, rate) for the result's info."""
        import tempfile

        from .video_framing import decode_video, from_model_video, resample_frames

        with tempfile.TemporaryDirectory(prefix=f"{self.name}_") as folder:
            path = session.download(url, Path(folder) / f"{self.name}.mp4",
                                    progress=lambda f, s: progress(0.85 + 0.1 * f, s))
            clip, clip_fps = decode_video(path)
        video = resample_frames(from_model_video(clip, framing), frames)
        progress(1.0, f"{session.service}: video ready")
        return video, {"clip_frames": int(len(clip)), "clip_fps": clip_fps}
