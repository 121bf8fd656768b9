"""Model kinds by name. Adding a kind: a model file in ``models/``, a spec in
``worldmill/training/kinds/<kind>.py``, and one line here."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worldmill.config import ConfigError, load_config

if TYPE_CHECKING:  # the spec module imports torch; listing kinds must not
    from worldmill.training.spec import Spec

# kind -> module defining ``SPEC`` (imported lazily: torch/megatron load only when used).
KINDS: dict[str, str] = {
    "tokenizer": "worldmill.training.kinds.tokenizer",
    "ar": "worldmill.training.kinds.ar",
    "diffusion": "worldmill.training.kinds.diffusion",
    "lam": "worldmill.training.kinds.lam",
    "dynamics": "worldmill.training.kinds.dynamics",
}


# Upstream-run fields a kind may declare; the CLI offers each as ``--<field> RUN``.
UPSTREAM_FIELDS: tuple[str, ...] = ("tokenizer", "lam")


def kinds() -> list[str]:
    return sorted(KINDS)


def get_spec(kind: str) -> Spec:
    if kind not in KINDS:
        raise ConfigError(f"unknown training kind {kind!r}; choose from {kinds()}")
    return importlib.import_module(KINDS[kind]).SPEC


def resolve_config(
    kind: str,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    config: dict | None = None,
) -> Any:
    """Validated run config: defaults < YAML file < ``config`` dict < ``key=value`` overrides.
    Raises ``worldmill.config.ConfigError`` (naming the key) on any bad value, including an
    upstream run that does not exist or is of the wrong kind."""
    spec = get_spec(kind)
    cfg = load_config(spec.config, config_path, overrides, **(config or {}))
    if cfg.kind != kind:
        raise ConfigError(f"kind: this is a {kind!r} config, got kind={cfg.kind!r}")
    spec.resolve_upstream(cfg)
    if cfg.init_from:
        from worldmill.training.spec import check_run

        check_run(cfg.init_from, None, "init_from")
    return cfg


def load_run_config(run: str | Path) -> Any:
    """The validated config of an existing run folder (its kind decides the class)."""
    import json

    data = json.loads((Path(run) / "config.json").read_text())
    return get_spec(data.get("kind") or "tokenizer").config.from_run(data)
