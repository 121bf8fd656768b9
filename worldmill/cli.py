"""``worldmill`` command line.

worldmill curate INPUT --out OUT [--config FILE.yaml] [--set key=value ...]
worldmill sample-data DIR [--seed N] [--small]
worldmill sample-data DIR --world [--videos N] [--seed N]   # world-model training corpus
worldmill demo [DIR]                       # sample corpus -> curate -> summary
worldmill deploy --input DIR --out DIR     # register curate/nightly on a Prefect server
worldmill train <kind> --data SHARDS --out RUN [--config FILE] [--set k=v] [--resume]
worldmill generate --model RUN --prompt "..." [--image PNG | --video MP4] --out OUT.mp4
worldmill guard prompt "TEXT" | guard video IN.mp4 --out OUT.mp4   # guardrails alone; exit 3 = refused
worldmill rollouts ENV --episodes N --steps T --out DIR [--policy sticky|random] [--seed S]
worldmill play --model RUN --image PNG [--port 8765]   # play a genie world in the browser
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import logging
import os
import sys
from pathlib import Path

from worldmill.config import ConfigError, CurateConfig, load_config
from worldmill.stages import load_stages


def _curate(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(
            CurateConfig,
            args.config,
            args.overrides,
            input=args.input,
            out=str(Path(args.out).absolute()),
        )
        load_stages(cfg.stages)  # an unknown stage module is a config error, found before work
        _check_input(cfg.input)
    except ConfigError as e:
        print(f"worldmill curate: {e}", file=sys.stderr)
        return 2
    from worldmill.runlock import EXIT_LOCKED, RunLockTimeout, run_lock

    # One run per OUT: wait for a run already there (before Prefect and Dask start), exit 3
    # if it outlasts lock_timeout_s. The flow takes the same lock again (re-entrant).
    try:
        with run_lock(cfg.out, cfg.lock_timeout_s, on_wait=_say):
            summary = run_curate(cfg)
    except RunLockTimeout as e:
        print(f"worldmill curate: {e}", file=sys.stderr)
        return EXIT_LOCKED
    if summary is None:
        return 1
    print_summary(summary)
    return 0


def _say(msg: str) -> None:
    print(f"worldmill curate: {msg}", file=sys.stderr, flush=True)


def _check_input(uri: str) -> None:
    """A missing input is a bad argument: say so before starting a server or a cluster."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(uri)
        found = any(ch in root for ch in "*?[") or fs.exists(root)
    except (OSError, ValueError, ImportError) as e:
        raise ConfigError(f"input {uri!r} cannot be opened: {e}") from e
    if not found:
        raise ConfigError(f"input not found: {uri}")


def run_curate(cfg: CurateConfig) -> dict | None:
    """Run the flow here; None (after a clear message) if the flow failed."""
    server = _start_temporary_server()  # boots (seconds) while the flow modules import
    from worldmill.flows.curate import curate

    try:
        server = _use_temporary_server(server)
    except RuntimeError as e:
        print(f"worldmill curate: {e}", file=sys.stderr)
        return None
    # Dask's scheduler/worker chatter (and a benign CommClosedError traceback printed when
    # in-process workers close) drowns the run's own progress lines; keep its warnings.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    logging.getLogger("distributed.batched").setLevel(logging.CRITICAL)
    try:
        with _no_heartbeats(server):
            return curate(cfg)
    except Exception as e:  # the flow failed: say why, exit non-zero
        print(f"worldmill curate: flow failed: {type(e).__name__}: {e}", file=sys.stderr)
    return None


