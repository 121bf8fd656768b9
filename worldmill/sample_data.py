"""Generate a small, deterministic sample corpus of raw videos with ground truth.

The corpus exercises every curation stage with known answers:

* real photos shipped inside scikit-image (no download) filmed with a Ken-Burns camera
  (pans, fast pans, zooms) and procedural content (moving shapes, flowing plasma);
* hard cuts, dissolves (cross-fades of 12-24 frames) and fade-to-black/fade-in;
* shots a correct pipeline must reject: a still image (motion), big burned-in words (text),
  a very dark or very blurry shot (quality);
* near-duplicates of one source made with real ffmpeg (re-encode at another CRF, rescale,
  ~5 % crop, brightness shift) and a byte-identical copy under another name;
* bad files (truncated mp4, empty file, a text file, audio only, random bytes);
* hostile file names (spaces, quotes, ``;``, ``$(touch x)``, backticks, non-ASCII).

This module plans the corpus (which shots in which file, joined how), writes it and its
ground truth; what one shot looks like (photos, camera paths, procedural content, text
overlays) and how shots are joined live in :mod:`worldmill.sample_shots`.

``generate(out_dir, seed)`` writes the videos plus ``ground_truth.json`` and returns the
ground-truth dict. Equal seeds give equal corpora; different seeds give different photos,
camera paths, durations, colours, words and transition lengths (same file names).

Ground-truth conventions (times in seconds, frame ``k`` covers ``[k/fps, (k+1)/fps)``):

* a hard cut whose first new frame is ``k`` is at ``k / fps``;
* a dissolve over frames ``[s, s+d)`` is at its midpoint ``(s + d/2) / fps``;
* a fade is at the middle of its black frames; ``transitions`` (an extra key) gives every
  boundary's full extent ``[start_s, end_s)``;
* shot ``i`` spans ``[cuts_s[i-1], cuts_s[i]]`` (0 and ``duration_s`` at the ends);
* shots with equal ``content_id`` in different files are duplicates (near-dup copies reuse
  their source's ids); all other pairs show visually distinct content.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from worldmill.media import ffmpeg_bin
from worldmill.sample_shots import FPS, Content, H, Shot, W, compose, plasma
from worldmill.synth import write_video

# One encoder thread: x264's frame threads can make the bytes differ from run to run.
X264_DETERMINISTIC = ["-threads", "1"]


# --------------------------------------------------------------------------- ground truth


def _gt_entry(
    shots: list[Shot], bounds: list[dict[str, Any]], n_frames: int, **kw: Any
) -> dict[str, Any]:
    dur = n_frames / FPS
    cuts = [round(b["time_s"], 4) for b in bounds]
    edges = [0.0, *cuts, round(dur, 4)]
    shot_list = []
    for i, s in enumerate(shots):
        kept, reason = s.expect
        shot_list.append(
            {
                "start_s": edges[i],
                "end_s": edges[i + 1],
                "content": s.content,
                "expect_kept": kept,
                "expect_reason": reason,
                "content_id": s.content_id,
            }
        )
    entry = {
        "expect_status": "ok",
        "copy_of": "",
        "transform": "",
        "duration_s": round(dur, 4),
        "cuts_s": cuts,
        "cut_types": [b["type"] for b in bounds],
        "shots": shot_list,
        "transitions": [
            {
                "type": b["type"],
                "time_s": round(b["time_s"], 4),
                "start_s": round(b["start_s"], 4),
                "end_s": round(b["end_s"], 4),
            }
            for b in bounds
        ],
        "num_frames": n_frames,
    }
    entry.update(kw)
    return entry


def _ffmpeg(args: list[str]) -> None:
    cmd = [ffmpeg_bin(), "-v", "error", "-y", "-nostdin", *args]
    r = subprocess.run(cmd, capture_output=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {r.stderr.decode(errors='replace').strip()}")


NEAR_DUP_FILTERS = {
    # transform -> (video filter, crf)
    "reencode": ("", 34),
    "rescale": ("scale=256:144:flags=bicubic", 23),
    "crop": ("crop=trunc(iw*0.95/2)*2:trunc(ih*0.95/2)*2,scale=320:180:flags=bicubic", 23),
    "brightness": ("eq=brightness=0.08", 23),
}


def _near_dup(src: Path, dst: Path, transform: str) -> None:
    """Write a near-duplicate of ``src`` with real ffmpeg (argv list, absolute paths)."""
    vf, crf = NEAR_DUP_FILTERS[transform]
    args = ["-i", str(src.absolute()), "-an"]
    if vf:
        args += ["-vf", vf]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p"]
    args += X264_DETERMINISTIC
    _ffmpeg([*args, str(dst.absolute())])


def _bad_file(path: Path, kind: str, rng: np.random.Generator, donor: Path | None) -> None:
    """Write one unreadable "video" of ``kind``."""
    if kind == "truncated":
        assert donor is not None
        data = donor.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # moov atom is at the end: now missing
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("These are meeting notes, not a video.\nTODO: buy milk.\n")
    elif kind == "audio_only":
        _ffmpeg(
            ["-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", "-b:a", "64k"]
            + [str(path.absolute())]
        )
    elif kind == "garbage":
        path.write_bytes(b"\x00\x13garbage" + rng.bytes(48_000))
    else:
        raise ValueError(f"unknown bad-file kind {kind!r}")


# --------------------------------------------------------------------------- corpus layout

# Hostile names: normal good videos whose names try to break shells and encoders.
NAME_QUOTES = "city day 'one' \"two\".mp4"
NAME_SHELL = "night;$(touch x)`touch y`.mp4"
NAME_UNICODE = "café_東京.mp4"
NAME_SMALL_HOSTILE = "street 'a' \"b\"; $(touch x) `touch y` café.mp4"


def _durations(rng: np.random.Generator, k: int, lo: float, hi: float) -> list[float]:
    return [round(float(rng.uniform(lo, hi)) * 2) / 2 for _ in range(k)]  # half seconds


def _plan(seed: int, small: bool, rng: np.random.Generator) -> list[dict[str, Any]]:
    """The list of good source videos: name, shots (content, style) and transitions."""
    diss = lambda: ("dissolve", int(rng.integers(12, 25)))  # noqa: E731
    fade = lambda: ("fade", int(rng.integers(8, 15)))  # noqa: E731
    hard = ("hard", 0)
    if small:
        d = _durations(rng, 6, 3.5, 4.5)
        return [
            {
                "name": NAME_SMALL_HOSTILE,
                "shots": [
                    ("moving", "pan", d[0]),
                    ("static", "pan", d[1]),
                    ("text", "pan", d[2]),
                    ("moving", "shapes", d[3]),
                ],
                "transitions": [hard, diss(), fade()],
            },
            {
                "name": "harbor.mp4",
                "shots": [("moving", "fastpan", d[4]), ("moving", "plasma", d[5])],
                "transitions": [hard],
                "source": True,
            },
        ]
    d = _durations(rng, 14, 3.5, 6.5)
    moving_styles = ["pan", "fastpan", "zoom", "fastpan", "zoom", "pan"]
    styles = [moving_styles[i] for i in rng.permutation(len(moving_styles))]
    return [
        {
            "name": "ocean_trip.mp4",
            "shots": [("moving", styles[0], 4.5), ("moving", "shapes", 4.5)],
            "transitions": [hard],
            "source": True,
        },
        {
            "name": NAME_QUOTES,
            "shots": [
                ("moving", styles[1], d[0]),
                ("moving", styles[2], d[1]),
                ("static", "pan", d[2]),
                ("moving", "plasma", d[3]),
            ],
            "transitions": [diss(), hard, fade()],
        },
        {
            "name": NAME_UNICODE,
            "shots": [
                ("text", "pan", d[4]),
                ("moving", styles[3], d[5]),
                ("moving", "shapes", d[6]),
                ("moving", styles[4], d[7]),
            ],
            "transitions": [hard, diss(), hard],
        },
        {
            "name": NAME_SHELL,
            "shots": [
                ("dark", "fastpan", d[8]),
                ("moving", styles[5], d[9]),
                ("blurry", "fastpan", d[10]),
                ("moving", "plasma", d[11]),
            ],
            "transitions": [hard, fade(), diss()],
        },
    ]


def generate(out_dir: str | Path, seed: int = 0, small: bool = False) -> dict[str, Any]:
    """Write the sample corpus and ``ground_truth.json`` into ``out_dir``; return the
    ground-truth dict (format in the module docstring). Deterministic per ``seed``.

    Default: 14 files, ~2 minutes of 320x180 24 fps footage. ``small=True``: 6 files,
    ~30 s (a hard cut, a dissolve, a fade, a static shot, a text shot, a near-dup, an exact
    copy, two bad files, one hostile name).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0x5A4D])
    content = Content(seed, rng)
    videos: dict[str, Any] = {}
    source = ""
    for spec in _plan(seed, small, rng):
        shots = [content.shot(c, s, style) for c, style, s in spec["shots"]]
        frames, bounds = compose(shots, spec["transitions"])
        write_video(out / spec["name"], frames, fps=FPS, crf=18, extra_args=X264_DETERMINISTIC)
        videos[spec["name"]] = _gt_entry(shots, bounds, len(frames))
        if spec.get("source"):
            source = spec["name"]
    stem = Path(source).stem

    # Near-duplicates of the source (clip-level duplicates: same content ids).
    transforms = list(NEAR_DUP_FILTERS)
    if small:
        transforms = [transforms[int(rng.integers(len(transforms)))]]
    for tr in transforms:
        name = f"{stem}_{tr}.mp4"
        _near_dup(out / source, out / name, tr)
        videos[name] = {**videos[source], "copy_of": source, "transform": tr}

    # A byte-identical copy under another name (video-level duplicate).
    exact_src = source if small else NAME_UNICODE
    exact = f"{stem}_backup.mp4" if small else "tokyo_backup.mp4"
    shutil.copyfile(out / exact_src, out / exact)
    videos[exact] = {
        **videos[exact_src],
        "expect_status": "duplicate",
        "copy_of": exact_src,
        "transform": "exact",
    }

    # Bad files.
    bad = (
        ["truncated", "audio_only"]
        if small
        else ["truncated", "empty", "text", "audio_only", "garbage"]
    )
    donor = out / ".donor.mp4"
    write_video(
        donor,
        plasma(48, np.random.default_rng([seed, 7])),
        fps=FPS,
        extra_args=X264_DETERMINISTIC,
    )
    names = {
        "truncated": "truncated.mp4",
        "empty": "empty.mp4",
        "text": "notes.mp4",
        "audio_only": "audio_only.mp4",
        "garbage": "garbage.mp4",
    }
    for kind in bad:
        _bad_file(out / names[kind], kind, rng, donor)
        videos[names[kind]] = {
            "expect_status": "failed",
            "copy_of": "",
            "transform": f"bad:{kind}",
            "duration_s": 0.0,
            "cuts_s": [],
            "cut_types": [],
            "shots": [],
            "transitions": [],
            "num_frames": 0,
        }
    donor.unlink()

    gt = {"seed": seed, "fps": FPS, "small": small, "width": W, "height": H, "videos": videos}
    (out / "ground_truth.json").write_text(json.dumps(gt, indent=2, ensure_ascii=False))
    return gt


def main(argv: list[str] | None = None) -> None:
    """``python -m worldmill.sample_data OUT_DIR [--seed N] [--small]``."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true")
    a = p.parse_args(argv)
    gt = generate(a.out_dir, seed=a.seed, small=a.small)
    total = sum(v["duration_s"] for v in gt["videos"].values())
    print(f"wrote {len(gt['videos'])} files ({total:.1f} s of footage) to {a.out_dir}")


if __name__ == "__main__":
    main()
