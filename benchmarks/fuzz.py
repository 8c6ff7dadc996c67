"""Fuzzing, the long version of tests/test_fuzz.py: mutated and random bytes through image decoding, the dataset
tool, video preparation, the web upload path and the restricted unpickler of `facesynth import`, for ``--minutes`` per target, with fresh random examples in
batches until the time is up.  Every failure (an exception other than the clean ones, a hang, a 5xx) is recorded
with hypothesis's shrunk falsifying example.  Writes results/fuzz.json and results/fuzz.md (a run of some targets
keeps the others' earlier figures).

    python benchmarks/fuzz.py --minutes 10 --target images|dataset|video|upload|checkpoint|all
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import logging
import random
import sys
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the targets and bad-file makers live with the tests

import fuzz_targets as ft  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from report import environment, write_results  # noqa: E402

TARGETS = ("images", "dataset", "video", "upload", "checkpoint")


def _upload_client():
    from fastapi.testclient import TestClient

    from facesynth.web import ServerSettings, create_app

    client = TestClient(create_app(ServerSettings(project_steps=1, max_waiting_jobs=1000)))
    client.__enter__()
    return client


def target(name: str):
    """(strategy, check) for one target."""
    if name == "images":
        return ft.image_bytes(), ft.check_image
    if name == "dataset":
        return ft.dataset_files(), ft.check_dataset
    if name == "video":
        try:
            ft.detector()
            faces = True
        except Exception as e:  # noqa: BLE001
            print(f"video: no landmark detector ({e}); probing and reading only", file=sys.stderr)
            faces = False
        return ft.video_bytes(), lambda data: ft.check_video(data, with_faces=faces)
    if name == "upload":
        client = _upload_client()

        def check(example):
            data, filename = example
            return f"{ft.check_upload_functions(data)}/{ft.check_upload_endpoint(client, data, filename)}"

        return st.tuples(ft.upload_bytes(), ft.upload_names()), check
    if name == "checkpoint":
        return ft.checkpoint_bytes(), ft.check_checkpoint
    raise ValueError(name)


def fuzz(name: str, seconds: float, batch: int, rng: random.Random) -> dict:
    strategy, check = target(name)
    examples, outcomes, failures, batches = 0, collections.Counter(), [], 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        batch_seed = rng.getrandbits(32)

        @seed(batch_seed)
        @settings(max_examples=batch, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(strategy)
        def run(example):
            nonlocal examples
            examples += 1
            outcomes[str(check(example))] += 1

        try:
            run()
        except Exception as e:  # noqa: BLE001 - a failure found: record it and go on
            notes = "\n".join(getattr(e, "__notes__", []))
            failures.append({"error": f"{type(e).__name__}: {str(e)[:500]}", "seed": batch_seed,
                             "example": notes[:3000],
                             "where": "".join(traceback.format_tb(e.__traceback__)[-3:])[-1500:]})
            print(f"{name}: FAILURE {failures[-1]['error'][:200]}", file=sys.__stderr__, flush=True)
        batches += 1
        elapsed = time.perf_counter() - t0
        print(f"{name}: {examples} examples, {len(failures)} failures, {elapsed:.0f} s", file=sys.stderr)
    elapsed = time.perf_counter() - t0
    return {"seconds": round(elapsed, 1), "examples": examples, "examples_per_s": round(examples / elapsed, 2),
            "failures": len(failures), "batches": batches, "outcomes": dict(outcomes.most_common(12)),
            "failure_details": failures}


def report(out: str, results: dict) -> None:
    payload = {"environment": environment(), "targets": results}
    lines = ["# Fuzzing: mutated and random bytes, a valid result or a clean error", "",
             f"{payload['environment']['cpus']} CPUs; {payload['environment']['time']}; "
             "`benchmarks/fuzz.py`, targets in `tests/fuzz_targets.py`", "",
             "| target | seconds | examples | examples/s | failures | most frequent outcomes |",
             "|---|---|---|---|---|---|"]
    for name in TARGETS:
        if name in results:
            r = results[name]
            top = ", ".join(f"{k} {v}" for k, v in list(r["outcomes"].items())[:5])
            lines.append(f"| {name} | {r['seconds']:.0f} | {r['examples']} | {r['examples_per_s']:.1f} | "
                         f"{r['failures']} | {top} |")
    for name in TARGETS:
        for f in results.get(name, {}).get("failure_details", [])[:5]:
            lines += ["", f"- **{name}**: `{f['error'][:200]}` (seed {f['seed']})"]
    write_results(out, "fuzz", payload, lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="per target")
    ap.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    ap.add_argument("--batch", type=int, default=25, help="examples per hypothesis run (a fresh seed each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()

    warnings.filterwarnings("ignore")  # PIL's "Corrupt EXIF data" and the like: the inputs are meant to be bad
    logging.getLogger("facesynth.web").setLevel(logging.CRITICAL + 1)  # a 5xx is recorded as a failure anyway
    names = TARGETS if args.target == "all" else (args.target,)
    previous = Path(args.out) / "fuzz.json"
    results = json.loads(previous.read_text()).get("targets", {}) if previous.is_file() else {}
    rng = random.Random(args.seed)
    for name in names:
        with contextlib.redirect_stderr(io.StringIO()):  # the skip lines of thousands of bad files
            sys.__stderr__.write(f"fuzzing {name} for {args.minutes:g} min\n")
            results[name] = fuzz(name, args.minutes * 60, args.batch, rng)
        results[name]["minutes"] = args.minutes
        report(args.out, results)  # after each target: a later one that cannot start loses nothing
    return 0 if all(r["failures"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
