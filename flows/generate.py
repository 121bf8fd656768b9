"""Flow ``generate``: one sample from a trained world-model run, guardrails on, published as
Prefect artifacts (an inline frame strip with the prompt and settings, and a table).

    generate(model="runs/ar1", request=GenerateRequest(prompt="...", image="x.png"),
             out="samples/a.mp4")

A refused prompt ends the flow run Failed with the guard's reason (nothing is generated);
``guardrails=False`` turns the guards off, which ``OUT.json`` records.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from worldmill.generate import GenerateRequest, generate
from worldmill.guardrails import Guardrails

__all__ = ["generate_flow", "generate_sample"]


def _retry_infra_only(task, task_run, state) -> bool:
    """Retry a crash, never a refused prompt or a bad run/input (same answer next time)."""
    from worldmill.config import ConfigError
    from worldmill.generate import Refused

    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, Refused | ConfigError)


@task(name="generate-sample", retries=1, retry_condition_fn=_retry_infra_only)
def generate_sample(model: str, request: GenerateRequest, out: str, guardrails: bool) -> dict:
    """Generate into ``out`` (+ ``.json``, ``.png``); returns the OUT.json record."""
    return generate(model, request, out, Guardrails(enabled=guardrails))


@task(name="publish-sample")
def publish_sample(rec: dict) -> None:
    """The frame strip inline (data URI: the sample folder may not be web-served), the
    prompt, the settings and the guardrails' findings."""
    out = Path(rec["mp4"])
    strip = base64.b64encode(out.with_suffix(".png").read_bytes()).decode()
    key = "sample-" + re.sub(r"[^a-z0-9-]+", "-", out.stem.lower()).strip("-")[:40]
    g = rec["guardrails"]
    md = [
        f"# {rec['kind']} sample: {out.name}",
        f"**Prompt:** {rec['prompt']}",
        f"![frames](data:image/png;base64,{strip})",
        f"{rec['frames']} frames {rec['size'][0]}x{rec['size'][1]}, {rec['mode']}, "
        f"{rec['seconds_per_frame']} s/frame; mp4 `{rec['mp4']}`",
        f"Guardrails: {'on' if g['enabled'] else 'OFF (' + g.get('disabled_by', '') + ')'}"
        + (
            f" -- {g['frames'].get('faces_blurred', 0)} faces blurred, "
            f"{g['frames'].get('frames_withheld', 0)} frames withheld"
            if g["enabled"] and "frames" in g
            else ""
        ),
    ]
    create_markdown_artifact(key=key, markdown="\n\n".join(md), description=rec["prompt"][:200])
    rows = [{"setting": k, "value": str(v)} for k, v in rec["settings"].items()]
    rows += [{"setting": "model", "value": rec["model"]}, {"setting": "kind", "value": rec["kind"]}]
    create_table_artifact(key=f"{key}-settings", table=rows, description="generation settings")


@flow(name="generate", log_prints=True)
def generate_flow(
    model: str = "runs/ar",
    request: GenerateRequest | None = None,
    out: str = "samples/sample.mp4",
    guardrails: bool = True,
) -> dict:
    """Generate one world from run folder ``model`` (its kind decides how) and publish it."""
    request = request or GenerateRequest()
    rec = generate_sample(model, request, out, guardrails)
    publish_sample(rec)
    print(f"wrote {rec['mp4']} ({rec['frames']} frames, guardrails {rec['guardrails']['enabled']})")
    return rec
