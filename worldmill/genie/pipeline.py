"""The genie chain's config and bookkeeping (the flow itself is ``worldmill.flows.genie``).

One genie run folder RUN holds a sub-run per stage, each an ordinary training run of that
kind (``RUN/tokenizer``, ``RUN/lam``, ``RUN/dynamics``), plus

    RUN/genie.json    the resolved genie config and, per stage, what it was trained on
    RUN/metrics.json  the dynamics run's metrics (the genie run's result)

Config (``genie_config``): one section per stage holding that kind's own config, so
``--set lam.run.steps=100`` or a YAML ``lam: {run: {steps: 100}}`` addresses one stage and a
bad value fails before any work, naming the key. The upstream fields of a stage (the
dynamics model's ``tokenizer`` and ``lam`` runs) are the flow's to set: ``RUN/<kind>``.

Reuse (``stage_plan``): a stage whose run folder holds a finished run with the same config,
trained on the same upstream checkpoints (fingerprints recorded in ``genie.json``; a stage
without upstreams, like a tokenizer run put there by hand, needs no record), is reused as
it is; one with the same config but unfinished (or a larger ``run.steps``)
resumes from its latest checkpoint; anything else -- a new folder, a changed config, an
upstream that was retrained -- trains from scratch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field, create_model

from worldmill.config import ConfigError, StrictModel, load_config

GENIE = "genie"  # what `worldmill train genie` / the train/genie deployment name
STAGES: tuple[str, ...] = ("tokenizer", "lam", "dynamics")  # training order; stage = kind
STATE = "genie.json"
METRICS = "metrics.json"
# Where the chain's defaults differ from a stage kind's own: the dynamics model reads
# discrete tokens of single frames, so the tokenizer is DV, with FSQ's ~2^10-code level set
# (8*5*5*5 = 1000 codes; Genie's tokenizer has 1024) instead of the kind's 2^16, trained on
# single 64 px frames (the README's Genie recipe).
STAGE_DEFAULTS: dict[str, dict] = {
    "tokenizer": {
        "model": {"kind": "dv", "fsq_levels": [8, 5, 5, 5]},
        "data": {"width": 64, "crop": 64, "num_frames": 1},
    },
}


def genie_config_class() -> type[StrictModel]:
    """``GenieConfig``: a section per stage, each that kind's config class (imports the
    kinds' specs, hence torch: call it after argument parsing)."""
    from worldmill.training.registry import get_spec

    def default(cls: type[StrictModel], stage: str):
        return lambda: cls.model_validate(STAGE_DEFAULTS.get(stage, {}))

    fields: dict[str, Any] = {}
    for stage in STAGES:
        cls = get_spec(stage).config
        fields[stage] = (cls, Field(default_factory=default(cls, stage)))
    return create_model(
        "GenieConfig",
        __base__=StrictModel,
        __doc__="The genie chain: the config of each stage's training run.",
        **fields,
    )


def upstream_fields(stage: str) -> dict[str, str]:
    """Config field -> upstream stage (the kind it names), for ``stage``."""
    from worldmill.training.registry import get_spec

    ups = get_spec(stage).upstream
    missing = [kind for kind in ups.values() if kind not in STAGES]
    if missing:  # a kind the chain does not train: nothing could fill the field
        raise ConfigError(f"{stage}: needs upstream runs of kinds {missing}, not in {STAGES}")
    return dict(ups)


def genie_config(
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    config: dict | None = None,
) -> Any:
    """The validated genie config: defaults < YAML < ``config`` dict < ``stage.key=value``
    overrides. ConfigError (naming the key) on a bad value or an unknown stage, and when an
    upstream field is set (the flow wires ``RUN/<kind>`` itself)."""
    for item in overrides or []:
        stage = item.split("=", 1)[0].split(".", 1)[0]
        if stage not in STAGES:
            raise ConfigError(
                f"override {item!r}: address a stage, e.g. lam.run.steps=100 "
                f"(stages: {', '.join(STAGES)})"
            )
    cfg = load_config(genie_config_class(), config_path, overrides, **(config or {}))
    for stage in STAGES:
        sub = getattr(cfg, stage)
        if sub.kind != stage:
            raise ConfigError(f"{stage}.kind: must be {stage!r}, got {sub.kind!r}")
        for key in upstream_fields(stage):
            if getattr(sub, key):
                raise ConfigError(
                    f"{stage}.{key}: set by the genie flow (RUN/{upstream_fields(stage)[key]}); "
                    "leave it empty"
                )
        if sub.init_from:
            raise ConfigError(f"{stage}.init_from: not supported in a genie chain")
    # What the dynamics stage would refuse only after hours of upstream training:
    tok = cfg.tokenizer.model
    if tok.kind != "dv":
        raise ConfigError("tokenizer.model.kind: the dynamics model needs a DV tokenizer")
    if cfg.lam.data.size % tok.spatial_compression:
        raise ConfigError(
            f"lam.data.size ({cfg.lam.data.size}): the frame size must be divisible by "
            f"tokenizer.model.spatial_compression ({tok.spatial_compression})"
        )
    return cfg


