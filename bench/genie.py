"""The CPU-sized Genie run on CoinRun, end to end through the real CLI, and its figures.

    .venv/bin/python bench/genie.py --out /tmp/genie [--episodes 64] [--steps 300]

1. ``worldmill rollouts coinrun --episodes N --steps T`` (64x64; the default sticky random
   policy: CoinRun's 6 actions with distinct effects, each held for 4-16 frames; CoinRun's
   default frame skip 3: every frame is 3 simulator steps under its action)
2. ``worldmill curate`` with ``configs/rollouts.yaml`` minus the caption stage (captions
   are not used by Genie and cost most of the curate time on CPU): clips of CLIP_FRAMES
   frames (the clip length in seconds follows the rollouts' fps) + actions
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
CLIP_FRAMES = 30  # frames per curated clip (2 s at 15 fps; 6 s at CoinRun's frame skip 3)


def curate_args(fps: float) -> list[str]:
    """``configs/rollouts.yaml`` without captions, clips of ``CLIP_FRAMES`` frames."""
    s = round(CLIP_FRAMES / fps, 6)
    return ["--config", "configs/rollouts.yaml",
            "--set", f"split.fixed_stride_s={s}", "--set", f"split.min_clip_s={s}",
            "--set", f"stages=[{{name: limits, params: {{min_s: {s}, max_s: 0, min_width: 0, min_height: 0}}}}]"]  # fmt: skip


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
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--frame-skip", type=int, default=None, help="default: the env's")
    ap.add_argument("--no-prefect", action="store_true", help="train without the Prefect flow")
    a = ap.parse_args(argv)
    out = Path(a.out)
    roll, cur, tok, lam, dyn = (out / n for n in ("roll", "cur", "tok", "lam", "dynamics"))
    shards = cur / "shards"
    np_ = ["--no-prefect"] if a.no_prefect else []
    times: dict = {}
    skip = [] if a.frame_skip is None else ["--frame-skip", str(a.frame_skip)]
    stage("rollouts", [*WM, "rollouts", "coinrun", "--episodes", str(a.episodes), "--steps",
                       str(a.steps), *skip, "--out", str(roll)], (roll / "manifest.json").is_file(), times)  # fmt: skip
    fps = json.loads((roll / "manifest.json").read_text())["fps"]
    stage(
        "curate",
        [*WM, "curate", str(roll), "--out", str(cur), *curate_args(fps)],
        shards.is_dir(),
        times,
    )
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
