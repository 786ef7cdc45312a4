"""Kill-and-retry rounds: the engine fails in the middle of a request (segment, animate, query4d and render in
turn), then the same request is retried on the same client. Prints, one figure per line: rounds, changed scenes
(must be 0), stuck calls (no answer within --stuck-after s; must be 0), failed retries (must be 0), and the
seconds from the fault to the error and per round.

Run: .venv/bin/python benchmarks/fault_rounds.py [--rounds 100] [--faults kill,hang,garbage]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from engine_faults import FAULTS_ENV, REQUEST_TYPES, faulty_engine_python  # noqa: E402
from fault_scene import make_scene, run_request  # noqa: E402
from scene_state import differences, scene_state  # noqa: E402

import blender_addon  # noqa: E402
from blender_addon.engine_link import engine_client  # noqa: E402
from blender_addon.engine_link.engine_watchdog import STALL_ENV  # noqa: E402
from engine.errors import EngineError  # noqa: E402
from engine.synthetic_scene import make_primitives_scene  # noqa: E402


class Stuck(Exception):
    pass


def _alarm(signum, frame):
    raise Stuck()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--faults", default="kill", help="comma-separated: kill, hang, garbage (cycled)")
    parser.add_argument("--hang-limit", type=float, default=1.0, help="stall limit (s) during hang faults")
    parser.add_argument("--stuck-after", type=float, default=60.0)
    args = parser.parse_args(argv)
    faults_cycle = args.faults.split(",")
    blender_addon.register()
    signal.signal(signal.SIGALRM, _alarm)
    changed = stuck = failed_retries = wrong_errors = 0
    to_error, per_round = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ply = make_primitives_scene(gaussians_per_object=60, sh_degree=1, seed=3).write(tmp / "small.ply")
        faults = tmp / "faults.json"
        client = engine_client.EngineClient(python=faulty_engine_python(tmp), env={**os.environ, FAULTS_ENV: str(faults)})
        for i in range(args.rounds):
            request_type = REQUEST_TYPES[i % len(REQUEST_TYPES)]
            fault = faults_cycle[(i // len(REQUEST_TYPES)) % len(faults_cycle)]
            scene, obj = make_scene(ply)
            before = scene_state()
            faults.write_text(json.dumps({request_type: fault}))
            os.environ[STALL_ENV] = str(args.hang_limit)
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, args.stuck_after)
            try:
                run_request(request_type, scene, obj, client, tmp / f"out{i}")
                wrong_errors += 1              # the fault must surface as an error
            except EngineError:
                to_error.append(time.perf_counter() - start)
            except Stuck:
                stuck += 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            changed += bool(differences(before, scene_state()))
            os.environ.pop(STALL_ENV, None)
            signal.setitimer(signal.ITIMER_REAL, args.stuck_after)
            try:
                run_request(request_type, scene, obj, client, tmp / f"out{i}")
            except Stuck:
                stuck += 1
            except Exception as exc:  # noqa: BLE001 - counted and shown
                failed_retries += 1
                print(f"round {i}: retry of {request_type} failed: {exc}", file=sys.stderr)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            per_round.append(time.perf_counter() - start)
        client.stop()
    print(f"fault rounds: {args.rounds} ({args.faults} × {', '.join(REQUEST_TYPES)})")
    print(f"changed scenes: {changed}")
    print(f"stuck calls: {stuck}")
    print(f"failed retries: {failed_retries}")
    print(f"faults that did not surface as an error: {wrong_errors}")
    if to_error:
        print(f"fault to error: median {statistics.median(to_error):.2f} s, max {max(to_error):.2f} s")
    print(f"per round (fault + retry): median {statistics.median(per_round):.2f} s")
    return 0 if changed == stuck == failed_retries == wrong_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
