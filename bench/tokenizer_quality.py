"""Tokenizer quality on curate output of ``worldmill sample-data --world``: held-out PSNR /
SSIM vs bicubic at equal latent bytes, through the real trainer (torchrun, 2 ranks, the
default run).

    python bench/tokenizer_quality.py --kind dv [--steps N] [--set k=v ...] [--json]
    python bench/tokenizer_quality.py --kind cv --corpus /tmp/wm-corpus   # reuse a corpus
    python bench/tokenizer_quality.py --kind dv --shards CUR/shards       # curated already
    python bench/tokenizer_quality.py --kind dv --curation-corpus         # the 10-clip corpus

The corpus is made once per ``--corpus`` folder (``worldmill sample-data RAW --world
--videos N --seed S``, then ``worldmill curate RAW --out CUR``) and reused by later calls;
held-out clips are whole source videos the run never trains on (``data.holdout``). Prints
``metrics.json`` of the run (one JSON line with ``--json``) plus the training minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def corpus(root: Path, seed: int, small: bool, world: int = 0) -> Path:
    """Curate shards of the sample corpus under ``root`` (made once, then reused):
    ``sample-data --world --videos world`` when ``world`` > 0, else the curation corpus."""
    shards = root / "curated" / "shards"
    if list(shards.rglob("*.tar")):
        return shards
    wm = [sys.executable, "-m", "worldmill.cli"]
    raw = root / "raw"
    kind = ["--world", "--videos", str(world)] if world else ["--small"] if small else []
    subprocess.run(
        [*wm, "sample-data", str(raw), "--seed", str(seed), *kind],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [*wm, "curate", str(raw), "--out", str(root / "curated")],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return shards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=["cv", "dv"], default="dv")
    ap.add_argument("--steps", type=int, default=0, help="0 = the default run's steps")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    ap.add_argument("--corpus", help="folder for the sample corpus (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0, help="sample-data seed")
    ap.add_argument("--videos", type=int, default=96, help="sample-data --world --videos N")
    ap.add_argument(
        "--curation-corpus",
        action="store_true",
        help="the curation sample corpus (10 clips after curate) instead of --world",
    )
    ap.add_argument("--small", action="store_true", help="with --curation-corpus: --small")
    ap.add_argument("--shards", help="curated shards to train on (skips making a corpus)")
    ap.add_argument("--out", help="run folder (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="one JSON line")
    a = ap.parse_args()

    from worldmill.training import cli

    with tempfile.TemporaryDirectory() as tmp:
        world = 0 if a.curation_corpus else a.videos
        shards = (
            Path(a.shards) if a.shards else corpus(Path(a.corpus or tmp), a.seed, a.small, world)
        )
        run = Path(a.out or Path(tmp) / "run")
        sets = [f"model.kind={a.kind}", *([f"run.steps={a.steps}"] if a.steps else [])]
        args = ["tokenizer", "--data", str(shards), "--out", str(run), "--no-prefect"]
        for s in sets + a.overrides:
            args += ["--set", s]
        t = time.perf_counter()
        rc = cli.main(args)
        if rc:
            sys.exit(rc)
        m = json.loads((run / "metrics.json").read_text())
        m["wall_minutes"] = round((time.perf_counter() - t) / 60, 2)
        m["overrides"] = sets + a.overrides
        print(json.dumps(m) if a.json else json.dumps(m, indent=2))


if __name__ == "__main__":
    main()