def _no_heartbeats(server):
    """On the temporary server, flow runs send no heartbeats. A long-lived server uses them
    to mark runs whose process died as crashed; the temporary one runs no such service and
    dies with this process, and each flow's heartbeat thread, which sleeps in 1-s steps, is
    joined when the flow ends (up to 1 s per flow, two flows here)."""
    import contextlib

    if server is None:
        return contextlib.nullcontext()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _start_temporary_server():
    """Without a Prefect server configured, Prefect would start a temporary one on the
    flow's first API call, after this process's imports, and import its server package here
    first (seconds each). Start it now instead (``worldmill/tempserver.py``), so that it
    boots while the flow modules import. None when ``PREFECT_API_URL`` is set."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    from worldmill.tempserver import TemporaryServer

    server = TemporaryServer()
    server.start()
    # Stopped at exit, as Prefect stops its own: after Prefect's log and event workers have
    # drained into it (they drain at thread shutdown, before atexit hooks).
    atexit.register(server.stop)
    return server


def _use_temporary_server(server):
    """Point this process's Prefect client (and any process it starts) at ``server`` once it
    answers, and return it; stop it instead, and return None, when the active Prefect
    profile configures a server after all."""
    if server is None:
        return None
    from prefect.context import refresh_global_settings_context
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    from worldmill.tempserver import TEMPORARY_URL_ENV

    if PREFECT_API_URL.value():  # from the active profile: use that server
        server.stop()
        return None
    # While the server boots: modules the flow's start imports (fastapi's encoders for
    # the flow's parameters, the engine), about 0.4 s otherwise spent after the wait.
    import fastapi.encoders  # noqa: F401
    import prefect.flow_engine  # noqa: F401

    try:
        server.wait(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    except RuntimeError:
        server.stop()
        raise
    _say(f"temporary Prefect server on {server.api_url} (set PREFECT_API_URL to use your own)")
    os.environ["PREFECT_API_URL"] = os.environ[TEMPORARY_URL_ENV] = server.api_url
    refresh_global_settings_context()
    return server


def print_summary(s: dict) -> None:
    print()
    print(f"curate run {s['run_id']} finished in {s['seconds']:.1f} s")
    rec = ", ".join(f"{n} {k}" for k, n in sorted(s["videos_recorded"].items())) or "none"
    print(
        f"  videos: {s['videos_new']} new, {s['videos_skipped']} already processed, recorded: {rec}"
    )
    for what in ("files_skipped", "files_failed"):  # every file seen is accounted for
        files = s.get(what, [])
        print(f"  {what.replace('_', ' ')}: {len(files)}")
        for f in files[:10]:
            print(f"    {f['path']}: {f['reason']}")
        if len(files) > 10:
            print(f"    ... {len(files) - 10} more in the report's summary.json")
    reasons = ", ".join(f"{k} {n}" for k, n in sorted(s["run_reject_reasons"].items())) or "none"
    print(f"  clips this run: {s['run_clips']} ({s['run_kept']} kept; rejected: {reasons})")
    print(
        f"  database: {s['total_clips']} clips, {s['total_kept']} kept; videos {s['total_videos']}"
    )
    print(f"  shards written: {s['shards_written']} -> {s['shards_dir']}")
    print(f"  lancedb: {s['lancedb']} (tables: videos, clips)")
    if s.get("report"):
        print(f"  report: {s['report'].get('dir')}")


def _sample(args: argparse.Namespace) -> int:
    if args.world:
        from worldmill.sample_world import generate_world

        if args.small or args.videos < 1:
            print("sample-data: --world takes --videos N >= 1 and no --small", file=sys.stderr)
            return 2
        doc = generate_world(args.dir, seed=args.seed, videos=args.videos)
        print(f"wrote {len(doc['videos'])} videos and world_truth.json to {args.dir}")
        return 0
    from worldmill.sample_data import generate

    gt = generate(args.dir, seed=args.seed, small=args.small)
    print(f"wrote {len(gt['videos'])} files and ground_truth.json to {args.dir}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from worldmill.sample_data import generate

    root = Path(args.dir).absolute()
    raw, out = root / "raw", root / "curated"
    if not (raw / "ground_truth.json").exists():
        print(f"generating a sample corpus in {raw} ...")
        generate(raw, seed=args.seed)
    cfg = load_config(CurateConfig, None, args.overrides, input=str(raw), out=str(out))
    summary = run_curate(cfg)
    if summary is None:
        return 1
    print_summary(summary)
    print(f"\nOutputs: clips {out / 'clips'}, shards {out / 'shards'}, LanceDB {out / 'lancedb'}")
    return 0


def _json(args: argparse.Namespace) -> int:  # pragma: no cover - debugging aid
    print(json.dumps(CurateConfig.model_json_schema(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    whole_process = argv is None  # run as the program (not called from Python)
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub at run time
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here
    # A run started beside a busy one (two at once, see worldmill/runlock.py) can take longer
    # than Prefect's default 20 s to start its ephemeral server on a loaded machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if argv and argv[0] == "train":
        from worldmill.training.cli import main as train_main

        return train_main(argv[1:])
    if argv and argv[0] == "encode":
        from worldmill.training.cli import encode_main

        return encode_main(argv[1:])
    if argv and argv[0] == "generate":
        from worldmill.generate import main as generate_main

        return generate_main(argv[1:])
    if argv and argv[0] == "guard":
        from worldmill.guardrails.cli import main as guard_main

        return guard_main(argv[1:])
    if argv and argv[0] == "rollouts":
        from worldmill.rollouts.cli import main as rollouts_main

        return rollouts_main(argv[1:])
    if argv and argv[0] == "play":
        from worldmill.genie.play import main as play_main

        return play_main(argv[1:])
    if argv and argv[0] == "deploy":
        from worldmill.deployments.curate import main as deploy_main

        try:
            return deploy_main(argv[1:])
        except ConfigError as e:
            print(f"worldmill deploy: {e}", file=sys.stderr)
            return 2

    p = argparse.ArgumentParser(prog="worldmill", description="World-model data and training DAGs.")
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("curate", help="curate raw videos into LanceDB tables and WebDataset shards")
    c.add_argument("input", help="folder, glob or fsspec URI of raw videos")
    c.add_argument("--out", required=True, help="output root (lancedb/, clips/, shards/, report/)")
    c.add_argument("--config", help="YAML config file (see configs/curate.yaml)")
    c.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set split.max_clip_s=30",
    )
    c.set_defaults(fn=_curate)

    s = sub.add_parser("sample-data", help="generate a sample corpus with ground truth")
    s.add_argument("dir")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--small", action="store_true", help="a smaller corpus (tests)")
    s.add_argument(
        "--world",
        action="store_true",
        help="a world-model training corpus: single-shot videos, one camera motion each",
    )
    s.add_argument("--videos", type=int, default=96, help="videos in the --world corpus")
    s.set_defaults(fn=_sample)

    d = sub.add_parser("demo", help="generate a sample corpus and curate it")
    d.add_argument("dir", nargs="?", default="worldmill-demo")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    d.set_defaults(fn=_demo)

    j = sub.add_parser("config-schema", help="print the curate config JSON schema")
    j.set_defaults(fn=_json)
    sub.add_parser("deploy", help="register curate/nightly on the Prefect server (see --help)")
    sub.add_parser("train", help="launch a training run (see 'worldmill train --help')")
    sub.add_parser("rollouts", help="episodes from a real simulator (see 'rollouts --help')")
    sub.add_parser("encode", help="encode a shard set to latents/tokens with a trained tokenizer")
    sub.add_parser("generate", help="generate a world from a trained run (see --help)")
    sub.add_parser("guard", help="run the prompt or video guardrails alone (see --help)")
    sub.add_parser("play", help="play a trained genie world in the browser (see --help)")

    args = p.parse_args(argv)
    rc = args.fn(args)
    if whole_process:
        # The process ends next. Python's last garbage collection at exit walks every
        # object left behind (about 1.5 s after a curate run, which loads Prefect, Dask,
        # LanceDB and the models); frozen objects are not walked. Atexit hooks (Prefect's
        # log and event drains, the temporary server's stop) still run.
        gc.freeze()
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