def stage_config(cfg: Any, stage: str, run: str | Path) -> dict:
    """``stage``'s run config as a JSON dict, its upstream fields set to ``RUN/<kind>``."""
    out = getattr(cfg, stage).model_dump(mode="json")
    for key, kind in upstream_fields(stage).items():
        out[key] = str(Path(run).absolute() / kind)
    return out


def fingerprint(run: str | Path) -> str | None:
    """Identity of a run's latest complete checkpoint (its folder name and a hash of its meta
    file, which holds the wall time of training); None without one."""
    from worldmill.training import checkpoint

    ck = checkpoint.latest(run)
    if ck is None:
        return None
    digest = hashlib.sha1((ck[0] / checkpoint.META).read_bytes()).hexdigest()[:16]
    return f"{ck[0].name}:{digest}"


def read_state(run: str | Path) -> dict:
    p = Path(run) / STATE
    return json.loads(p.read_text()) if p.is_file() else {"stages": {}}


def write_state(run: str | Path, state: dict) -> None:
    p = Path(run) / STATE
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(p)


def upstream_prints(stage: str, run: str | Path) -> dict[str, str | None]:
    """Upstream kind -> fingerprint of ``RUN/<kind>`` now."""
    return {kind: fingerprint(Path(run) / kind) for kind in upstream_fields(stage).values()}


def stage_plan(stage: str, stage_cfg: dict, run: str | Path, state: dict) -> str:
    """What the chain does with ``RUN/<stage>``: ``reuse`` (finished, same config, same
    upstream checkpoints), ``resume`` (same config but for a ``run.steps`` beyond its latest
    checkpoint, same upstreams: interrupted, or to train longer) or ``train`` (from
    scratch)."""
    from worldmill.training import checkpoint

    sub = Path(run) / stage
    cfg_path = sub / "config.json"
    if not cfg_path.is_file():
        return "train"
    old = json.loads(cfg_path.read_text())
    recorded = state.get("stages", {}).get(stage, {}).get("upstream")
    ck = checkpoint.latest(sub)
    if ck is None or (upstream_fields(stage) and recorded != upstream_prints(stage, run)):
        return "train"  # trained on other upstream checkpoints (or not by this chain)
    done, steps = ck[1]["step"], stage_cfg["run"]["steps"]
    if old == stage_cfg and done >= steps and (sub / METRICS).is_file():
        return "reuse"
    if _without_steps(old) == _without_steps(stage_cfg) and done < steps:
        return "resume"  # interrupted, or asked to train longer: the loop continues to steps
    return "train"


def _without_steps(cfg: dict) -> dict:
    return {**cfg, "run": {k: v for k, v in cfg["run"].items() if k != "steps"}}


def encode_cache(data: str | Path, run: str | Path, dyn_cfg: dict, state: dict, log=print) -> Path:
    """The encode stage: every clip's per-frame tokens (``RUN/tokenizer``) and latent
    actions (``RUN/lam``) cached where the dynamics run reads them (its ``data.cache``,
    default ``RUN/dynamics/genie_cache.npz``; ``worldmill.genie.data.ensure_cache``: reused
    when its stamp matches, written atomically). The cache's stamp names upstream runs by
    folder and step, which a retrained upstream keeps: the chain drops the cache itself when
    the upstream checkpoints changed since it was made. Records itself in ``state``."""
    from worldmill.genie import data as gd
    from worldmill.training import encode
    from worldmill.training.kinds.lam import load_lam

    run = Path(run)
    path = Path(dyn_cfg["data"]["cache"] or run / "dynamics" / gd.CACHE)
    prints = upstream_prints("dynamics", run)
    if state["stages"].get("encode", {}).get("upstream") != prints:
        for stale in (path, path.with_suffix(".json")):
            stale.unlink(missing_ok=True)
    tokenizer = encode.load_tokenizer(dyn_cfg["tokenizer"])[0]
    lam, lam_cfg = load_lam(dyn_cfg["lam"])
    clips = gd.FrameClips(data, lam_cfg.data.size, dyn_cfg["data"]["holdout"], lam_cfg.data.fps)
    tok_run, lam_run = Path(dyn_cfg["tokenizer"]), Path(dyn_cfg["lam"])
    gd.ensure_cache(path, clips, tokenizer, lam, tok_run, lam_run, log)
    state["stages"]["encode"] = {"upstream": prints, "cache": str(path)}
    return path
