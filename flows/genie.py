"""The genie flow: tokenizer -> lam -> encode -> dynamics, each stage a tracked, retryable run.

    worldmill train genie --data SHARDS --out RUN [--config FILE] [--set lam.run.steps=100 ...]

Each training stage is the ordinary ``train`` flow (a subflow named ``genie-<stage>``: the
same torchrun trainer, retries that resume from the latest checkpoint, the same artifacts)
writing ``RUN/<stage>``; the encode stage is a task that caches every clip's tokens and latent
actions for the dynamics model. A stage already finished with the same config on the same
upstream checkpoints is reused, not retrained (``worldmill.genie.pipeline.stage_plan``), so
re-running the flow after a failure continues where it stopped. ``RUN/metrics.json`` is the
dynamics run's metrics; ``RUN/genie.json`` records what each stage was trained on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from worldmill.genie import pipeline as gp

__all__ = ["encode", "genie"]


@task(name="genie-encode", retries=2, retry_delay_seconds=2)
def encode(data: str, run: str, dyn_cfg: dict, state: dict) -> dict:
    """Cache every clip's tokens and latent actions for the dynamics stage
    (``worldmill.genie.pipeline.encode_cache``); returns the updated chain state."""
    gp.encode_cache(data, run, dyn_cfg, state, log=get_run_logger().info)
    return state


@flow(name="genie", log_prints=True)
def genie(
    data: str = "out/shards",
    out: str = "runs/genie",
    config_path: str | None = None,
    overrides: list[str] | None = None,
    config: dict | None = None,
) -> dict:
    """Train a Genie world model on curate shards ``data`` into ``out``: a video tokenizer,
    a latent action model and the dynamics model over both (sub-runs ``out/<stage>``).
    Returns the dynamics run's metrics (also ``out/metrics.json``)."""
    from worldmill.flows.train import train  # train/genie dispatches here: import late

    logger = get_run_logger()
    cfg = gp.genie_config(config_path, overrides, config)  # fails fast on bad values
    run = Path(out).absolute()
    run.mkdir(parents=True, exist_ok=True)
    state = gp.read_state(run)
    state["config"] = cfg.model_dump(mode="json")
    state.setdefault("stages", {})
    rows = []
    for stage in gp.STAGES:
        stage_cfg = gp.stage_config(cfg, stage, run)
        if stage == "dynamics":  # tokens + latent actions, once both upstreams are done
            state = encode(data, str(run), stage_cfg, state)
            gp.write_state(run, state)
            cache = state["stages"]["encode"]["cache"]
            rows.append({"stage": "encode", "plan": "cache", "run": cache, "metrics": ""})
        plan = gp.stage_plan(stage, stage_cfg, run, state)
        if plan == "reuse":
            logger.info("%s: reusing the finished run %s", stage, run / stage)
            metrics = json.loads((run / stage / gp.METRICS).read_text())
        else:
            logger.info("%s: %s in %s", stage, plan, run / stage)
            state["stages"][stage] = {"upstream": gp.upstream_prints(stage, run), "done": False}
            gp.write_state(run, state)
            metrics = train.with_options(flow_run_name=f"genie-{stage}")(
                kind=stage,
                data=data,
                out=str(run / stage),
                config=stage_cfg,
                resume=plan == "resume",
            )
            state["stages"][stage]["done"] = True
            gp.write_state(run, state)
        rows.append(
            {"stage": stage, "plan": plan, "run": str(run / stage), "metrics": _headline(metrics)}
        )
    gp.write_state(run, state)
    shutil.copyfile(run / "dynamics" / gp.METRICS, run / gp.METRICS)
    create_table_artifact(key="train-genie-stages", table=rows, description=f"genie run {run}")
    return json.loads((run / gp.METRICS).read_text())


def _headline(metrics: dict) -> str:
    """A few numbers of a stage for the summary table (PSNR-like keys first)."""
    keys = [k for k in metrics if "psnr" in k][:3] or list(metrics)[:3]
    return ", ".join(
        f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
        for k in keys
    )
