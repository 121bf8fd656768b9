"""The CPU-sized Genie run on CoinRun, end to end through the real CLI, and its figures.

    .venv/bin/python bench/genie.py --out /tmp/genie [--episodes 20] [--steps 300]

1. ``worldmill rollouts coinrun --episodes N --steps T`` (64x64; the default sticky random
   policy: CoinRun's 6 actions with distinct effects, each held for 4-16 steps)
2. ``worldmill curate`` with ``configs/rollouts.yaml`` minus the caption stage (captions
   are not used by Genie and cost most of the curate time on CPU): 2 s clips + actions
3. ``worldmill train tokenizer`` -- DV, 1,000 codes, trained on single frames (Genie
   tokenizes every frame; the causal tokenizer's first frame is an image)
4. ``worldmill train lam``  5. ``worldmill train dynamics --tokenizer --lam``

Steps already done in ``--out`` (a finished run, curated shards) are reused. Prints the
dynamics run's ``metrics.json`` figures (the Genie must-shows) and the wall / CPU time of
every stage.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

WM = [sys.executable, "-m", "worldmill.cli"]
CURATE = ["--config", "configs/rollouts.yaml", "--set",
          "stages=[{name: limits, params: {min_s: 2.0, max_s: 0, min_width: 0, min_height: 0}}]"]  # fmt: skip
TOKENIZER = ["--set", "model.kind=dv", "--set", "model.fsq_levels=[8, 5, 5, 5]",
             "--set", "data.width=64", "--set", "data.crop=64", "--set", "data.num_frames=1",
             "--set", "data.batch_size=4", "--set", "run.steps=200"]  # fmt: skip
LAM: list[str] = []  # the kind's defaults
DYNAMICS: list[str] = []


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def stage(name: str, cmd: list[str], done: bool, times: dict) -> None:
    if done:
        print(f"[{name}] reusing")
        return
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    t0, c0 = time.perf_counter(), _cpu()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    times[name] = {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(_cpu() - c0, 1)}
    print(f"[{name}] {times[name]}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--no-prefect", action="store_true", help="train without the Prefect flow")
    a = ap.parse_args(argv)
    out = Path(a.out)
    roll, cur, tok, lam, dyn = (out / n for n in ("roll", "cur", "tok", "lam", "dynamics"))
    shards = cur / "shards"
    np_ = ["--no-prefect"] if a.no_prefect else []
    times: dict = {}
    stage("rollouts", [*WM, "rollouts", "coinrun", "--episodes", str(a.episodes), "--steps",
                       str(a.steps), "--out", str(roll)], (roll / "manifest.json").is_file(), times)  # fmt: skip
    stage("curate", [*WM, "curate", str(roll), "--out", str(cur), *CURATE], shards.is_dir(), times)
    for name, run, extra in (
        ("tokenizer", tok, TOKENIZER),
        ("lam", lam, LAM),
        ("dynamics", dyn, ["--tokenizer", str(tok), "--lam", str(lam), *DYNAMICS]),
    ):
        cmd = [*WM, "train", name, "--data", str(shards), "--out", str(run), *extra, *np_]
        stage(name, cmd, (run / "metrics.json").is_file(), times)
    m = json.loads((dyn / "metrics.json").read_text())
    keys = ("delta_t_psnr", "psnr_inferred", "psnr_random", "action_probe_accuracy",
            "action_probe_chance", "rollout_psnr", "copy_psnr", "tokenizer_psnr",
            "seconds_per_frame", "eval_clips", "eval_windows", "train_seconds")  # fmt: skip
    res = {k: m.get(k) for k in keys}
    res["lam"] = {
        k: v
        for k, v in json.loads((lam / "metrics.json").read_text()).items()
        if k
        in (
            "psnr",
            "psnr_random_code",
            "copy_psnr",
            "code_perplexity",
            "train_seconds",
            "action_probe_accuracy",
            "action_probe_chance",
        )  # fmt: skip
    }
    res["stages"] = times
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
