"""Every model file in ``models/`` (one with a config dataclass) has a ModelTester subclass
in its mirror ``tests/models/test_<name>.py``: the tiny-config tester is not optional."""

import dataclasses
import importlib
import inspect
import pkgutil

import worldmill.models
from tests.models.tester import ModelTester


def _model_modules() -> list[str]:
    names = []
    for info in pkgutil.iter_modules(worldmill.models.__path__):
        mod = importlib.import_module(f"worldmill.models.{info.name}")
        configs = [
            c
            for _, c in inspect.getmembers(mod, inspect.isclass)
            if c.__module__ == mod.__name__ and dataclasses.is_dataclass(c)
        ]
        if configs:
            names.append(info.name)
    return names


def test_every_model_runs_the_model_tester():
    modules = _model_modules()
    assert "tokenizer" in modules
    missing = []
    for name in modules:
        try:
            tests = importlib.import_module(f"tests.models.test_{name}")
        except ModuleNotFoundError:
            missing.append(name)
            continue
        testers = [
            c
            for _, c in inspect.getmembers(tests, inspect.isclass)
            if issubclass(c, ModelTester) and c.__name__.startswith("Test")
        ]
        if not testers:
            missing.append(name)
    assert not missing, f"models without a ModelTester test class: {missing}"
