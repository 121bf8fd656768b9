"""Guardrail figures: prompt pre-guard error rates on the held-out split, frame post-guard
blur strength and speed.

    python bench/guardrails.py [--threshold 0.5] [--frames 16]

Prompt set: ``worldmill/guardrails/data/prompts.jsonl``; the classifier is trained on its
``train`` split only, so ``test`` is held out. Prints one JSON object:

* ``prompt.test`` (held out from the same categories as ``train``), ``prompt.hard``
  (written separately, after the classifier was first tried: borderline benign prompts --
  action films, medicine, romance, children -- and blocked ones phrased unlike the
  training set) and ``prompt.train``: for the blocklist alone, the classifier alone and
  both (what ``check_prompt`` does): ``false_refusal_rate`` = refused benign / benign,
  ``miss_rate`` = allowed blocked / blocked, with the counts, and for the held-out splits
  the missed / falsely refused prompts and the miss rate per blocked category;
* ``frames``: astronaut photo (scikit-image) as ``--frames`` frames at 512 and 256 px:
  variance of the Laplacian inside the detected face box before/after, and s/frame of
  the face pass and of the NSFW pass (wall and CPU seconds: CPU time is the figure to
  trust on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter

import cv2
import numpy as np


def _rates(rows: list[dict], refused: list[bool]) -> dict:
    ben = [r for r, x in zip(rows, refused, strict=True) if r["label"] == "benign"]
    blk = [(r, x) for r, x in zip(rows, refused, strict=True) if r["label"] == "blocked"]
    fr = sum(x for r, x in zip(rows, refused, strict=True) if r["label"] == "benign")
    miss = sum(not x for _, x in blk)
    return {
        "false_refusal_rate": round(fr / max(1, len(ben)), 4),
        "miss_rate": round(miss / max(1, len(blk)), 4),
        "benign": len(ben),
        "blocked": len(blk),
        "false_refusals": fr,
        "misses": miss,
    }


def prompt_figures(threshold: float) -> dict:
    from worldmill.guardrails.prompt import blocklist, load_prompts, scores

    out = {}
    for split in ("test", "hard", "train"):
        rows = load_prompts(split)
        texts = [r["text"] for r in rows]
        bl = [blocklist().match(t) is not None for t in texts]
        p = scores(texts)
        cl = [bool(s >= threshold) for s in p]
        both = [a or b for a, b in zip(bl, cl, strict=True)]
        fig = {
            "blocklist": _rates(rows, bl),
            "classifier": _rates(rows, cl),
            "guard": _rates(rows, both),
        }
        if split != "train":
            n_cat = Counter(r["category"] for r in rows if r["label"] == "blocked")
            m_cat = Counter(
                r["category"]
                for r, x in zip(rows, both, strict=True)
                if r["label"] == "blocked" and not x
            )
            fig["miss_rate_by_category"] = {c: f"{m_cat[c]}/{n}" for c, n in sorted(n_cat.items())}
            fig["missed"] = [
                f"{r['text']} (P={s:.2f})"
                for r, x, s in zip(rows, both, p, strict=True)
                if r["label"] == "blocked" and not x
            ]
            fig["false_refusals"] = [
                f"{r['text']} (P={s:.2f}{', blocklist' if b else ''})"
                for r, x, s, b in zip(rows, both, p, bl, strict=True)
                if r["label"] == "benign" and x
            ]
        out[split] = fig
    return out


def _lap(a: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def frame_figures(n: int) -> dict:
    from skimage.data import astronaut

    from worldmill.guardrails import Guardrails, guard_frames

    out = {}
    guard_frames(astronaut()[None, :64, :64], Guardrails())  # load cascades + ONNX once
    for size in (512, 256):
        img = cv2.resize(astronaut(), (size, size), interpolation=cv2.INTER_AREA)
        frames = np.repeat(img[None], n, axis=0)  # (n, size, size, 3)
        t0, c0 = time.perf_counter(), time.process_time()
        g, rep = guard_frames(frames, Guardrails(nsfw=False))
        t_face, c_face = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
        t0, c0 = time.perf_counter(), time.process_time()
        _, rep_n = guard_frames(frames, Guardrails(face_blur=False))
        t_nsfw, c_nsfw = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
        _, x, y, w, h = rep["face_boxes"][0]
        before, after = _lap(img[y : y + h, x : x + w]), _lap(g[0][y : y + h, x : x + w])
        out[f"{size}px"] = {
            "faces_per_frame": rep["faces_detected"] / n,
            "face_box": [x, y, w, h],
            "laplacian_var_before": round(before, 1),
            "laplacian_var_after": round(after, 2),
            "sharpness_drop_x": round(before / max(after, 1e-9), 1),
            "frames_withheld": rep_n["frames_withheld"],
            "s_per_frame_faces": round(t_face, 4),  # wall
            "s_per_frame_nsfw": round(t_nsfw, 4),
            "cpu_s_per_frame_faces": round(c_face, 4),  # CPU time, all threads
            "cpu_s_per_frame_nsfw": round(c_nsfw, 4),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threshold", type=float, default=0.5, help="classifier P(blocked) cut-off")
    ap.add_argument("--frames", type=int, default=16)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = {"threshold": a.threshold, "prompt": prompt_figures(a.threshold)}
    res["frames"] = frame_figures(a.frames)
    res["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
