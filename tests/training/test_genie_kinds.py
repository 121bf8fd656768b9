"""The ``lam`` and ``dynamics`` kinds' configs and CLI: bad values and wrong upstream runs
fail before anything starts, naming the key; ``--lam`` / ``--tokenizer`` are offered."""

from __future__ import annotations

import pytest

from worldmill.config import ConfigError
from worldmill.training.cli import build_parser
from worldmill.training.registry import kinds, resolve_config


def test_kinds_registered_and_cli_offers_upstream_flags():
    assert {"lam", "dynamics"} <= set(kinds())
    a = build_parser().parse_args(
        ["dynamics", "--data", "S", "--out", "R", "--tokenizer", "T", "--lam", "L"]
    )
    assert (a.kind, a.tokenizer, a.lam) == ("dynamics", "T", "L")


def test_lam_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="data.size"):
        resolve_config("lam", None, ["data.size=60", "model.levels=3"])
    with pytest.raises(ConfigError, match="num_codes"):
        resolve_config("lam", None, ["model.num_codes=1"])


def test_dynamics_needs_a_dv_tokenizer_and_a_lam_run(tiny_run):
    with pytest.raises(ConfigError, match="lam: a lam run folder is required"):
        resolve_config("dynamics", None, [f"tokenizer={tiny_run('tokenizer')}"])
    lam = tiny_run("lam")
    with pytest.raises(ConfigError, match="tokenizer: .* is a 'lam' run"):
        resolve_config("dynamics", None, [f"tokenizer={lam}", f"lam={lam}"])
    with pytest.raises(ConfigError, match="CV tokenizer"):  # the tests' default tiny run is CV
        resolve_config("dynamics", None, [f"tokenizer={tiny_run('tokenizer')}", f"lam={lam}"])
    with pytest.raises(ConfigError, match="sample.steps"):
        resolve_config("dynamics", None, ["sample.steps=0"])
