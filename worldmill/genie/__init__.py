"""Genie (Bruce et al., 2024) on worldmill's training machinery: a DV tokenizer run, a
latent action model (kind ``lam``), a MaskGIT dynamics model (kind ``dynamics``), their
metrics, and the interactive world (``world.GenieWorld``, ``world.play_frames``).

``tiny_runs(shards, out)`` chains the three tiny runs (``Spec.tiny`` configs, 1 process)
into ``out/{tokenizer,lam,dynamics}`` -- a genie that plays in tests (quality: none).
"""

from __future__ import annotations

from pathlib import Path

TINY_TOKENIZER = ("model.kind=dv", "model.fsq_levels=[4, 4, 4]")


def tiny_runs(shards: str | Path, out: str | Path, steps: int = 4) -> Path:
    """Train tiny tokenizer (DV), lam and dynamics runs on ``shards`` into
    ``out/tokenizer``, ``out/lam``, ``out/dynamics`` (one process each, ``steps`` steps;
    about 10-20 s each on 2 cores); returns ``out/dynamics`` (``GenieWorld.load`` takes it
    or ``out``). Runs already finished in ``out`` are reused."""
    from worldmill.training import checkpoint, launch
    from worldmill.training.registry import get_spec, resolve_config

    out = Path(out)
    runs: dict[str, Path] = {}
    plan = [
        ("tokenizer", list(get_spec("tokenizer").tiny) + list(TINY_TOKENIZER)),
        ("lam", list(get_spec("lam").tiny)),
        ("dynamics", list(get_spec("dynamics").tiny)),
    ]
    for kind, over in plan:
        run = out / kind
        if kind == "dynamics":
            over += [f"tokenizer={runs['tokenizer']}", f"lam={runs['lam']}"]
        over += [f"run.steps={steps}", "run.nproc=1"]
        if checkpoint.latest(run) is None or not (run / "metrics.json").is_file():
            cfg = resolve_config(kind, None, over)
            launch.write_run_config(run, cfg)
            launch.launch_trainer(kind, shards, run, nproc=1, log=lambda _: None)
        runs[kind] = run
    return runs["dynamics"]
