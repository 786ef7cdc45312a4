"""Hosted APIs never send a task-creating request twice once it may have reached the server (a user would be
billed twice); only requests that cannot have arrived (connection refused, 429) are retried. Kling's
cfg_scale goes only to the models that take it."""

from __future__ import annotations

import pytest

from engine.motion.generators.kling import KlingGenerator, takes_cfg_scale
from engine.motion.generators.runway import RunwayGenerator
from engine.motion.http_api import ApiError
from tests.test_motion_generators_api import (KLING_ACCESS, KLING_SECRET, RUNWAY_KEY, FakeTime,  # noqa: F401
                                              _request, keyframes, runway_video, service)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_on_create_is_not_retried(service, keyframes, status):
    service.create_failures = [(status, {"error": "upstream hiccup"})] * 3
    service.statuses = ["SUCCEEDED"]
    fake = FakeTime()
    with pytest.raises(ApiError, match="may have been created") as info:
        RunwayGenerator(base_url=service.url + "/v1", sleep=fake.sleep, clock=fake.clock).generate(
            _request(keyframes, {"api_key": RUNWAY_KEY}), lambda f, s: None, lambda: None)
    assert len([r for r in service.requests if r["method"] == "POST"]) == 1
    assert "billed twice" in info.value.user_message()


def test_polling_is_still_retried(service, keyframes):
    # GETs have no side effect: a 429 on create (refused before any work) is retried, and so are polls.
    service.create_failures = [(429, {"error": "slow down"})]
    service.statuses = ["SUCCEEDED"]
    fake = FakeTime()
    result = RunwayGenerator(base_url=service.url + "/v1", sleep=fake.sleep, clock=fake.clock).generate(
        _request(keyframes, {"api_key": RUNWAY_KEY}), lambda f, s: None, lambda: None)
    assert len([r for r in service.requests if r["method"] == "POST"]) == 2 and result.video.shape[0] == 9


@pytest.mark.parametrize("model, sent", [("kling-v1-6", True), ("kling-v1-5", True), ("kling-v2-1", False),
                                         ("kling-v2-master", False)])
def test_kling_cfg_scale_only_for_models_that_take_it(service, keyframes, model, sent):
    assert takes_cfg_scale(model) is sent
    service.statuses = ["succeed"]
    fake = FakeTime()
    KlingGenerator(base_url=service.url, sleep=fake.sleep, clock=fake.clock).generate(
        _request(keyframes, {"access_key": KLING_ACCESS, "secret_key": KLING_SECRET, "model": model}),
        lambda f, s: None, lambda: None)
    body = service.requests[0]["body"]
    assert body["model_name"] == model and ("cfg_scale" in body) is sent
