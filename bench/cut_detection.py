"""Cut-detection benchmark: worldmill's detector vs PySceneDetect's ContentDetector.

Generates the sample corpus (``worldmill.sample_data``) for a seed it is given, runs both
detectors on every readable video (``expect_status`` ok or duplicate; bad files are only
checked to fail cleanly), and prints precision / recall / F1 of the boundary times against
the ground truth (a prediction matches a true boundary within ``--tol`` seconds, one to
one), recall per transition type, the mean localisation error, and the time taken: wall
clock and CPU seconds (this process plus its ffmpeg children) -- CPU time is the fairer
figure on a shared machine. Each file is timed ``--repeat`` times, methods interleaved,
and the fastest run is kept.

    .venv/bin/python bench/cut_detection.py --seed 7
    .venv/bin/python bench/cut_detection.py --seeds 0-4 --small
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from worldmill.config import SplitConfig
from worldmill.media import MediaError
from worldmill.sample_data import generate
from worldmill.tasks.split import detect_boundaries, match_boundaries

METHODS = ("worldmill", "pyscenedetect")


def _cpu_s() -> float:
    """CPU seconds used by this process and its waited-for children (ffmpeg)."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


ONEPASS = False  # --onepass: worldmill's frames come from the DAG's one-decode pass


def _detect(path: str, method: str) -> list[float]:
    """Boundary times; with ONEPASS, worldmill detects on the frames of
    ``tasks/onepass.decode_once`` (the curate DAG's decode) instead of its own decode."""
    if not (ONEPASS and method == "worldmill"):
        return detect_boundaries(path, SplitConfig(method=method))
    from worldmill.config import TranscodeConfig
    from worldmill.tasks import onepass
    from worldmill.tasks.ingest import inspect_file
    from worldmill.tasks.shot_detect import analyse_frames

    v = inspect_file(path, "")
    with tempfile.TemporaryDirectory() as tmp:
        with onepass.decode_once(v, SplitConfig(), TranscodeConfig(), tmp) as dec:
            return [t.time_s for t in analyse_frames(dec.analysis, dec.fps)]


def run_corpus(corpus: Path, repeat: int = 3, tol: float = 0.5) -> dict[str, Any]:
    """Score both methods on one generated corpus directory; returns per-method totals."""
    gt = json.loads((corpus / "ground_truth.json").read_text())
    stats: dict[str, dict[str, Any]] = {
        m: {
            "tp": 0,
            "fp": 0,
            "fn": 0,
            "wall": 0.0,
            "cpu": 0.0,
            "err": [],
            "by_type": {},
            "bad_ok": 0,
            "bad_total": 0,
            "frames": 0,
        }
        for m in METHODS
    }
    for name, v in gt["videos"].items():
        path = str(corpus / name)
        if v["expect_status"] == "failed":
            for m in METHODS:
                stats[m]["bad_total"] += 1
                try:
                    detect_boundaries(path, SplitConfig(method=m))
                except MediaError:
                    stats[m]["bad_ok"] += 1  # a clean, readable failure
            continue
        best = {m: (float("inf"), float("inf")) for m in METHODS}
        pred: dict[str, list[float]] = {}
        for _ in range(repeat):
            for m in METHODS:
                w0, c0 = time.perf_counter(), _cpu_s()
                pred[m] = _detect(path, m)
                w, c = time.perf_counter() - w0, _cpu_s() - c0
                best[m] = (min(best[m][0], w), min(best[m][1], c))
        truth = v["cuts_s"]
        for m in METHODS:
            s = stats[m]
            pairs = match_boundaries(pred[m], truth, tol)
            s["tp"] += len(pairs)
            s["fp"] += len(pred[m]) - len(pairs)
            s["fn"] += len(truth) - len(pairs)
            s["wall"] += best[m][0]
            s["cpu"] += best[m][1]
            s["frames"] += v.get("num_frames", 0)
            s["err"] += [abs(pred[m][i] - truth[j]) for i, j in pairs]
            hit = {j for _, j in pairs}
            for j, kind in enumerate(v["cut_types"]):
                k = s["by_type"].setdefault(kind, [0, 0])
                k[0] += j in hit
                k[1] += 1
    return stats


