"""The model-file format and the config sit below everything that uses them (no cycles, no training code
pulled in by reading a model file)."""

import json
import subprocess
import sys

import pytest


def _modules_after_import(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('facesynth'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("module, forbidden", [
    ("facesynth.config", ("facesynth.nets", "facesynth.presets", "facesynth.training", "facesynth.checkpoints")),
    ("facesynth.checkpoints", ("facesynth.nets", "facesynth.training", "facesynth.synthesis", "facesynth.metrics",
                               "facesynth.animate", "facesynth.web")),
    ("facesynth.presets", ("facesynth.nets", "facesynth.training")),
])
def test_lower_layers_import_no_upper_ones(module, forbidden):
    loaded = _modules_after_import(module)
    assert not [m for m in loaded if m.startswith(forbidden)], sorted(loaded)


def test_reading_a_model_needs_no_training_code():
    from facesynth import checkpoints

    assert checkpoints.load_generator.__module__.startswith("facesynth.checkpoints")
    assert checkpoints.read_model.__module__.startswith("facesynth.checkpoints")
