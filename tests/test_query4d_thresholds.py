"""The 4D query's thresholds are reachable from the panel (the 4D Query section's Advanced box) and the batch CLI
(--query-*): the request carries the values set and leaves the automatic spatial cut out, a value out of range
is refused with a message before anything is asked, and the batch report records the values the engine used.
(The engine turning them into QuerySettings that change the answer: tests/test_query4d.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from blender_fixtures import addon, bpy, clean_scene, datablock_snapshot  # noqa: F401 (fixtures)
from segment_fakes import InProcessClient

from blender_addon import batch
from blender_addon.cli import batch_args
from blender_addon.engine_link import engine_client
from blender_addon.io import dynamic_import
from blender_addon.query4d import query4d_ops
from engine.dynamic import make_moving_sequence, write_dynamic
from engine.query4d.thresholds import THRESHOLDS, QueryThresholdError, request_thresholds

# Torch-free but for the one test that runs the real handler: the rest runs on every Blender's venv.
pytestmark = pytest.mark.blender
ENGINE_DEFAULTS = {"temporal_threshold": 0.5, "smoothing": 1.0, "min_relevancy": 0.52, "grow_threshold": 0.4}
TIMESTEPS = 12


@pytest.fixture
def npz(tmp_path):
    return write_dynamic(tmp_path / "params.npz", make_moving_sequence(60, timesteps=TIMESTEPS, move_start=4,
                                                                        move_end=8))


@pytest.fixture
def recorded(monkeypatch):
    """An engine whose query4d records its params and answers 'no match' at once (no field is built), with the
    thresholds the handler reports: its defaults overlaid with those sent (the real handler's are compared in
    test_batch_options_reach_the_engine_and_the_report and tests/test_query4d.py)."""
    seen: list[dict] = []

    def fake_query(ctx, params, arrays):
        seen.append(params)
        n = int(np.load(params["npz_path"])["means3D"].shape[1])
        never = np.full(n, -1, np.int32)
        used = {**ENGINE_DEFAULTS, "spatial_threshold": None, **request_thresholds(params)}
        return ({"span": None, "timesteps": TIMESTEPS, "counts": [0] * TIMESTEPS, "extractor": "fake",
                 "thresholds": used},
                {"mask_start": never, "mask_end": never, "peak": np.zeros(n, np.float32)})

    monkeypatch.setattr(engine_client, "get_client", lambda: InProcessClient({"query4d": fake_query}))
    return seen


def _thresholds(params: dict) -> dict:
    return {k: params[k] for k in THRESHOLDS if k in params}


def test_the_engines_settings_take_the_shared_defaults():
    pytest.importorskip("torch")
    from engine.query4d.query import QuerySettings

    settings = QuerySettings()
    assert settings.spatial_threshold is None and settings.min_spatial_threshold == 0.5
    assert {k: getattr(settings, k) for k in ENGINE_DEFAULTS} == ENGINE_DEFAULTS
    assert {k: THRESHOLDS[k].default for k in ENGINE_DEFAULTS} == ENGINE_DEFAULTS


def test_panel_sends_its_thresholds_and_leaves_the_automatic_cut_out(clean_scene, npz, recorded):
    obj = dynamic_import.import_dynamic(npz)
    bpy.context.view_layer.objects.active = obj
    settings = clean_scene.gaussians_query4d
    settings.text = "the red sphere rolling"
    assert settings.spatial_auto and not settings.show_advanced     # the defaults: automatic, box closed
    assert bpy.ops.gaussians.query4d() == {"FINISHED"}
    # The engine's defaults exactly (Blender holds float32: 0.52 reads back as 0.51999998), no spatial cut.
    assert _thresholds(recorded[-1]) == ENGINE_DEFAULTS

    settings.spatial_auto = False
    settings.spatial_threshold, settings.temporal_threshold, settings.smoothing = 0.8, 0.7, 2.5
    settings.min_relevancy, settings.grow_threshold = 0.6, 0.0
    assert bpy.ops.gaussians.query4d() == {"FINISHED"}
    assert _thresholds(recorded[-1]) == {"spatial_threshold": 0.8, "temporal_threshold": 0.7, "smoothing": 2.5,
                                         "min_relevancy": 0.6, "grow_threshold": 0.0}
    settings.spatial_auto = True          # the value stays, greyed out, and is not sent
    assert bpy.ops.gaussians.query4d() == {"FINISHED"}
    assert "spatial_threshold" not in recorded[-1] and settings.spatial_threshold == pytest.approx(0.8)


@pytest.mark.parametrize("name, value, message", [
    ("smoothing", -1.0, "Smoothing must be between 0 and 100, got -1"),
    ("min_relevancy", 0.3, "Min Relevancy must be between 0.5 and 1, got 0.3"),
    ("spatial_threshold", 1.2, "Spatial Threshold must be between 0 and 1, got 1.2"),
])
def test_panel_refuses_a_value_out_of_range_with_a_message(clean_scene, npz, recorded, name, value, message):
    obj = dynamic_import.import_dynamic(npz)
    bpy.context.view_layer.objects.active = obj
    settings = clean_scene.gaussians_query4d
    settings.text, settings.spatial_auto = "the red sphere rolling", False
    setattr(settings, name, value)
    assert getattr(settings, name) == pytest.approx(value)     # kept as typed, not clamped
    before = datablock_snapshot()
    with pytest.raises(RuntimeError, match=message):             # the operator's ERROR report
        bpy.ops.gaussians.query4d()
    with pytest.raises(QueryThresholdError) as info:
        query4d_ops.query_thresholds(settings)
    assert "the default is" in info.value.user_message()        # says what the value does and its default
    assert not recorded and datablock_snapshot() == before


def test_an_out_of_range_spatial_value_under_auto_is_not_asked_about(clean_scene):
    settings = clean_scene.gaussians_query4d
    settings.spatial_threshold = 7.0           # not sent while Auto is on, so not refused
    assert "spatial_threshold" not in query4d_ops.query_thresholds(settings)


class _Layout:
    """Records what draw_thresholds draws: each prop with its row's active and alert flags."""

    def __init__(self, drawn=None):
        self.drawn = [] if drawn is None else drawn
        self.active, self.alert, self.use_property_split = True, False, False

    def box(self):
        return _Layout(self.drawn)

    def row(self, **_):
        return _Layout(self.drawn)

    def prop(self, data, name, **_):
        self.drawn.append((name, self.active, self.alert))