def _merge(total: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if total is None:
        return new
    for m in METHODS:
        a, b = total[m], new[m]
        for k in ("tp", "fp", "fn", "wall", "cpu", "bad_ok", "bad_total", "frames"):
            a[k] += b[k]
        a["err"] += b["err"]
        for kind, (h, n) in b["by_type"].items():
            x = a["by_type"].setdefault(kind, [0, 0])
            x[0] += h
            x[1] += n
    return total


def report(stats: dict[str, Any]) -> str:
    """Format the totals as a table."""
    lines = [
        f"{'method':<14} {'P':>6} {'R':>6} {'F1':>6}  {'hard':>7} {'dissolve':>9} {'fade':>7}"
        f"  {'err ms':>6}  {'wall s':>7} {'cpu s':>6} {'fps':>6}  bad files",
    ]
    f1 = {}
    for m in METHODS:
        s = stats[m]
        p = s["tp"] / max(1, s["tp"] + s["fp"])
        r = s["tp"] / max(1, s["tp"] + s["fn"])
        f1[m] = 2 * p * r / max(1e-9, p + r)
        bt = {k: f"{h}/{n}" for k, (h, n) in s["by_type"].items()}
        err = 1000 * sum(s["err"]) / max(1, len(s["err"]))
        fps = s["frames"] / max(1e-9, s["wall"])
        lines.append(
            f"{m:<14} {p:6.3f} {r:6.3f} {f1[m]:6.3f}  {bt.get('hard', '-'):>7} "
            f"{bt.get('dissolve', '-'):>9} {bt.get('fade', '-'):>7}  {err:6.0f}  "
            f"{s['wall']:7.2f} {s['cpu']:6.2f} {fps:6.0f}  {s['bad_ok']}/{s['bad_total']} "
            "clean errors"
        )
    w, p = stats["worldmill"], stats["pyscenedetect"]
    lines.append(
        f"speed-up worldmill vs pyscenedetect: wall {p['wall'] / max(1e-9, w['wall']):.2f}x, "
        f"cpu {p['cpu'] / max(1e-9, w['cpu']):.2f}x; "
        f"F1 {f1['worldmill']:.3f} vs {f1['pyscenedetect']:.3f}"
    )
    return "\n".join(lines)


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    ap.add_argument("--seeds", default="", help="several seeds, e.g. 0-4 or 1,5,9 (totals)")
    ap.add_argument("--small", action="store_true", help="the small corpus")
    ap.add_argument("--repeat", type=int, default=3, help="timing runs per file (min kept)")
    ap.add_argument("--tol", type=float, default=0.5, help="match tolerance, seconds")
    ap.add_argument("--corpus", default="", help="use this generated corpus directory")
    ap.add_argument(
        "--onepass",
        action="store_true",
        help="worldmill detects on the curate DAG's one-decode frames (tasks/onepass.py)",
    )
    a = ap.parse_args(argv)
    global ONEPASS
    ONEPASS = a.onepass
    seeds = _seeds(a.seeds) if a.seeds else [a.seed]
    total = None
    with tempfile.TemporaryDirectory(prefix="cutbench-") as tmp:
        for seed in seeds:
            if a.corpus:
                corpus = Path(a.corpus)
            else:
                corpus = Path(tmp) / f"seed{seed}"
                generate(corpus, seed=seed, small=a.small)
            gt = json.loads((corpus / "ground_truth.json").read_text())
            n_cuts = sum(
                len(v["cuts_s"]) for v in gt["videos"].values() if v["expect_status"] != "failed"
            )
            print(
                f"corpus seed={gt['seed']} small={gt.get('small')} files={len(gt['videos'])} "
                f"boundaries={n_cuts}",
                flush=True,
            )
            total = _merge(total, run_corpus(corpus, a.repeat, a.tol))
            if a.corpus:
                break
    assert total is not None
    print(report(total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
