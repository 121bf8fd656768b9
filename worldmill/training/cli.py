"""``worldmill train <kind> --data SHARDS --out RUN [--config FILE] [--set k=v] [--resume]``
and ``worldmill encode --run RUN --data SHARDS --out LATENTS``.

``worldmill train genie`` runs the genie chain (tokenizer, lam, encode, dynamics in
RUN/<stage>, finished stages reused; ``worldmill.flows.genie``): ``--set`` addresses a
stage (``--set lam.run.steps=100``) and the config YAML has a section per stage.

Runs the Prefect ``train`` flow (tracked, retried, artifacts). ``--no-prefect`` runs the
same torchrun trainer directly (no retries, no artifacts) for quick local debugging.
Exit codes: 0 ok, 2 bad configuration (nothing was started), 1 training failed.
``encode`` writes a trained tokenizer's latents / tokens of every clip as WebDataset shards
(see ``worldmill.training.encode``); exit 2 when the run has no checkpoint or there are no
shards.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from worldmill.config import ConfigError
from worldmill.genie.pipeline import GENIE
from worldmill.training.registry import UPSTREAM_FIELDS, kinds


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="worldmill train", description=__doc__.splitlines()[0])
    ap.add_argument(
        "kind", choices=[*kinds(), GENIE], help="what to train (genie: the whole genie chain)"
    )
    ap.add_argument("--data", required=True, help="curate shards folder (SHARDS/**/*.tar)")
    ap.add_argument("--out", required=True, help="run folder (checkpoints/, metrics.json, ...)")
    ap.add_argument("--config", help="run config YAML")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="K=V",
        help="override a config value, e.g. --set run.steps=500 (repeatable)",
    )
    for key in UPSTREAM_FIELDS:
        ap.add_argument(
            f"--{key}", metavar="RUN", help=f"upstream {key} run folder (kinds that read one)"
        )
    ap.add_argument(
        "--init-from", metavar="RUN", help="start the weights from this run (post-training)"
    )
    ap.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/latest")
    ap.add_argument(
        "--no-prefect",
        action="store_true",
        help="run torchrun directly, without the Prefect flow (no retries)",
    )
    return ap


def main(argv: list[str]) -> int:
    a = build_parser().parse_args(argv)
    if a.kind == GENIE:
        return genie_main(a)
    # Imported here: Prefect and torch load in ~seconds; `--help` should not wait for them.
    from worldmill.flows.train import resolve_config, train
    from worldmill.training import launch
    from worldmill.training.data import list_shards

    a.overrides += [f"{k}={getattr(a, k)}" for k in UPSTREAM_FIELDS if getattr(a, k)]
    if a.init_from:
        a.overrides.append(f"init_from={a.init_from}")
    try:
        cfg = resolve_config(a.kind, a.config, a.overrides)
        list_shards(a.data)  # no shards: a clear error before anything starts
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if a.no_prefect:
            launch.write_run_config(a.out, cfg)
            launch.launch_trainer(
                a.kind,
                a.data,
                a.out,
                nproc=cfg.run.nproc,
                threads_per_proc=cfg.run.threads_per_proc,
                resume=a.resume,
            )
            metrics = json.loads((Path(a.out) / "metrics.json").read_text())
        else:
            metrics = train(
                kind=a.kind,
                data=a.data,
                out=a.out,
                config_path=a.config,
                overrides=a.overrides,
                resume=a.resume,
            )
    except launch.TrainerFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, indent=2))
    return 0


def genie_main(a: argparse.Namespace) -> int:
    """``worldmill train genie``: validate every stage's config, then run the chain."""
    from worldmill.genie.pipeline import genie_config
    from worldmill.training.data import list_shards

    try:
        given = [f"--{k}" for k in (*UPSTREAM_FIELDS, "init_from") if getattr(a, k)]
        if given or a.no_prefect:
            raise ConfigError(
                f"{', '.join(given) or '--no-prefect'}: not for genie (the chain trains its "
                "own upstream runs, as a Prefect flow)"
            )
        genie_config(a.config, a.overrides)
        list_shards(a.data)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from worldmill.flows.genie import genie
    from worldmill.training import launch

    try:
        metrics = genie(data=a.data, out=a.out, config_path=a.config, overrides=a.overrides)
    except launch.TrainerFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, indent=2))
    return 0


def build_encode_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="worldmill encode",
        description="encode every clip of a shard set with a trained tokenizer",
    )
    ap.add_argument("--run", required=True, help="tokenizer run folder (config.json, checkpoints/)")
    ap.add_argument("--data", required=True, help="curate shards folder (SHARDS/**/*.tar)")
    ap.add_argument("--out", required=True, help="output folder for latent/token shards")
    return ap


def encode_main(argv: list[str]) -> int:
    a = build_encode_parser().parse_args(argv)
    from worldmill.training.data import list_shards
    from worldmill.training.encode import encode_shards

    try:
        list_shards(a.data)
        if not (Path(a.run) / "config.json").is_file():
            raise FileNotFoundError(f"{a.run} is not a training run (no config.json)")
        manifest = encode_shards(a.run, a.data, a.out)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(manifest["clips"])
    print(f"encoded {n} clips with {manifest['kind']} tokenizer {a.run} ({manifest['checkpoint']})")
    print(f"  -> {a.out} in {manifest['seconds']} s")
    return 0
