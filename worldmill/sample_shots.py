"""What one synthetic shot of the sample corpus looks like, and how shots are joined.

Content for :mod:`worldmill.sample_data` (the curation corpus) and
:mod:`worldmill.sample_world` (the training corpus), all made offline:

* real photos shipped inside scikit-image (no download), grey ones tinted, filmed with a
  Ken-Burns camera (a crop window moving linearly: gentle pans, fast edge-to-edge pans,
  zooms in or out);
* procedural content: bouncing antialiased shapes over a gradient, flowing plasma with
  sharp contour lines;
* variants a correct pipeline must reject: a still image, big burned-in words, a very dark
  or a very blurry shot (:class:`Shot` ``.expect`` says which filter should reject it);
* :func:`compose`: shots joined by hard cuts, dissolves or fades, with each boundary's
  time and extent.

Frames are ``(T, H, W, 3)`` uint8 RGB at ``W x H`` pixels, ``FPS`` frames per second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

W, H, FPS = 320, 180, 24  # frame size in pixels, frames per second

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
class Shot:
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


def load_photo(name: str, tint: np.ndarray | None) -> np.ndarray:
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


def kenburns(img: np.ndarray, n: int, a: np.ndarray, b: np.ndarray) -> Frames:
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


def plasma(n: int, rng: np.random.Generator) -> Frames:
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


class Content:
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
        return name, load_photo(name, tint)

    def shot(self, content: str, seconds: float, style: str = "pan") -> Shot:
        """One shot of ``content`` (moving/static/text/dark/blurry) and camera ``style``
        (pan/fastpan/zoom for photos, shapes/plasma for procedural)."""
        n = int(round(seconds * FPS))
        rng = np.random.default_rng(self.rng.integers(1 << 62))
        if style in ("shapes", "plasma"):
            fn = _shapes if style == "shapes" else plasma
            return Shot(content, n, self._cid(style), lambda m: fn(m, rng))
        # Dark and blurry shots get a colour photo filmed with a fast pan: plenty of motion,
        # so that the quality filter (not the motion filter) is the one to reject them.
        name, img = self._photo(color=content in ("dark", "blurry"))
        a, b = _camera_path(img.shape[:2], rng, style)
        if content == "static":
            return Shot(content, n, self._cid(name), lambda m: kenburns(img, 1, a, a).repeat(m, 0))
        words = self.words.pop(0) if content == "text" else ""

        def render(m: int) -> Frames:
            src = img
            if content == "blurry":  # sigma ~12 output pixels, contrast restored (std ~55)
                src = cv2.GaussianBlur(img, (0, 0), 12.0 * a[2] / W)
                mu = src.mean(axis=(0, 1))
                src = mu + (src - mu) * (55.0 / max(1.0, float(src.mean(axis=2).std())))
            if content == "dark":  # mean luma ~14 / 255
                src = img * (14.0 / max(1.0, float(img.mean())))
            f = kenburns(src, m, a, b)
            return _overlay_text(f, words) if words else f

        return Shot(content, n, self._cid(name), render)


# --------------------------------------------------------------------------- composition


def compose(
    shots: list[Shot], transitions: list[tuple[str, int]]
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
