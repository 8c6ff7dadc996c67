"""A GANConfig read from a JSON file wherever a preset name is taken (`--preset my.json`)."""

import json

import pytest

from facesynth.cli import main
from facesynth.errors import FacesynthError
from facesynth.presets import get_preset


def test_json_file_gives_its_config_with_defaults_for_the_rest(tmp_path):
    path = tmp_path / "small.json"
    path.write_text(json.dumps({"resolution": 16, "channel_base": 256, "channel_max": 32, "z_dim": 32,
                                "w_dim": 32, "mapping_layers": 2, "batch": 4}))
    cfg = get_preset(str(path))
    assert (cfg.name, cfg.resolution, cfg.batch, cfg.arch) == ("small", 16, 4, "stylegan2")
    full = tmp_path / "full.json"
    full.write_text(json.dumps(get_preset("tiny").to_dict()))
    assert get_preset(str(full)) == get_preset("tiny")


@pytest.mark.parametrize("text, problem", [
    ("{not json", r"bad\.json: not valid JSON \(Expecting property name .* at line 1, column 2\)"),
    ('{"resolution": 16, "colour": 3}', r"bad\.json: unknown config keys \['colour'\]"),
    ('{"resolution": 17}', r"bad\.json: resolution must be a power of two"),
    ("[16]", r"bad\.json: expected a JSON object, got list"),
])
def test_bad_json_config_names_the_file_and_the_problem(tmp_path, text, problem):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(FacesynthError, match=problem):
        get_preset(str(path))


def test_missing_file_and_unknown_name_are_clear(tmp_path):
    with pytest.raises(FacesynthError, match=r"absent\.json: no such config file"):
        get_preset(str(tmp_path / "absent.json"))
    with pytest.raises(FacesynthError, match=r"unknown preset 'nope'.*or the path of a config \.json file"):
        get_preset("nope")


def test_train_takes_a_config_file_as_preset(face_dataset, tmp_path, capsys):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({**get_preset("tiny").to_dict(), "name": "mine", "batch": 4}))
    out = tmp_path / "run"
    assert main(["train", "--data", str(face_dataset), "--out", str(out), "--preset", str(path), "--kimg", "0.008",
                 "--quiet", "--no-history"]) == 0
    assert '"kimg": 0.008' in capsys.readouterr().out
    assert main(["train", "--data", str(face_dataset), "--out", str(tmp_path / "r2"), "--preset",
                 str(tmp_path / "typo.json"), "--kimg", "0.008", "--quiet"]) == 2
    assert "typo.json: no such config file" in capsys.readouterr().err