def test_advanced_box_draws_every_threshold(clean_scene):
    settings = clean_scene.gaussians_query4d
    layout = _Layout()
    query4d_ops.draw_thresholds(layout, settings)
    assert layout.drawn == [("show_advanced", True, False)]        # closed: only its header
    settings.show_advanced, settings.smoothing = True, -1.0
    layout = _Layout()
    query4d_ops.draw_thresholds(layout, settings)
    drawn = {name: (active, alert) for name, active, alert in layout.drawn}
    assert set(drawn) == {"show_advanced", "spatial_auto", *THRESHOLDS}
    assert drawn["spatial_threshold"] == (False, False)             # greyed out while Auto is on
    assert drawn["smoothing"] == (True, True) and drawn["grow_threshold"] == (True, False)   # red: out of range


def _run(capsys, *argv):
    status = batch.run([str(a) for a in argv])
    return status, capsys.readouterr().err.strip()


@pytest.fixture
def real_engine(monkeypatch, tmp_path):
    """The real query4d handler in this process (oracle extractor, a small field), recording each request's
    params; needs torch, so its test is skipped on the torch-free Blender venvs."""
    torch = pytest.importorskip("torch")
    from engine.query4d import handler
    from test_batch_query4d import SMALL_FIELD
    from blender_addon.query4d import query4d_request

    monkeypatch.setenv("ANIMATE_GAUSSIANS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(query4d_request.EXTRACTOR_ENV, "oracle")
    monkeypatch.setattr(query4d_request, "FIELD_OPTIONS", SMALL_FIELD)
    monkeypatch.setattr(handler, "_fields", type(handler._fields)())     # this test's fields only
    seen: list[dict] = []

    def recording(ctx, params, arrays):
        seen.append(params)
        return handler.handle_query4d(ctx, params, arrays)

    client = InProcessClient({"query4d": recording})
    monkeypatch.setattr(engine_client, "get_client", lambda: client)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # the CPU rasterizer's many small ops on a busy 2-core runner
    yield seen
    torch.set_num_threads(threads)


def test_batch_options_reach_the_engine_and_the_report(clean_scene, real_engine, capsys, tmp_path):
    sequence = make_moving_sequence(60, timesteps=TIMESTEPS, move_start=4, move_end=8)
    npz = write_dynamic(tmp_path / "params.npz", sequence)
    report = tmp_path / "report.json"
    status, err = _run(capsys, "--dynamic", npz, "--query", "the red sphere rolling", "--device", "cpu",
                       "--query-spatial-threshold", "0.8", "--query-temporal-threshold", "0.6",
                       "--query-smoothing", "0.5", "--query-min-relevancy", "0.53", "--query-grow-threshold", "0",
                       "--report", report)
    assert status == 0, err
    given = {"spatial_threshold": 0.8, "temporal_threshold": 0.6, "smoothing": 0.5, "min_relevancy": 0.53,
             "grow_threshold": 0.0}
    assert _thresholds(real_engine[0]) == given
    (q,) = json.loads(report.read_text())["queries"]
    assert q["thresholds"] == given and q["matched"]
    obj = bpy.data.objects[q["objects"][0]]
    first = np.empty(len(obj.data.vertices), np.int32)
    obj.data.attributes[dynamic_import.QUERY_START_ATTRIBUTE].data.foreach_get("value", first)
    assert 0 < q["gaussians"][obj.name] < (sequence.labels == 1).sum()   # a high cut: part of the sphere
    assert (sequence.labels[first >= 0] == 1).all()


def test_batch_automatic_cut_and_defaults_are_not_sent_but_reported(clean_scene, npz, recorded, capsys, tmp_path):
    report = tmp_path / "report.json"
    status, err = _run(capsys, "--dynamic", npz, "--query", "the red sphere", "--query-spatial-threshold", "auto",
                       "--query-smoothing", "3", "--report", report)
    assert status == 0, err
    assert _thresholds(recorded[-1]) == {"smoothing": 3.0}      # auto and the options not given: not sent
    (q,) = json.loads(report.read_text())["queries"]
    assert q["thresholds"] == dict(ENGINE_DEFAULTS, spatial_threshold=None, smoothing=3.0)


@pytest.mark.parametrize("argv, message", [
    (["--query-smoothing", "-1"], "--query-smoothing must be between 0 and 100, got -1"),
    (["--query-spatial-threshold", "1.5"], "--query-spatial-threshold must be between 0 and 1, got 1.5"),
    (["--query-spatial-threshold", "half"], "expected a number or auto, got 'half'"),
    (["--query-min-relevancy", "0.2"], "--query-min-relevancy must be between 0.5 and 1"),
    (["--query-temporal-threshold", "nan"], "--query-temporal-threshold must be between 0 and 1, got nan"),
    (["--query-grow-threshold", "x"], "invalid float value: 'x'"),
])
def test_batch_refuses_bad_threshold_values_before_anything_runs(clean_scene, npz, recorded, capsys, tmp_path,
                                                                 argv, message):
    blend = tmp_path / "out.blend"
    status, err = _run(capsys, "--dynamic", npz, "--query", "the red sphere", *argv, "--save", blend)
    assert status == 2 and message in err and len(err.splitlines()) == 1, err
    assert not recorded and not blend.exists()


def test_batch_threshold_options_need_query_and_are_in_the_help(capsys):
    for t in THRESHOLDS.values():
        args = batch_args.build_parser().parse_args(["--dynamic", "x.npz", t.option, "0.5"])
        with pytest.raises(batch_args.BatchError, match=f"{t.option} only applies to --query"):
            batch_args.check_arguments(args, {"import_dynamic"})
    with pytest.raises(SystemExit):
        batch_args.build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert all(t.option in text for t in THRESHOLDS.values()) and "default auto" in text
