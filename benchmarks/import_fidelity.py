"""`facesynth import` against NVIDIA's own outputs: every official fixture imported (G, D and G_ema) and
recomputed, the largest absolute differences of ws, images and D logits, the import time, and what happens to
the hostile pickles.  Reads ../shared/fixtures/official (development data, never shipped).  Writes
results/import_fidelity.json and .md.

    python benchmarks/import_fidelity.py [--fixtures ../shared/fixtures/official]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from report import environment, write_results

from facesynth.errors import FacesynthError
from facesynth.importers import import_checkpoint
from facesynth.importers.fidelity import compare, summary

HERE = Path(__file__).resolve().parent
DEFAULT_FIXTURES = HERE.parents[1] / "shared" / "fixtures" / "official"
HOSTILE = ("evil-persistence-src.pkl", "evil-reduce-exec.pkl", "evil-tf-build-src.pkl")


def fidelity(fixtures: Path, work: Path) -> list[dict]:
    rows = []
    for pkl in sorted(fixtures.glob("*.pkl")):
        if pkl.name in HOSTILE:
            continue
        t0 = time.perf_counter()
        model = import_checkpoint(pkl, work / f"{pkl.stem}.safetensors", what="all", quiet=True)
        seconds = time.perf_counter() - t0
        diffs = compare(model, pkl.with_suffix(".ref.npz"))
        rows.append({"fixture": pkl.name, "import_s": seconds, **summary(diffs), "arrays": diffs})
    return rows


def hostile(fixtures: Path, work: Path) -> list[dict]:
    rows = []
    cwd = os.getcwd()
    os.chdir(work)  # each payload would create FACESYNTH_PWNED in the working folder
    try:
        for name in HOSTILE:
            try:
                import_checkpoint(fixtures / name, work / f"{name}.safetensors", quiet=True)
                outcome = "imported (nothing from the file ran)"
            except FacesynthError as e:
                outcome = str(e).split(': ', 1)[1]
            rows.append({"file": name, "outcome": outcome, "payload_ran": (work / "FACESYNTH_PWNED").exists()})
    finally:
        os.chdir(cwd)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=str(DEFAULT_FIXTURES))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    fixtures = Path(args.fixtures)
    if not fixtures.is_dir():
        raise SystemExit(f"{fixtures}: no such folder (the official fixtures live in ../shared)")
    with tempfile.TemporaryDirectory() as tmp:
        rows = fidelity(fixtures, Path(tmp))
        bad = hostile(fixtures, Path(tmp))
    env = environment()
    lines = [f"`facesynth import` against NVIDIA's reference outputs ({env['device']}, {env['threads']} threads, "
             f"torch {env['torch']}, {env['time']}); max |difference|, float32; tolerances 1e-5 (ws), 1e-4 "
             "(images, D logits)", "",
             "| fixture | ws | image | D logits | import (s) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['fixture']} | {r['ws']:.1e} | {r['image']:.1e} | {r['d_logits']:.1e} | "
                     f"{r['import_s']:.2f} |")
    lines += ["", "| hostile file | outcome | payload ran |", "|---|---|---|"]
    for r in bad:
        lines.append(f"| {r['file']} | {r['outcome']} | {'YES' if r['payload_ran'] else 'no'} |")
    write_results(args.out, "import_fidelity", {"env": env, "fixtures": rows, "hostile": bad}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
