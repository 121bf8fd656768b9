from __future__ import annotations

import pytest

from worldmill.config import ConfigError, CurateConfig, load_config


def test_defaults_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("split:\n  min_clip_s: 3\n  max_clip_s: 20\ntranscode: {height: 128}\n")
    cfg = load_config(
        CurateConfig, f, ["split.max_clip_s=30", "stages.motion.params={min_score: 0.5}"], input="x"
    )
    assert cfg.split.min_clip_s == 3 and cfg.split.max_clip_s == 30
    assert cfg.transcode.height == 128
    motion = next(s for s in cfg.stages if s.name == "motion")
    assert motion.params == {"min_score": 0.5}
    assert cfg.input == "x"


@pytest.mark.parametrize(
    "override, key",
    [
        ("split.min_clip_s=-1", "split.min_clip_s"),
        ("split.max_clip_s=1", "split.max_clip_s"),
        ("transcode.crf=99", "transcode.crf"),
        ("dask.processes=maybe", "dask.processes"),
        ("bogus=1", "bogus"),
        ("split.method=magic", "split.method"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(CurateConfig, None, [override])
    assert key in str(e.value)


def test_bad_files_and_syntax(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(CurateConfig, tmp_path / "none.yaml")
    (tmp_path / "l.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(CurateConfig, tmp_path / "l.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(CurateConfig, None, ["novalue"])
