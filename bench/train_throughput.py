"""Tokenizer training throughput through the real run machinery (torchrun, DDP, checkpoints).

    python bench/train_throughput.py [--nproc 2] [--steps 60] [--set model.kind=dv ...]

Writes sample shards (panning photos, 96x96) to a temp dir, trains for --steps and prints one
JSON line: clips/s, s/step (from RUN/log.jsonl, excluding the first step's decode warm-up)
and the wall time including launch and the final evaluation.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from worldmill.training import launch, metrics
from worldmill.training.registry import resolve_config
from worldmill.training.sample_shards import write_sample_shards


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_sample_shards(Path(tmp) / "shards", n_clips=16, size=96)
        run = Path(tmp) / "run"
        cfg = resolve_config(
            "tokenizer",
            None,
            [
                f"run.steps={a.steps}",
                f"run.nproc={a.nproc}",
                f"run.checkpoint_every={a.steps}",
                "data.width=96",
                *a.overrides,
            ],
        )
        run.mkdir()
        (run / "config.json").write_text(cfg.model_dump_json())
        t = time.perf_counter()
        launch.launch_trainer("tokenizer", shards, run, nproc=a.nproc, log=lambda _: None)
        wall = time.perf_counter() - t
        log = metrics.read_log(run / "log.jsonl")
        dt = (log[-1]["seconds"] - log[0]["seconds"]) / max(1, len(log) - 1)
        clips = cfg.data.batch_size * a.nproc
        print(
            json.dumps(
                {
                    "nproc": a.nproc,
                    "steps": a.steps,
                    "clips_per_step": clips,
                    "clip_shape": [cfg.data.num_frames, cfg.data.crop, cfg.data.crop],
                    "s_per_step": round(dt, 4),
                    "clips_per_s": round(clips / dt, 2),
                    "wall_s": round(wall, 1),
                }
            )
        )


if __name__ == "__main__":
    main()
