"""Pipeline speed on a generated corpus.

Prints:
  * split+transcode throughput in clips/s/core (one process, one core's worth of work);
  * whole-DAG wall time of `worldmill curate` (default captioner) vs one plain
    `ffmpeg` decode+encode pass over the same inputs at the same output size — the
    physical limit of any pipeline that must decode and re-encode every frame.

    .venv/bin/python bench/pipeline_speed.py [--seed 3] [--repeat 1] [--workdir /tmp/wm-bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from worldmill.config import CurateConfig
from worldmill.media import ffmpeg_bin
from worldmill.records import OK
from worldmill.sample_data import generate
from worldmill.tasks.ingest import ingest
from worldmill.tasks.split import split_video
from worldmill.tasks.transcode import output_size, transcode_clips


def ffmpeg_pass(videos, out_dir: Path, cfg: CurateConfig) -> float:
    """One decode+encode of every input, same encoder settings and output size; parallel
    over inputs with as many processes as cores, like the DAG."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    procs: list[subprocess.Popen] = []
    ncpu = os.cpu_count() or 1
    for i, v in enumerate(videos):
        w, h = output_size(v, cfg.transcode)
        cmd = [
            ffmpeg_bin(),
            "-v",
            "error",
            "-y",
            "-i",
            v.local_path,
            "-an",
            "-vf",
            f"scale={w}:{h}",
            "-c:v",
            "libx264",
            "-preset",
            cfg.transcode.preset,
            "-crf",
            str(cfg.transcode.crf),
            "-pix_fmt",
            "yuv420p",
            str(out_dir / f"{i}.mp4"),
        ]
        procs.append(subprocess.Popen(cmd))
        while sum(p.poll() is None for p in procs) >= ncpu:
            time.sleep(0.01)
    for p in procs:
        p.wait()
    return time.perf_counter() - t0


def upscale(raw: Path, height: int) -> None:
    """Re-encode every readable video of the corpus to ``height`` (bad files stay as they are)."""
    for p in sorted(raw.iterdir()):
        if p.suffix != ".mp4" or p.stat().st_size < 4096:
            continue
        tmp = p.with_name("up_" + p.name)
        r = subprocess.run(
            [
                ffmpeg_bin(),
                "-v",
                "error",
                "-y",
                "-i",
                str(p),
                "-vf",
                f"scale=-2:{height}",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-crf",
                "20",
                "-threads",
                "1",  # deterministic bytes: exact copies stay exact copies
                "-pix_fmt",
                "yuv420p",
                str(tmp),
            ]
        )
        if r.returncode == 0:
            os.replace(tmp, p)
        else:
            tmp.unlink(missing_ok=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/wm-bench")
    ap.add_argument(
        "--height",
        type=int,
        default=0,
        help="re-encode the corpus to this height (e.g. 720) first: real footage is HD",
    )
    a = ap.parse_args()
    work = Path(a.workdir)
    shutil.rmtree(work, ignore_errors=True)
    raw = work / "raw"
    generate(raw, seed=a.seed)
    if a.height:
        upscale(raw, a.height)
    cfg = CurateConfig(input=str(raw), out=str(work / "out"))
    res = ingest(str(raw), [], cfg.skip_extensions, cache_dir=str(work / "cache"))
    videos = [v for v in res.todo if v.status == OK]
    footage = sum(v.duration_s for v in videos)
    print(f"corpus: {len(videos)} good videos, {footage:.1f} s of footage, {os.cpu_count()} cores")

    # split + transcode, single process
    t0 = time.perf_counter()
    n_clips = 0
    for v in videos:
        clips = split_video(v, cfg.split)
        transcode_clips(v, clips, str(work / "st" / v.video_id), cfg.transcode)
        n_clips += sum(1 for c in clips if c.clip_uri)
    st = time.perf_counter() - t0
    print(
        f"split+transcode: {n_clips} clips in {st:.2f} s on 1 core -> {n_clips / st:.2f} clips/s/core"
    )

    t_ff = ffmpeg_pass(videos, work / "ffmpeg", cfg)
    print(f"ffmpeg decode+encode pass: {t_ff:.2f} s")

    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "worldmill.cli", "curate", str(raw), "--out", str(work / "dag")],
        capture_output=True,
        text=True,
    )
    t_dag = time.perf_counter() - t0
    if r.returncode != 0:
        print(r.stderr[-2000:])
        return 1
    inner = next((ln for ln in r.stdout.splitlines() if "finished in" in ln), "")
    print(f"whole DAG (worldmill curate, incl. process start-up): {t_dag:.2f} s  [{inner.strip()}]")
    print(f"ratio DAG / ffmpeg pass: {t_dag / t_ff:.2f}x  (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
