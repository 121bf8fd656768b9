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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from worldmill.media import ffmpeg_bin
from worldmill.synth import write_video

W, H, FPS = 320, 180, 24  # frame size in pixels, frames per second
# One encoder thread: x264's frame threads can make the bytes differ from run to run.
X264_DETERMINISTIC = ["-threads", "1"]

# scikit-image photos that ship inside the wheel (verified to load offline, no pooch).
# Images containing text (``page``, ``text``, ``logo``) are left out on purpose: they would
# trip the OCR filter in shots meant to be kept; so is the smooth ``colorwheel`` (it reads as
# out of focus to a sharpness measure).
COLOR_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "retina",
    "hubble_deep_field",
    "immunohistochemistry",
)
GRAY_PHOTOS = ("camera", "coins", "moon", "clock", "brick", "grass", "gravel", "cell")

WORDS = (
    "BREAKING NEWS",
    "SALE 50% OFF",
    "SUBSCRIBE NOW",
    "LIVE TONIGHT",
    "HELLO WORLD",
    "CHAPTER ONE",
    "GAME OVER",
    "WELCOME HOME",
    "BIG SUMMER DEALS",
    "THE END",
    "CLICK HERE",
    "FREE SHIPPING",
)

Frames = np.ndarray  # (T, H, W, 3) uint8 RGB


@dataclass
class _Shot:
    content: str  # moving | static | text | dark | blurry
    n: int  # frames
    content_id: str
    render: Callable[[int], Frames]  # n -> (n, H, W, 3) uint8

    @property
    def expect(self) -> tuple[bool, str]:
        reason = {"static": "motion", "text": "text", "dark": "quality", "blurry": "quality"}
        r = reason.get(self.content, "")
        return (r == "", r)


# --------------------------------------------------------------------------- content


def _load_photo(name: str, tint: np.ndarray | None) -> np.ndarray:
    """A scikit-image photo as float32 RGB in [0, 255], ~400 px high. Gray photos are tinted
    with a two-colour ramp ``tint`` (2, 3) so that they differ in colour as well."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    img = img.astype(np.float32)
    if img.ndim == 2:
        g = (img / 255.0)[..., None]
        lo, hi = (tint if tint is not None else np.array([[0, 0, 0], [255, 255, 255]])).astype(
            np.float32
        )
        img = lo + g * (hi - lo)
    img = img[..., :3]
    scale = 400.0 / img.shape[0]
    size = (max(2, int(round(img.shape[1] * scale))), 400)
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def _camera_path(
    img_hw: tuple[int, int], rng: np.random.Generator, style: str
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end crop windows ``(cx, cy, w)`` in source pixels (16:9 windows)."""
    ih, iw = img_hw
    wmax = min(iw, ih * W / H)  # widest 16:9 window that fits

    def window(wf: float) -> np.ndarray:
        w = wmax * wf
        h = w * H / W
        cx = rng.uniform(w / 2, iw - w / 2)
        cy = rng.uniform(h / 2, ih - h / 2)
        return np.array([cx, cy, w])

    if style == "zoom":
        a, b = window(rng.uniform(0.85, 0.98)), window(rng.uniform(0.45, 0.55))
        if rng.random() < 0.5:
            a, b = b, a  # zoom out instead of in
        return a, b
    if style == "fastpan":
        wf = rng.uniform(0.5, 0.6)
        w = wmax * wf
        h = w * H / W
        if iw - w > ih - h:  # pan along the longer free axis, edge to edge
            y = rng.uniform(h / 2, ih - h / 2)
            a, b = np.array([w / 2, y, w]), np.array([iw - w / 2, y, w])
        else:
            x = rng.uniform(w / 2, iw - w / 2)
            a, b = np.array([x, h / 2, w]), np.array([x, ih - h / 2, w])
        return (a, b) if rng.random() < 0.5 else (b, a)
    wf = rng.uniform(0.6, 0.75)  # "pan": a gentle diagonal drift
    a, b = window(wf), window(wf)
    return a, b


