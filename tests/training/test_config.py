"""Run config validation: bad values fail with the key named, before anything starts."""

import pytest

from worldmill.config import ConfigError, load_config
from worldmill.training import cli
from worldmill.training.kinds.tokenizer import TokenizerTrainConfig


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  kind: dv\n  temporal_compression: 8\ndata:\n  num_frames: 17\n")
    cfg = load_config(TokenizerTrainConfig, f, ["run.steps=7", "model.fsq_levels=[5, 5, 5]"])
    assert cfg.model.kind == "dv" and cfg.model.temporal_compression == 8
    assert cfg.run.steps == 7 and cfg.model.fsq_levels == [5, 5, 5]


@pytest.mark.parametrize(
    "override,needle",
    [
        ("model.temporal_compression=6", "model.temporal_compression"),
        ("run.steps=0", "run.steps"),
        ("model.kind=vq", "model.kind"),
        ("data.crop=60", "data.crop (60) must be divisible"),
        ("data.num_frames=8", "data.num_frames (8) must be 1 + k"),
        ("model.fsq_levels=[8, 1]", "fsq_levels"),
        ("optim.lrr=1", "optim.lrr"),
    ],
)
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError, match="invalid configuration") as e:
        load_config(TokenizerTrainConfig, None, [override])
    assert needle in str(e.value)


def test_cli_rejects_bad_config_before_starting_anything(tmp_path, shards, capsys):
    run = tmp_path / "run"
    rc = cli.main(["tokenizer", "--data", str(shards), "--out", str(run), "--set", "data.crop=60"])
    assert rc == 2
    assert "data.crop (60) must be divisible" in capsys.readouterr().err
    assert not run.exists()


def test_cli_rejects_missing_shards(tmp_path, capsys):
    rc = cli.main(["tokenizer", "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert rc == 2 and "no WebDataset shards" in capsys.readouterr().err
