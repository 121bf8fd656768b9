"""Training flows: a tracked, retryable Prefect flow around a torchrun trainer.

``train`` validates the run config (a bad value fails before anything starts), writes
RUN/config.json, launches ``torchrun -m <trainer>`` from the ``run_trainer`` task (trainer
output streams into the Prefect logs line by line), and publishes RUN/metrics.json, the loss
curve and the reconstruction grid as Prefect artifacts. When the trainer dies (crash,
SIGKILL, preemption) the task fails and Prefect retries it; every retry resumes from the
latest complete checkpoint in RUN/checkpoints/.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.runtime import task_run

from worldmill.genie.pipeline import GENIE
from worldmill.training import launch
from worldmill.training.loop import FIGURES
from worldmill.training.registry import resolve_config

__all__ = ["publish_artifacts", "resolve_config", "run_trainer", "train"]


@task(name="run-trainer", retries=2, retry_delay_seconds=2)
def run_trainer(kind: str, data: str, out: str, resume: bool = False) -> str:
    """Run the torchrun trainer for ``kind`` on RUN/config.json; stream its lines to the
    Prefect log. Raises ``TrainerFailed`` on a non-zero exit (so Prefect retries); retries
    (``run_count > 1``) always resume from the latest checkpoint."""
    logger = get_run_logger()
    attempt = task_run.run_count or 1
    resume = resume or attempt > 1
    cfg = json.loads((Path(out) / "config.json").read_text())
    run = cfg["run"]
    logger.info(
        "attempt %d: launching the %s trainer on %d process(es)%s",
        attempt,
        kind,
        run["nproc"],
        " (resume)" if resume else "",
    )
    launch.launch_trainer(
        kind,
        data,
        out,
        nproc=run["nproc"],
        threads_per_proc=run["threads_per_proc"],
        resume=resume,
        log=logger.info,
    )
    return out


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


@task(name="publish-run-artifacts")
def publish_artifacts(out: str, kind: str) -> dict:
    """RUN/metrics.json -> table artifact; the figures the run lists in RUN/figures.json
    (loss curve, the kind's own plots) -> image and markdown artifacts (PNG embedded as data URIs: the run folder may not be web-served)."""
    run = Path(out)
    m = json.loads((run / "metrics.json").read_text())
    key = f"train-{kind}"
    create_table_artifact(
        key=f"{key}-metrics",
        table=[{"metric": k, "value": v} for k, v in m.items()],
        description=f"metrics of {out}",
    )
    md = [f"# {kind} run `{out}`", ""]
    figures = json.loads((run / FIGURES).read_text()) if (run / FIGURES).is_file() else {}
    for name, title in figures.items():
        if (run / name).is_file():
            uri = _data_uri(run / name)
            create_image_artifact(image_url=uri, key=f"{key}-{name[:-4]}", description=title)
            md += [f"## {title}", f"![{title}]({uri})", ""]
    create_markdown_artifact(key=f"{key}-report", markdown="\n".join(md), description=out)
    return m


@flow(name="train", log_prints=True)
def train(
    kind: str = "tokenizer",
    data: str = "out/shards",
    out: str = "runs/tokenizer",
    config_path: str | None = None,
    overrides: list[str] | None = None,
    config: dict | None = None,
    resume: bool = False,
) -> dict:
    """Train a model of ``kind`` (see ``worldmill.training.registry.kinds()``) on curate shards
    ``data`` into run folder ``out`` (checkpoints/, log.jsonl, metrics.json, figures).
    ``kind="genie"`` runs the genie chain (``worldmill.flows.genie``: tokenizer, lam,
    encode, dynamics in ``out/<stage>``; overrides address a stage, ``lam.run.steps=100``).
    Returns the metrics."""
    if kind == GENIE:
        from worldmill.flows.genie import genie

        return genie(
            data=data, out=out, config_path=config_path, overrides=overrides, config=config
        )
    cfg = resolve_config(kind, config_path, overrides, config)  # fails fast on bad values
    launch.write_run_config(out, cfg)
    trainer = run_trainer.with_options(retries=cfg.run.retries)
    trainer(kind, data, out, resume=resume)
    return publish_artifacts(out, kind)