def _kenburns(img: np.ndarray, n: int, a: np.ndarray, b: np.ndarray) -> Frames:
    """Film ``img`` with a crop window moving linearly from ``a`` to ``b`` (cx, cy, w)."""
    out = np.empty((n, H, W, 3), np.uint8)
    for i in range(n):
        t = i / max(1, n - 1)
        cx, cy, w = a + (b - a) * t
        s = w / W  # source pixels per output pixel
        m = np.array([[s, 0, cx - s * W / 2], [0, s, cy - s * H / 2]], np.float32)
        f = cv2.warpAffine(
            img,
            m,
            (W, H),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
        out[i] = np.clip(f, 0, 255).astype(np.uint8)
    return out


def _shapes(n: int, rng: np.random.Generator) -> Frames:
    """Bouncing antialiased circles/rectangles over a two-colour vertical gradient."""
    c0, c1 = rng.uniform(0, 255, (2, 3))
    ramp = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
    bg = (c0 + (c1 - c0) * ramp) * np.ones((1, W, 1), np.float32)
    bg = bg.astype(np.uint8)
    k = int(rng.integers(5, 9))
    pos = rng.uniform([20, 20], [W - 20, H - 20], (k, 2))
    vel = rng.uniform(1.5, 4.5, (k, 2)) * rng.choice([-1, 1], (k, 2))
    size = rng.uniform(12, 34, k)
    cols = rng.uniform(0, 255, (k, 3))
    kind = rng.integers(0, 2, k)
    out = np.empty((n, H, W, 3), np.uint8)
    for i in range(n):
        f = bg.copy()
        for j in range(k):
            x, y = pos[j]
            col = tuple(float(c) for c in cols[j])
            if kind[j] == 0:
                cv2.circle(f, (int(x), int(y)), int(size[j]), col, -1, cv2.LINE_AA)
            else:
                r = int(size[j])
                cv2.rectangle(
                    f, (int(x) - r, int(y) - r // 2), (int(x) + r, int(y) + r // 2), col, -1
                )
        out[i] = f
        pos += vel
        for d, lim in ((0, W), (1, H)):  # bounce off the borders
            hit = (pos[:, d] < 0) | (pos[:, d] > lim)
            vel[hit, d] *= -1
            pos[:, d] = np.clip(pos[:, d], 0, lim)
    return out


def _plasma(n: int, rng: np.random.Generator) -> Frames:
    """Flowing sum-of-sinusoids field through a random three-colour palette."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    t = np.arange(n, dtype=np.float32)[:, None, None]
    f = np.zeros((n, H, W), np.float32)
    for _ in range(3):
        kx, ky = rng.uniform(-0.06, 0.06, 2)
        w = rng.uniform(0.08, 0.2) * rng.choice([-1, 1])
        f += np.sin(kx * x + ky * y + w * t + rng.uniform(0, 6.3))
    f = (f - f.min()) / max(1e-6, float(f.max() - f.min()))  # (n, H, W) in [0, 1]
    # Palette from dark to bright (contrast), random hues.
    pal = rng.uniform(0, 255, (3, 3)).astype(np.float32)
    pal *= np.array([0.35, 0.75, 1.0], np.float32)[:, None]
    pal[2] = np.maximum(pal[2], 150)
    lo = np.clip(2 * f, 0, 1)[..., None]
    hi = np.clip(2 * f - 1, 0, 1)[..., None]
    rgb = pal[0] + (pal[1] - pal[0]) * lo + (pal[2] - pal[1]) * hi
    # Thin dark contour lines at 8 levels of the field: sharp edges flowing with it (a smooth
    # field alone reads as out of focus to a sharpness measure).
    band = np.abs((f * 8) % 1.0 - 0.5) > 0.46
    rgb[band] *= 0.25
    return rgb.astype(np.uint8)


def _overlay_text(frames: Frames, words: str) -> Frames:
    """Burn big white words with a black outline into every frame (in place)."""
    font = cv2.FONT_HERSHEY_DUPLEX
    lines = words.split(" ", 1) if len(words) > 10 else [words]
    scale = 1.6
    for f in frames:
        for li, line in enumerate(lines):
            (tw, th), _ = cv2.getTextSize(line, font, scale, 3)
            org = ((W - tw) // 2, H // 2 - 10 + li * (th + 18) - (len(lines) - 1) * th // 2)
            cv2.putText(f, line, org, font, scale, (0, 0, 0), 9, cv2.LINE_AA)
            cv2.putText(f, line, org, font, scale, (255, 255, 255), 3, cv2.LINE_AA)
    return frames


class _Content:
    """Hands out distinct visual content (each photo used once per corpus)."""

    def __init__(self, seed: int, rng: np.random.Generator):
        self.seed = seed
        self.rng = rng
        photos = [(p, False) for p in COLOR_PHOTOS] + [(p, True) for p in GRAY_PHOTOS]
        order = rng.permutation(len(photos))
        self.photos = [photos[i] for i in order]
        self.words = [WORDS[i] for i in rng.permutation(len(WORDS))]
        self.hues = list(rng.permutation(12))  # distinct tints for gray photos
        self.count = 0

    def _cid(self, kind: str) -> str:
        self.count += 1
        return f"s{self.seed}_{self.count:02d}_{kind}"

    def _photo(self, color: bool = False) -> tuple[str, np.ndarray]:
        i = next((i for i, (_, g) in enumerate(self.photos) if not g), 0) if color else 0
        name, gray = self.photos.pop(i)
        tint = None
        if gray:
            hue = self.hues.pop(0) * 15  # OpenCV hue, 0..180
            hsv = np.array([[[hue, 200, 60], [(hue + 20) % 180, 90, 250]]], np.uint8)
            tint = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]
        return name, _load_photo(name, tint)

    def shot(self, content: str, seconds: float, style: str = "pan") -> _Shot:
        """One shot of ``content`` (moving/static/text/dark/blurry) and camera ``style``
        (pan/fastpan/zoom for photos, shapes/plasma for procedural)."""
        n = int(round(seconds * FPS))
        rng = np.random.default_rng(self.rng.integers(1 << 62))
        if style in ("shapes", "plasma"):
            fn = _shapes if style == "shapes" else _plasma
            return _Shot(content, n, self._cid(style), lambda m: fn(m, rng))
        # Dark and blurry shots get a colour photo filmed with a fast pan: plenty of motion,
        # so that the quality filter (not the motion filter) is the one to reject them.
        name, img = self._photo(color=content in ("dark", "blurry"))
        a, b = _camera_path(img.shape[:2], rng, style)
        if content == "static":
            return _Shot(
                content, n, self._cid(name), lambda m: _kenburns(img, 1, a, a).repeat(m, 0)
            )
        words = self.words.pop(0) if content == "text" else ""

        def render(m: int) -> Frames:
            src = img
            if content == "blurry":  # sigma ~12 output pixels, contrast restored (std ~55)
                src = cv2.GaussianBlur(img, (0, 0), 12.0 * a[2] / W)
                mu = src.mean(axis=(0, 1))
                src = mu + (src - mu) * (55.0 / max(1.0, float(src.mean(axis=2).std())))
            if content == "dark":  # mean luma ~14 / 255
                src = img * (14.0 / max(1.0, float(img.mean())))
            f = _kenburns(src, m, a, b)
            return _overlay_text(f, words) if words else f

        return _Shot(content, n, self._cid(name), render)


# --------------------------------------------------------------------------- composition


def _compose(
    shots: list[_Shot], transitions: list[tuple[str, int]]
) -> tuple[Frames, list[dict[str, Any]]]:
    """Join shots with transitions ``(kind, frames)``: ``hard`` (0), ``dissolve`` (d frames
    of cross-fade, shots overlap) or ``fade`` (f frames out to black + f frames in).
    Returns the frames and one ``{time_s, start_s, end_s, type}`` dict per boundary."""
    parts: list[np.ndarray] = [shots[0].render(shots[0].n).astype(np.float32)]
    total = shots[0].n
    bounds: list[dict[str, Any]] = []
    for shot, (kind, d) in zip(shots[1:], transitions, strict=True):
        # A dissolve overlaps the shots by d frames: render d more so no shot gets short.
        nxt = shot.render(shot.n + (d if kind == "dissolve" else 0)).astype(np.float32)
        prev = parts[-1]
        if kind == "hard":
            bounds.append({"time_s": total / FPS, "start_s": total / FPS, "end_s": total / FPS})
        elif kind == "dissolve":
            alpha = (np.arange(1, d + 1, dtype=np.float32) / (d + 1))[:, None, None, None]
            prev[-d:] = prev[-d:] * (1 - alpha) + nxt[:d] * alpha
            nxt = nxt[d:]
            s = total - d
            bounds.append({"time_s": (s + d / 2) / FPS, "start_s": s / FPS, "end_s": total / FPS})
        elif kind == "fade":
            out = (1 - np.arange(1, d + 1, dtype=np.float32) / d)[:, None, None, None]
            prev[-d:] *= out  # last frame fully black
            nxt[:d] *= out[::-1]  # first frame fully black
            bounds.append(
                {"time_s": total / FPS, "start_s": (total - d) / FPS, "end_s": (total + d) / FPS}
            )
        else:
            raise ValueError(f"unknown transition {kind!r}")
        bounds[-1]["type"] = kind
        parts.append(nxt)
        total += len(nxt)
    frames = np.concatenate(parts).clip(0, 255).astype(np.uint8)
    return frames, bounds


def _gt_entry(
    shots: list[_Shot], bounds: list[dict[str, Any]], n_frames: int, **kw: Any
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
    content = _Content(seed, rng)
    videos: dict[str, Any] = {}
    source = ""
    for spec in _plan(seed, small, rng):
        shots = [content.shot(c, s, style) for c, style, s in spec["shots"]]
        frames, bounds = _compose(shots, spec["transitions"])
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
        _plasma(48, np.random.default_rng([seed, 7])),
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
