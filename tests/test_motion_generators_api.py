"""Runway and Kling generators against a local fake server that follows their documented task flows."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from engine.errors import CancelledError
from engine.motion.generators.base import MotionRequest
from engine.motion.generators.kling import KlingGenerator, kling_jwt
from engine.motion.generators.runway import RunwayGenerator
from engine.motion.http_api import (ApiAuthError, ApiError, ApiKeyMissingError, ApiTaskFailedError, ApiTimeoutError,
                                    RetryPolicy, redact)
from engine.motion.video_framing import from_model_video, plan_framing, to_model_frame

RUNWAY_KEY = "key_runway_SECRET_0123456789abcdef"
KLING_ACCESS, KLING_SECRET = "ak_kling_ACCESS_9876", "sk_kling_SECRET_5432"
CAM_W, CAM_H = 96, 64


class FakeTime:
    """sleep() advances a clock instead of waiting; every wait is recorded."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def _gradient_image(h: int, w: int, phase: float = 0.0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x / w * 200 + 20, y / h * 200 + 20, np.full_like(x, 60.0 + phase, dtype=float)], -1)
    return image.astype(np.uint8)


def _make_mp4(path, first: np.ndarray, frames: int = 30) -> None:
    """A clip whose frame 0 is `first` and whose blue channel rises frame by frame (to check resampling order)."""
    import cv2

    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24.0, (w, h))
    for f in range(frames):
        frame = first.copy()
        frame[..., 2] = np.uint8(min(60 + 6 * f, 255))
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()


