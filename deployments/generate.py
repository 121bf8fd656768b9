"""Deployment ``generate/<name>``: the ``generate`` flow for one trained run on the process
work pool, run on demand with the prompt as a parameter::

    python -m worldmill.deployments.generate --model /runs/ar1 --name ar1
    prefect deployment run generate/ar1 --param request='{"prompt": "...", "image": "x.png"}' \\
        --param out=/samples/a.mp4

The run is checked (finished, a kind that generates) before registering.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from worldmill.deployments.curate import POOL, code_root, ensure_pool


def parameters(model: str, out: str, request: dict | None = None) -> dict:
    """Flow parameters for ``generate``; ConfigError if the run or the request is bad."""
    from worldmill.generate import GenerateRequest, run_kind

    run_kind(model)
    req = GenerateRequest.model_validate(request or {})
    return {
        "model": str(Path(model).absolute()),
        "request": req.model_dump(mode="json"),
        "out": str(Path(out).absolute()),
        "guardrails": True,
    }


def deploy(params: dict, name: str, pool: str = POOL) -> str:
    """Register (or update) ``generate/<name>``; returns the deployment id."""
    from prefect import flow

    ensure_pool(pool)
    source, entrypoint = code_root("generate.py:generate_flow")
    dep_id = flow.from_source(source=source, entrypoint=entrypoint).deploy(
        name=name,
        work_pool_name=pool,
        parameters=params,
        description=f"Generate worlds from {params['model']} (guardrails on).",
        tags=["worldmill", "generate"],
        print_next_steps=False,
    )
    return str(dep_id)


def main(argv: list[str] | None = None) -> int:
    from worldmill.config import ConfigError

    p = argparse.ArgumentParser(
        prog="python -m worldmill.deployments.generate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", required=True, help="a finished run folder of a generating kind")
    p.add_argument("--out", default="samples/sample.mp4")
    p.add_argument("--name", help="deployment name (default: the run folder's name)")
    p.add_argument("--pool", default=POOL)
    a = p.parse_args(argv)
    try:
        params = parameters(a.model, a.out)
    except ConfigError as e:
        print(f"error: {e}")
        return 2
    print(deploy(params, name=a.name or Path(a.model).name, pool=a.pool))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
