"""Deployment ``curate/nightly``: the curate flow every night at 02:00 UTC on a process
work pool. Register it against a running Prefect server (``PREFECT_API_URL``)::

    worldmill deploy --input /data/raw --out /data/curated      # or: python -m worldmill.deployments.curate
    prefect worker start --pool worldmill-process
    prefect deployment run curate/nightly
"""

from __future__ import annotations

import argparse
from pathlib import Path

from worldmill.config import CurateConfig

POOL = "worldmill-process"
NAME = "nightly"
CRON = "0 2 * * *"  # 02:00 every day
TIMEZONE = "UTC"
# One run of the deployment at a time; a run started while one is active (a manual run
# during the nightly) is queued by the server until the slot frees. Runs from the CLI are
# serialised by the run lock on OUT (worldmill/runlock.py).
CONCURRENCY = 1


def code_root(entry: str = "curate.py:curate") -> tuple[str, str]:
    """(source dir, entrypoint) of a flow in ``flows/`` (``entry`` = "file.py:flow"), for
    editable and regular installs alike."""
    import worldmill.flows

    flows_dir = Path(worldmill.flows.__file__).resolve().parent
    return str(flows_dir.parent), f"{flows_dir.name}/{entry}"


def ensure_pool(name: str = POOL) -> None:
    """Create the process work pool if it does not exist yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return
        except ObjectNotFound:
            pass
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


def deploy(
    config: CurateConfig, pool: str = POOL, name: str = NAME, cron: str | None = CRON
) -> str:
    """Register (or update) ``curate/<name>`` with a concurrency limit of one run; returns
    the deployment id."""
    from prefect import flow
    from prefect.client.schemas.objects import (
        ConcurrencyLimitConfig,
        ConcurrencyLimitStrategy,
    )

    ensure_pool(pool)
    source, entrypoint = code_root()
    remote = flow.from_source(source=source, entrypoint=entrypoint)
    kwargs = {}
    if cron:
        from prefect.client.schemas.schedules import CronSchedule

        kwargs["schedules"] = [CronSchedule(cron=cron, timezone=TIMEZONE)]
    dep_id = remote.deploy(
        name=name,
        work_pool_name=pool,
        parameters={"config": config.model_dump(mode="json")},
        description="Nightly curation of new raw videos into LanceDB and WebDataset shards.",
        tags=["worldmill", "curate"],
        print_next_steps=False,
        concurrency_limit=ConcurrencyLimitConfig(
            limit=CONCURRENCY, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
        **kwargs,
    )
    return str(dep_id)


def main(argv: list[str] | None = None) -> int:
    from worldmill.config import load_config

    p = argparse.ArgumentParser(prog="worldmill deploy", description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="folder or fsspec URI of raw videos")
    p.add_argument("--out", required=True, help="output root")
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--pool", default=POOL)
    p.add_argument("--name", default=NAME)
    p.add_argument("--cron", default=CRON, help="cron in UTC; '' for no schedule")
    a = p.parse_args(argv)
    cfg = load_config(
        CurateConfig, a.config, a.overrides, input=a.input, out=str(Path(a.out).absolute())
    )
    dep_id = deploy(cfg, a.pool, a.name, a.cron or None)
    print(
        f"deployment curate/{a.name} ({dep_id}) on work pool {a.pool!r}, schedule {a.cron or 'none'} UTC"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
