"""Pipeline speed on a generated corpus.

Prints, side by side in one run (back to back, so that load from other jobs hits both):
  * split+transcode throughput in clips/s/core (one process, one core's worth of work);
  * one plain `ffmpeg` decode of every input (no output), and one decode+encode pass at
    the DAG's output size with its encoder settings — the physical limit of any pipeline
    that must decode and re-encode every frame;
  * whole-DAG wall time of `worldmill curate` (default stages and captioner), as the CLI's
    wall time and the flow's own time, and its ratio to the decode+encode pass.

    .venv/bin/python bench/pipeline_speed.py [--seed 3] [--height 720] [--workdir /tmp/wm-bench]
    .venv/bin/python bench/pipeline_speed.py --long-minutes 10   # >= 10 min of 720p
    .venv/bin/python bench/pipeline_speed.py --long-minutes 10 --skip-st --repeat 4

``--repeat N`` runs the DAG N times, each right after its own decode+encode pass, and
prints the median of the N paired ratios: on a shared VM the same work costs up to a third
more CPU from one minute to the next, so only paired ratios compare.

``--long-minutes M`` builds (once, cached under ``WORKDIR/long``) a corpus of M minutes of
1280x720 footage: the good source videos of two sample corpora concatenated, and copies
of that made different by a mirror, a flip, a colour change and a zoom, ~2 min per file.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import shutil
import statistics
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


def decode_pass(videos) -> float:
    """Decode every input once and throw the frames away (``-f null``), parallel like
    :func:`ffmpeg_pass`: the cost no pipeline can avoid."""
    t0 = time.perf_counter()
    procs: list[subprocess.Popen] = []
    ncpu = os.cpu_count() or 1
    for v in videos:
        cmd = [
            ffmpeg_bin(),
            "-v",
            "error",
            "-nostdin",
            "-i",
            v.local_path,
            "-an",
            "-f",
            "null",
            "-",
        ]
        procs.append(subprocess.Popen(cmd))
        while sum(p.poll() is None for p in procs) >= ncpu:
            time.sleep(0.01)
    for p in procs:
        p.wait()
    return time.perf_counter() - t0


# Variants of the concatenated footage: different pixels (no copies for dedup to drop),
# same kind of content and the same cuts.
_LONG_VARIANTS = ["null", "hflip", "vflip", "hue=h=90", "crop=iw*0.8:ih*0.8,scale=320:180"]


def long_corpus(root: Path, minutes: float, height: int = 720) -> Path:
    """``minutes`` of ``height``-p footage in ~2-minute files under ``root/raw`` (cached)."""
    raw = root / "raw"
    done = root / f"done_{minutes:g}_{height}"  # 10 and 10.0 name the same corpus
    if done.exists():
        return raw
    shutil.rmtree(raw, ignore_errors=True)
    parts = []
    for seed in (3, 4):
        d = root / f"gen{seed}"
        gt_file = d / "ground_truth.json"  # a finished corpus: reuse it
        gt = json.loads(gt_file.read_text()) if gt_file.exists() else generate(d, seed=seed)
        parts += [
            d / name
            for name, e in gt["videos"].items()
            if not e.get("copy_of") and e.get("expect_status") != "failed"
        ]
    lst = root / "concat.txt"
    lst.write_text(
        "".join(
            f"file '{str(p).replace(chr(39), chr(39) + chr(92) + chr(39) * 2)}'\n" for p in parts
        )
    )
    base = root / "base.mp4"  # every part is 320x180 24 fps H.264: stream copy
    _run(
        [ffmpeg_bin(), "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(lst)]
        + ["-c", "copy", str(base)]
    )
    dur = float(
        subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
                str(base),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    raw.mkdir(parents=True)
    k = 0
    while k * dur < minutes * 60:
        vf = f"{_LONG_VARIANTS[k % len(_LONG_VARIANTS)]},scale=-2:{height}"
        _run(
            [ffmpeg_bin(), "-v", "error", "-y", "-i", str(base), "-vf", vf, "-c:v", "libx264"]
            + [
                "-preset",
                "veryfast",
                "-crf",
                "20",
                "-pix_fmt",
                "yuv420p",
                str(raw / f"long_{k}.mp4"),
            ]
        )
        k += 1
    done.touch()
    return raw


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True)


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
    ap.add_argument(
        "--long-minutes",
        type=float,
        default=0.0,
        help="instead of the sample corpus: this many minutes of 720p footage (cached)",
    )
    ap.add_argument("--input", default="", help="use this folder of videos as the corpus")
    ap.add_argument("--skip-st", action="store_true", help="skip the 1-process split+transcode")
    ap.add_argument(
        "--compare",
        action="store_true",
        help="also run the DAG on the two-decode path (WORLDMILL_ONEPASS=0), after",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="K=V[,K=V...]",
        help="also run the DAG with these `curate --set` overrides (repeatable), after",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each DAG variant this many times, each after its own decode+encode pass "
        "(paired: this machine's speed drifts by tens of percent between minutes)",
    )
    a = ap.parse_args()
    # The CLI's start-up is measured as a user's install would have it: with the project's
    # bytecode written (scripts/bootstrap.sh does it; edits since then would be recompiled
    # at every start where PYTHONDONTWRITEBYTECODE is set).
    root = Path(__file__).resolve().parent.parent
    for sub in ("worldmill", "flows", "tasks", "models"):
        compileall.compile_dir(root / sub, quiet=1)
    work = Path(a.workdir)
    if a.input:
        raw = Path(a.input)
        for sub in ("out", "cache", "st", "ffmpeg", "dag0", "dag1"):
            shutil.rmtree(work / sub, ignore_errors=True)
    elif a.long_minutes:
        raw = long_corpus(work / "long", a.long_minutes)
        for sub in ("out", "cache", "st", "ffmpeg", "dag0", "dag1"):
            shutil.rmtree(work / sub, ignore_errors=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
        raw = work / "raw"
        generate(raw, seed=a.seed)
        if a.height:
            upscale(raw, a.height)
    cfg = CurateConfig(input=str(raw), out=str(work / "out"))
    res = ingest(str(raw), [], cfg.skip_extensions, cache_dir=str(work / "cache"))
    videos = [v for v in res.todo if v.status == OK]
    footage = sum(v.duration_s for v in videos)
    sizes = sorted({f"{v.width}x{v.height}" for v in videos})
    print(
        f"corpus: {len(videos)} good videos, {footage:.1f} s of footage ({', '.join(sizes)}), "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )

    if not a.skip_st:  # split + transcode, single process
        t0 = time.perf_counter()
        n_clips = 0
        for v in videos:
            clips = split_video(v, cfg.split)
            transcode_clips(v, clips, str(work / "st" / v.video_id), cfg.transcode)
            n_clips += sum(1 for c in clips if c.clip_uri)
        st = time.perf_counter() - t0
        print(
            f"split+transcode: {n_clips} clips in {st:.2f} s on 1 core "
            f"-> {n_clips / st:.2f} clips/s/core"
        )

    c0 = _child_cpu()
    t_dec = decode_pass(videos)
    c1 = c1_dec = _child_cpu()
    print(f"ffmpeg decode alone: {t_dec:.2f} s wall, {c1 - c0:.1f} CPU s")
    t_ff = ffmpeg_pass(videos, work / "ffmpeg", cfg)
    c2 = _child_cpu()
    w, h = output_size(videos[0], cfg.transcode)
    print(f"ffmpeg decode+encode pass at {w}x{h}: {t_ff:.2f} s wall, {c2 - c1:.1f} CPU s")

    runs = [("one-decode path (default)", "1", [])]
    if a.compare:
        runs.append(("two-decode path (WORLDMILL_ONEPASS=0)", "0", []))
    for v in a.variant:
        sets = [x for kv in v.split(",") for x in ("--set", kv.strip())]
        runs.append((f"one-decode path, --set {v}", "1", sets))
    ratios: dict[str, list[tuple[float, float]]] = {}
    for n_run, (label, onepass, sets) in enumerate([r for r in runs for _ in range(a.repeat)]):
        if n_run > 0 and a.repeat > 1:  # a fresh pass right before each DAG run: paired
            c1_dec = _child_cpu()
            t_ff = ffmpeg_pass(videos, work / "ffmpeg", cfg)
            c2 = _child_cpu()
            print(f"ffmpeg decode+encode pass again: {t_ff:.2f} s wall, {c2 - c1_dec:.1f} CPU s")
        dag = work / f"dag{onepass}"
        shutil.rmtree(dag, ignore_errors=True)
        c0 = _child_cpu()
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "worldmill.cli", "curate", str(raw), "--out", str(dag), *sets],
            capture_output=True,
            text=True,
            env={**os.environ, "WORLDMILL_ONEPASS": onepass},
        )
        t_dag = time.perf_counter() - t0
        c1 = _child_cpu()
        if r.returncode != 0:
            print(r.stderr[-2000:])
            return 1
        inner = next((ln for ln in r.stdout.splitlines() if "finished in" in ln), "")
        m = re.search(r"finished in ([\d.]+) s", inner)
        t_flow = float(m.group(1)) if m else float("nan")
        print(
            f"whole DAG, {label}: {t_dag:.2f} s CLI wall incl. start-up, "
            f"{t_flow:.1f} s flow alone, {c1 - c0:.1f} CPU s"
        )
        print(
            f"  ratio DAG (the flow's own time) / decode+encode pass: {t_flow / t_ff:.2f}x "
            f"(target <= 1.5x); CLI wall incl. the temporary Prefect server's start and stop: "
            f"{t_dag / t_ff:.2f}x; CPU s: {(c1 - c0) / (c2 - c1_dec):.2f}x; "
            f"CLI wall / decode alone: {t_dag / t_dec:.2f}x"
        )
        print(f"  load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        ratios.setdefault(label, []).append((t_flow / t_ff, t_dag / t_ff))
    for label, rs in ratios.items():
        if len(rs) > 1:
            flow, cli = sorted(r[0] for r in rs), sorted(r[1] for r in rs)
            print(
                f"{label}: median of {len(rs)} paired ratios {statistics.median(flow):.2f}x flow "
                f"alone (range {flow[0]:.2f}-{flow[-1]:.2f}), {statistics.median(cli):.2f}x CLI "
                f"wall (range {cli[0]:.2f}-{cli[-1]:.2f})"
            )
    return 0


def _child_cpu() -> float:
    """CPU seconds (user + system) of finished child processes so far."""
    t = os.times()
    return t.children_user + t.children_system


if __name__ == "__main__":
    raise SystemExit(main())
