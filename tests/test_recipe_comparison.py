"""benchmarks/recipe_comparison.py: a run trained beyond a mark is measured at its last kept checkpoint before it."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def comparison():
    sys.path.insert(0, str(BENCH))
    try:
        import recipe_comparison
    finally:
        sys.path.remove(str(BENCH))
    return recipe_comparison


def fake_run(run: Path, history: list[int], latest: int) -> Path:
    (run / "history").mkdir(parents=True)
    for n in history:
        (run / "history" / f"G_ema-{n:09d}.safetensors").write_bytes(b"")
    (run / f"snapshot-{latest:09d}").mkdir()
    (run / "latest.json").write_text(json.dumps({"snapshot": f"snapshot-{latest:09d}", "images_seen": latest}))
    return run


def test_a_longer_run_is_measured_at_its_checkpoint_before_the_mark(comparison, tmp_path):
    run = fake_run(tmp_path / "run", [5024, 10016, 35008, 40000, 60000], latest=60000)
    before = comparison.checkpoint_before(run, 36.9)
    assert before == run / "snapshot-000035008" and comparison.snapshot_kimg(before) == 35.008
    # Pruned, the snapshot's generator is its history entry; a kept snapshot is itself.
    assert comparison.kept_generator(before) == run / "history" / "G_ema-000035008.safetensors"
    assert comparison.kept_generator(run / "snapshot-000060000") == run / "snapshot-000060000"


def test_a_run_short_of_the_mark_trains_on(comparison, tmp_path):
    run = fake_run(tmp_path / "run", [5024, 10016], latest=10016)
    assert comparison.checkpoint_before(run, 36.9) is None
    assert comparison.checkpoint_before(tmp_path / "new-run", 36.9) is None


def test_no_checkpoint_before_the_mark_is_a_clear_stop(comparison, tmp_path):
    run = fake_run(tmp_path / "run", [40000], latest=40000)
    with pytest.raises(SystemExit, match="keeps no checkpoint before it"):
        comparison.checkpoint_before(run, 36.9)