class FakeService:
    """Both APIs on one 127.0.0.1 server. `script` drives what it answers; `requests` records what it got."""

    def __init__(self, video_bytes: bytes):
        self.video_bytes = video_bytes
        self.requests: list[dict] = []
        self.create_failures: list[tuple[int, dict]] = []   # answered (in order) before a create succeeds
        self.statuses: list[str] = []                        # status sequence of the task; the last one repeats
        self.failure_reason = ""
        self.polls = 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _reply(self, status: int, payload, content_type="application/json", headers=None):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _record(self, body=None):
                service.requests.append({"method": self.command, "path": self.path,
                                         "headers": dict(self.headers), "body": body})

            def do_GET(self):
                self._record()
                if self.path == "/files/video.mp4":
                    assert "Authorization" not in self.headers, "the key must not go to the file host"
                    return self._reply(200, service.video_bytes, "video/mp4")
                service.polls += 1
                status = service.statuses[min(service.polls - 1, len(service.statuses) - 1)]
                url = f"http://127.0.0.1:{service.port}/files/video.mp4"
                if self.path.startswith("/v1/tasks/"):
                    task = {"id": "task-1", "status": status}
                    if status == "SUCCEEDED":
                        task["output"] = [url]
                    if status == "FAILED":
                        task["failure"] = service.failure_reason
                    return self._reply(200, task)
                if self.path.startswith("/v1/videos/image2video/"):
                    data = {"task_id": "task-1", "task_status": status, "task_status_msg": service.failure_reason}
                    if status == "succeed":
                        data["task_result"] = {"videos": [{"id": "v1", "url": url, "duration": "5"}]}
                    return self._reply(200, {"code": 0, "message": "SUCCEED", "request_id": "r", "data": data})
                self._reply(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._record(body)
                if service.create_failures:
                    status, payload = service.create_failures.pop(0)
                    return self._reply(status, payload, headers={"Retry-After": "0"} if status == 429 else None)
                if self.path == "/v1/image_to_video":
                    return self._reply(200, {"id": "task-1"})
                if self.path == "/v1/videos/image2video":
                    return self._reply(200, {"code": 0, "message": "SUCCEED", "request_id": "r",
                                             "data": {"task_id": "task-1", "task_status": "submitted"}})
                self._reply(404, {"error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def keyframes():
    return _gradient_image(CAM_H, CAM_W), _gradient_image(CAM_H, CAM_W, phase=90.0)


@pytest.fixture(scope="module")
def runway_video(tmp_path_factory, keyframes):
    """What Runway would return for our first frame: the model-size first frame (1280x768 scaled to 160x96)."""
    import cv2

    framing = plan_framing(CAM_H, CAM_W, 768, 1280)
    first = cv2.resize(to_model_frame(keyframes[0], framing), (160, 96), interpolation=cv2.INTER_AREA)
    path = tmp_path_factory.mktemp("fake") / "runway.mp4"
    _make_mp4(path, first)
    return path.read_bytes()


@pytest.fixture
def service(runway_video):
    fake = FakeService(runway_video)
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def no_env_keys(monkeypatch):
    for name in ("RUNWAY_API_KEY", "RUNWAYML_API_SECRET", "KLING_ACCESS_KEY", "KLING_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)


def _request(keyframes, options, frames=9, last=True) -> MotionRequest:
    return MotionRequest(prompt="the mug slides to the right", frames=frames, fps=24.0,
                         segment_means=np.zeros((4, 3)), scene_means=np.zeros((4, 3)), up=np.array([0.0, -1.0, 0.0]),
                         viewmat=np.eye(4), K=np.eye(3), width=CAM_W, height=CAM_H,
                         first_frame=keyframes[0], last_frame=keyframes[1] if last else None, options=options)


def _decode_png(data: str) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def _stages():
    seen = []
    return seen, (lambda fraction, stage: seen.append((fraction, stage)))


def test_runway_first_and_last_keyframes_end_to_end(service, keyframes, caplog):
    caplog.set_level(logging.DEBUG)
    service.statuses = ["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]
    fake = FakeTime()
    seen, progress = _stages()
    result = RunwayGenerator(base_url=service.url + "/v1", sleep=fake.sleep, clock=fake.clock).generate(
        _request(keyframes, {"api_key": RUNWAY_KEY}), progress, lambda: None)

    create = service.requests[0]
    assert create["method"] == "POST" and create["path"] == "/v1/image_to_video"
    assert create["headers"]["Authorization"] == f"Bearer {RUNWAY_KEY}"
    assert create["headers"]["X-Runway-Version"]
    body = create["body"]
    assert body["model"] == "gen3a_turbo" and body["ratio"] == "1280:768"
    assert body["promptText"] == "the mug slides to the right"
    assert [im["position"] for im in body["promptImage"]] == ["first", "last"]
    uris = [im["uri"] for im in body["promptImage"]]
    assert all(u.startswith("data:image/png;base64,") for u in uris)
    sent_first, sent_last = (_decode_png(u.split(",", 1)[1]) for u in uris)
    framing = plan_framing(CAM_H, CAM_W, 768, 1280)
    assert sent_first.shape == (768, 1280, 3)
    np.testing.assert_array_equal(sent_first, to_model_frame(keyframes[0], framing))
    np.testing.assert_array_equal(sent_last, to_model_frame(keyframes[1], framing))
    assert service.polls == 4

    assert result.video.shape == (9, CAM_H, CAM_W, 3) and result.video.dtype == np.uint8
    # Frame 0 maps back onto the camera's pixels (mp4 is lossy: a loose bound), and time runs forward.
    err = np.abs(result.video[0].astype(float) - keyframes[0].astype(float))
    assert np.median(err) < 8.0
    blue = result.video[..., 2].mean(axis=(1, 2))
    assert np.all(np.diff(blue) > 0)
    assert result.info["task_id"] == "task-1" and result.info["last_frame_used"] is True
    assert seen[-1][0] == 1.0 and all(0.0 <= f <= 1.0 for f, _ in seen)
    assert RUNWAY_KEY not in caplog.text


def test_runway_key_from_environment_and_first_frame_only_model(service, keyframes, monkeypatch):
    monkeypatch.setenv("RUNWAY_API_KEY", RUNWAY_KEY)
    service.statuses = ["SUCCEEDED"]
    fake = FakeTime()
    generator = RunwayGenerator(base_url=service.url + "/v1", sleep=fake.sleep, clock=fake.clock)
    result = generator.generate(_request(keyframes, {"model": "gen4_turbo"}, frames=5), lambda f, s: None,
                                lambda: None)
    body = service.requests[0]["body"]
    assert service.requests[0]["headers"]["Authorization"] == f"Bearer {RUNWAY_KEY}"
    assert [im["position"] for im in body["promptImage"]] == ["first"]   # gen4_turbo takes no last frame
    assert body["ratio"] == "1104:832"   # closest to the camera's 3:2
    assert result.info["last_frame_used"] is False and len(result.video) == 5


def test_missing_key_says_where_to_set_it(keyframes):
    with pytest.raises(ApiKeyMissingError) as info:
        RunwayGenerator(base_url="http://127.0.0.1:9").generate(_request(keyframes, {}), lambda f, s: None,
                                                                lambda: None)
    assert "RUNWAY_API_KEY" in str(info.value) and info.value.hint
    with pytest.raises(ApiKeyMissingError, match="KLING_ACCESS_KEY"):
        KlingGenerator(base_url="http://127.0.0.1:9").generate(_request(keyframes, {"access_key": "only-one"}),
                                                               lambda f, s: None, lambda: None)
    # Keys can come with the request, so both can run wherever requests is installed.
    assert RunwayGenerator().available() == (True, "") and KlingGenerator().available() == (True, "")


def test_runway_401_says_check_your_key_and_never_shows_it(service, keyframes, caplog):
    caplog.set_level(logging.DEBUG)
    service.create_failures = [(401, {"error": f"Invalid API key {RUNWAY_KEY}"})]
    fake = FakeTime()
    with pytest.raises(ApiAuthError) as info:
        RunwayGenerator(base_url=service.url + "/v1", sleep=fake.sleep, clock=fake.clock).generate(
            _request(keyframes, {"api_key": RUNWAY_KEY}), lambda f, s: None, lambda: None)
    assert "key" in info.value.hint
    assert RUNWAY_KEY not in info.value.user_message() and "***" in str(info.value)
    assert RUNWAY_KEY not in caplog.text
    assert len(service.requests) == 1 and fake.sleeps == []   # a bad key is not retried


def test_runway_429_is_retried_with_growing_back_off(service, keyframes, caplog):
    caplog.set_level(logging.DEBUG)
    service.create_failures = [(429, {"error": "Too many requests"})] * 3
    service.statuses = ["SUCCEEDED"]
    fake = FakeTime()
    result = RunwayGenerator(base_url=service.url + "/v1", sleep=fake.sleep, clock=fake.clock).generate(
        _request(keyframes, {"api_key": RUNWAY_KEY}), lambda f, s: None, lambda: None)
    creates = [r for r in service.requests if r["method"] == "POST"]
    assert len(creates) == 4
    assert fake.sleeps[:3] == [1.0, 2.0, 4.0]
    assert result.video.shape[0] == 9
    assert "retrying" in caplog.text and RUNWAY_KEY not in caplog.text


def test_runway_persistent_429_gives_up(service, keyframes):
    service.create_failures = [(429, {"error": "Too many requests"})] * 10
    fake = FakeTime()
    with pytest.raises(ApiError, match="429"):
        RunwayGenerator(base_url=service.url + "/v1", sleep=fake.sleep, clock=fake.clock).generate(
            _request(keyframes, {"api_key": RUNWAY_KEY, "retries": 3}), lambda f, s: None, lambda: None)
    assert len(service.requests) == 3 and fake.sleeps == [1.0, 2.0]


def test_runway_failed_task_reports_its_reason(service, keyframes):
    service.statuses = ["RUNNING", "FAILED"]
    service.failure_reason = "Input image flagged by content moderation"
    fake = FakeTime()
    with pytest.raises(ApiTaskFailedError, match="content moderation"):
        RunwayGenerator(base_url=service.url + "/v1", sleep=fake.sleep, clock=fake.clock).generate(
            _request(keyframes, {"api_key": RUNWAY_KEY}), lambda f, s: None, lambda: None)


def test_runway_task_that_never_finishes_times_out(service, keyframes):
    service.statuses = ["RUNNING"]
    fake = FakeTime()
    with pytest.raises(ApiTimeoutError, match="within 60 s"):
        RunwayGenerator(base_url=service.url + "/v1", sleep=fake.sleep, clock=fake.clock).generate(
            _request(keyframes, {"api_key": RUNWAY_KEY, "timeout": 60}), lambda f, s: None, lambda: None)
    assert fake.now - 1000.0 <= 60.0
    polls = sum(1 for r in service.requests if r["method"] == "GET")
    assert 5 <= polls <= 15   # polling backs off (2 s growing to 10 s), it does not hammer the server


def test_cancel_stops_polling(service, keyframes):
    service.statuses = ["RUNNING"]
    fake = FakeTime()
    calls = {"n": 0}

    def check_cancelled():
        calls["n"] += 1
        if calls["n"] > 3:
            raise CancelledError("cancelled")

    with pytest.raises(CancelledError):
        RunwayGenerator(base_url=service.url + "/v1", sleep=fake.sleep, clock=fake.clock).generate(
            _request(keyframes, {"api_key": RUNWAY_KEY}), lambda f, s: None, check_cancelled)
    assert fake.now - 1000.0 < 5.0


def test_unreachable_server_times_out_after_retries(keyframes):
    fake = FakeTime()
    with pytest.raises(ApiTimeoutError, match="did not answer"):
        RunwayGenerator(base_url="http://127.0.0.1:9/v1", sleep=fake.sleep, clock=fake.clock).generate(
            _request(keyframes, {"api_key": RUNWAY_KEY, "retries": 3, "request_timeout": 2}),
            lambda f, s: None, lambda: None)
    assert fake.sleeps == [1.0, 2.0]


def _verify_kling_token(header: str) -> dict:
    token = header.removeprefix("Bearer ")
    head, payload, signature = token.split(".")
    expected = hmac.new(KLING_SECRET.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    assert base64.urlsafe_b64decode(pad(signature)) == expected
    assert json.loads(base64.urlsafe_b64decode(pad(head))) == {"alg": "HS256", "typ": "JWT"}
    return json.loads(base64.urlsafe_b64decode(pad(payload)))


def test_kling_first_and_tail_image_end_to_end(service, keyframes, caplog):
    import time

    caplog.set_level(logging.DEBUG)
    service.statuses = ["submitted", "processing", "succeed"]
    fake = FakeTime()
    result = KlingGenerator(base_url=service.url, sleep=fake.sleep, clock=fake.clock).generate(
        _request(keyframes, {"access_key": KLING_ACCESS, "secret_key": KLING_SECRET}, frames=7),
        lambda f, s: None, lambda: None)
    create = service.requests[0]
    assert create["path"] == "/v1/videos/image2video"
    claims = _verify_kling_token(create["headers"]["Authorization"])
    assert claims["iss"] == KLING_ACCESS and claims["nbf"] <= time.time() < claims["exp"] <= time.time() + 1800
    body = create["body"]
    assert not body["image"].startswith("data:")   # Kling takes bare base64
    assert _decode_png(body["image"]).shape == (720, 1280, 3) and _decode_png(body["image_tail"]).shape == (720, 1280, 3)
    assert body["prompt"] == "the mug slides to the right" and body["mode"] == "pro"
    poll = service.requests[1]
    assert poll["path"] == "/v1/videos/image2video/task-1"
    _verify_kling_token(poll["headers"]["Authorization"])
    assert result.video.shape == (7, CAM_H, CAM_W, 3)
    for secret in (KLING_ACCESS, KLING_SECRET):
        assert secret not in caplog.text


def test_kling_account_problem_is_not_retried_but_rate_limit_is(service, keyframes):
    fake = FakeTime()
    generator = KlingGenerator(base_url=service.url, sleep=fake.sleep, clock=fake.clock)
    options = {"access_key": KLING_ACCESS, "secret_key": KLING_SECRET}
    service.create_failures = [(429, {"code": 1102, "message": "resource pack exhausted"})]
    with pytest.raises(ApiError, match="1102"):
        generator.generate(_request(keyframes, options), lambda f, s: None, lambda: None)
    assert len(service.requests) == 1

    service.requests.clear()
    service.create_failures = [(429, {"code": 1302, "message": "rate limit"})]
    service.statuses = ["succeed"]
    result = generator.generate(_request(keyframes, options, last=False), lambda f, s: None, lambda: None)
    assert len([r for r in service.requests if r["method"] == "POST"]) == 2
    assert "image_tail" not in service.requests[-3]["body"] and result.video.shape[0] == 9


def test_kling_failed_task_and_bad_key(service, keyframes):
    fake = FakeTime()
    generator = KlingGenerator(base_url=service.url, sleep=fake.sleep, clock=fake.clock)
    options = {"access_key": KLING_ACCESS, "secret_key": KLING_SECRET}
    service.statuses = ["processing", "failed"]
    service.failure_reason = "image resolution too low"
    with pytest.raises(ApiTaskFailedError, match="resolution too low"):
        generator.generate(_request(keyframes, options), lambda f, s: None, lambda: None)
    service.create_failures = [(401, {"code": 1004, "message": "token expired"})]
    with pytest.raises(ApiAuthError) as info:
        generator.generate(_request(keyframes, options), lambda f, s: None, lambda: None)
    assert KLING_SECRET not in info.value.user_message() and KLING_ACCESS not in info.value.user_message()


def test_kling_jwt_matches_the_documented_claims():
    token = kling_jwt(KLING_ACCESS, KLING_SECRET, now=1_700_000_000)
    claims = _verify_kling_token("Bearer " + token)
    assert claims == {"iss": KLING_ACCESS, "exp": 1_700_001_800, "nbf": 1_699_999_995}


def test_retry_policy_and_redaction():
    policy = RetryPolicy(base_delay=1.0, factor=2.0, max_delay=5.0)
    assert [policy.delay(k) for k in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.delay(0, retry_after=3.0) == 3.0
    assert redact(f"bad key {RUNWAY_KEY}!", [RUNWAY_KEY, ""]) == "bad key ***!"


def test_framing_round_trip_keeps_camera_pixels():
    image = _gradient_image(CAM_H, CAM_W)
    for model_h, model_w in ((768, 1280), (1280, 768), (480, 832), (64, 64)):
        framing = plan_framing(CAM_H, CAM_W, model_h, model_w)
        model = to_model_frame(image, framing)
        assert model.shape == (model_h, model_w, 3)
        back = from_model_video(model[None], framing)[0]
        err = np.abs(back.astype(float) - image.astype(float))
        assert back.shape == image.shape and np.median(err) <= 2.0, (model_h, model_w, np.median(err))


def test_a_malformed_key_is_not_echoed_by_the_http_library(service, keyframes):
    bad_key = "bad\nkey_SECRET_abcdef123"
    fake = FakeTime()
    with pytest.raises(ApiError) as info:
        RunwayGenerator(base_url=service.url + "/v1", sleep=fake.sleep, clock=fake.clock).generate(
            _request(keyframes, {"api_key": bad_key}), lambda f, s: None, lambda: None)
    assert "key_SECRET_abcdef123" not in info.value.user_message() and info.value.__cause__ is None
