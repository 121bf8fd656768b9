"""``Guardrails`` config: on by default, bad values name the key."""

from __future__ import annotations

import argparse

import pytest

from worldmill.config import ConfigError, load_config
from worldmill.guardrails import Guardrails, add_flag, from_args
from worldmill.guardrails.config import NSFW_CLASSES, NUDENET_CLASSES


def test_nudenet_class_list_is_the_detectors():
    import nudenet.nudenet as nn

    assert NUDENET_CLASSES == getattr(nn, "__labels")
    assert set(NSFW_CLASSES) <= set(NUDENET_CLASSES)


@pytest.mark.parametrize(
    "override, key",
    [("nsfw_classes=[NAKED]", "nsfw_classes"), ("threshold=1.5", "threshold"), ("blur=1", "blur")],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(Guardrails, None, [override])


def test_on_by_default_off_only_by_the_flag():
    p = argparse.ArgumentParser()
    add_flag(p)
    assert Guardrails().enabled and from_args(p.parse_args([])).enabled
    assert from_args(p.parse_args(["--no-guardrails"])).enabled is False
