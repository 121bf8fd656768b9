"""Deployment ``train/<kind>``: the training flow on a process work pool, run on demand
(no schedule; training is started by people or by an upstream curate run). Register it
against a running Prefect server (``PREFECT_API_URL``)::

    python -m worldmill.deployments.train tokenizer --data /data/curated/shards \\
        --out /runs/tok-cv --set run.steps=20000
    prefect worker start --pool worldmill-process
    prefect deployment run train/tokenizer                # or with --param overrides=[...]

    python -m worldmill.deployments.train ar --data /data/curated/shards \
        --tokenizer /runs/tok-dv --out /runs/ar        # train/ar: world model on DV tokens

    python -m worldmill.deployments.train genie --data /data/rollouts/shards \
        --out /runs/genie --set lam.run.steps=2000      # train/genie: the whole genie chain

The stored parameters are validated with the same config models before registering, so a
deployment can never carry a bad value.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from worldmill.deployments.curate import POOL, code_root, ensure_pool


def parameters(
    kind: str,
    data: str,
    out: str,
    config_path: str | None = None,
    overrides: list[str] | None = None,
) -> dict:
    """Flow parameters for ``train``; raises ConfigError if the config would not validate."""
    from worldmill.genie.pipeline import GENIE, genie_config
    from worldmill.training.registry import resolve_config

    if kind == GENIE:  # every stage's config (stage.key=value overrides)
        genie_config(config_path, overrides)
    else:
        resolve_config(kind, config_path, overrides)  # fail here, not on the worker
    return {
        "kind": kind,
        "data": str(Path(data).absolute()),
        "out": str(Path(out).absolute()),
        "config_path": str(Path(config_path).absolute()) if config_path else None,
        "overrides": list(overrides or []),
        "resume": True,
    }


def deploy(params: dict, pool: str = POOL, name: str | None = None) -> str:
    """Register (or update) ``train/<name>`` (default: the kind); returns the deployment id."""
    from prefect import flow

    ensure_pool(pool)
    source, entrypoint = code_root("train.py:train")
    remote = flow.from_source(source=source, entrypoint=entrypoint)
    dep_id = remote.deploy(
        name=name or params["kind"],
        work_pool_name=pool,
        parameters=params,
        description=f"Train a {params['kind']} on curate shards (resumes from the latest "
        "checkpoint of its run folder; genie: reuses finished stages).",
        tags=["worldmill", "train", params["kind"]],
        print_next_steps=False,
    )
    return str(dep_id)


def main(argv: list[str] | None = None) -> int:
    from worldmill.training.registry import UPSTREAM_FIELDS

    p = argparse.ArgumentParser(
        prog="python -m worldmill.deployments.train", description=__doc__.split("\n")[0]
    )
    p.add_argument("kind", default="tokenizer", nargs="?")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    for key in UPSTREAM_FIELDS:  # upstream runs (ar: --tokenizer RUN), as in the CLI
        p.add_argument(f"--{key}", metavar="RUN", help=f"upstream {key} run folder")
    p.add_argument("--pool", default=POOL)
    p.add_argument("--name")
    a = p.parse_args(argv)
    a.overrides += [
        f"{k}={Path(getattr(a, k)).absolute()}" for k in UPSTREAM_FIELDS if getattr(a, k)
    ]
    params = parameters(a.kind, a.data, a.out, a.config, a.overrides)
    dep_id = deploy(params, a.pool, a.name)
    print(f"deployment train/{a.name or a.kind} ({dep_id}) on work pool {a.pool!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
