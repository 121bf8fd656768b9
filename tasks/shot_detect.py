"""The worldmill shot detector: shot boundaries from the per-frame features of
:mod:`worldmill.tasks.shot_features`, with their tuned constants.

:func:`analyse_frames` is the entry point: given the analysis frames of a video (one
low-resolution decode) it finds

- hard cuts: a spike of the frame-to-frame distance (HSV histograms + a motion-compensated
  thumbnail difference) above an adaptive threshold (a multiple of the local median);
- dissolves: windows whose end frames are very different while every frame in between is
  a linear blend ``(1 - a) A + a B`` of them with ``a`` rising (a camera pan is not a
  blend, so pans and zooms do not fire), and windows whose detail variance dips the way
  a cross-fade of two unrelated shots does (moving content inside the shots);
- fades: runs of black frames between non-black content (the boundary is the middle);

and merges candidates closer than ``MIN_GAP_S``. Each boundary is a :class:`Transition`:
a cut whose first new frame is ``k`` is at ``k / fps``; a gradual transition is reported
at its midpoint, with its extent kept so that :func:`worldmill.tasks.split.plan_clips` can
trim it off both neighbouring clips. Decoding and the other backends are in
:mod:`worldmill.tasks.split_backends`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from einops import rearrange

from worldmill.tasks.shot_features import Features, features, hist_dist, mc_diff, mc_pairs


@dataclass(frozen=True)
class Transition:
    """One shot boundary. ``time_s`` is the boundary (midpoint of a gradual transition);
    ``[start_s, end_s]`` is the span of frames that belong to neither shot (empty for a
    hard cut)."""

    time_s: float
    start_s: float
    end_s: float
    kind: str = "hard"  # hard | dissolve | fade
    score: float = 0.0

    def __float__(self) -> float:
        return self.time_s


# --------------------------------------------------------------------------- detectors

# Defaults of the worldmill detector (tuned on the sample corpus, seeds 0-9).
HARD_MIN = 0.28  # absolute floor of the hard-cut score (hist TV + 2 x MC diff)
HARD_RATIO = 3.0  # ... and this multiple of the local median of scores
HARD_WIN = 12  # half-window (frames) of the local median
BLACK_P95 = 0.035  # a frame is black when 95 % of its pixels are darker than this
GRAD_H = 8  # half-window (frames) of the blend test: transitions of >= ~12 frames
GRAD_MIN_DELTA = 0.08  # end frames of a dissolve differ by at least this (RMS, [0, 1])
GRAD_MIN_HIST = 0.2  # ... and their histograms by this TV distance
GRAD_MAX_RESID = 0.5  # in-between frames fit the blend to within this fraction of |B - A|
GRAD_MAX_ALPHA_ERR = 0.2  # ... with blend weights within this of an even ramp
GRAD_MC_R = 4  # shift search radius (pixels of the ~32x18 raster) of the pan test
GRAD_MIN_MC_RATIO = 0.6  # a dissolve's ends stay this different after motion compensation
# Evidence for a dissolve (log-odds-like, > GRAD_MIN_SCORE): contrast of the change across
# the window vs. the windows before/after, histogram change, and blend fit.
GRAD_CONTRAST0, GRAD_HIST0, GRAD_RESID0 = 1.5, 0.35, 0.3
GRAD_MIN_SCORE = 0.3
# Low-contrast pairs (two pans over similar grey textures): the thumbnails' spread is tiny,
# so the absolute gates above (RMS change, histogram change, the side-change floor) miss
# them. Below GRAD_LOWC_SD (mean per-frame std of the end thumbnails, [0, 1]) those gates
# are relaxed by the gain GRAD_LOWC_SD / std (at most GRAD_LOWC_GAIN); compression noise is
# absolute, so the blend residual gate loosens too (to at most GRAD_LOWC_RESID), and an
# even alpha ramp, the one sign of a cross-fade that contrast does not shrink, counts as
# evidence. Pans and zooms stay out through the motion-compensation and side-change tests,
# which are ratios. Windows above GRAD_LOWC_SD are scored exactly as before.
GRAD_LOWC_SD, GRAD_LOWC_GAIN, GRAD_LOWC_RESID = 0.08, 5.0, 0.75
GRAD_RAMP_EV0 = 0.35  # most evidence an even alpha ramp adds at normal contrast
GRAD_LOWC_CONTRAST = 1.25  # ... and the change inside the window stands out this much
MIN_GAP_S = 0.5  # boundaries closer than this are merged (the stronger one is kept)


def _hard_cuts(f: Features, sens: float) -> list[Transition]:
    """Spikes of the frame-to-frame distance above an adaptive threshold."""
    if f.n < 2:
        return []
    d_hist = hist_dist(f.hist[:-1], f.hist[1:])  # (T-1,) index i: frame i vs i+1
    s = d_hist + 2.0 * mc_diff(f.gray, 1, 2)  # (T-1,)
    pad = np.pad(s, HARD_WIN, mode="reflect" if len(s) > HARD_WIN else "edge")
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * HARD_WIN + 1)  # (T-1, 2W+1)
    # Local median excluding the centre and its neighbours.
    mask = np.ones(2 * HARD_WIN + 1, bool)
    mask[HARD_WIN - 1 : HARD_WIN + 2] = False
    med = np.median(win[:, mask], axis=1)
    thr = np.maximum(HARD_MIN * sens, HARD_RATIO * sens * med + 0.02)
    peak = s >= np.max(np.lib.stride_tricks.sliding_window_view(np.pad(s, 3, "edge"), 7), axis=1)
    idx = np.flatnonzero((s > thr) & peak)
    if len(idx) and f.n >= 3:
        # Frames two apart across the cut differ as well (a one-frame flash does not).
        i0, i1 = np.maximum(idx - 1, 0), np.minimum(idx + 2, f.n - 1)
        s2 = hist_dist(f.hist[i0], f.hist[i1]) + 2.0 * mc_pairs(f.gray, i0, i1, 2)
        idx = idx[s2 > 0.5 * s[idx]]
    out = []
    for i in idx:
        t = (i + 1) / f.fps
        out.append(Transition(t, t, t, "hard", float(s[i] / max(thr[i], 1e-6))))
    return out


def mask_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` index runs where ``mask`` is True."""
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True))


def _fades(f: Features) -> tuple[list[Transition], list[tuple[int, int]]]:
    """Runs of black frames between non-black content. A short run (a fade out/in or a dip
    to black) is one boundary at its middle; a long one (> 3 s) is a black shot bounded by
    two boundaries. Returns the transitions and the black runs (frame indices)."""
    black = f.luma_p95 < BLACK_P95
    runs = mask_runs(black)
    out = []
    for a, b in runs:
        if a == 0 or b == f.n:  # fade in at the start / out at the end: not a boundary
            continue
        # Extent: the ramps on both sides (each step clearly brighter away from the run).
        lo, hi = a, b
        while lo > 0 and a - lo < 24 and f.luma_mean[lo - 1] > f.luma_mean[lo] + 0.002:
            lo -= 1
        while hi < f.n and hi - b < 24 and f.luma_mean[hi] > f.luma_mean[hi - 1] + 0.002:
            hi += 1
        if (b - a) / f.fps > 3.0:
            out.append(Transition(a / f.fps, lo / f.fps, a / f.fps, "fade", 1.0))
            out.append(Transition(b / f.fps, b / f.fps, hi / f.fps, "fade", 1.0))
        else:
            mid = (a + b) / 2 / f.fps
            out.append(Transition(mid, lo / f.fps, hi / f.fps, "fade", 1.0))
    return out, runs


def _side_change(x: np.ndarray, edge: np.ndarray, direction: int, lag: int) -> np.ndarray:
    """Median motion-compensated change over ``lag`` frames of three windows next to frame
    ``edge`` on one side (``direction`` -1: before, +1: after), starting 0, lag/4 and lag/2
    frames away; inf where they run off the video."""
    vals = []
    for off in (0, lag // 4, lag // 2):
        near = edge + direction * off
        far = near + direction * lag
        inside = (far >= 0) & (far < len(x))
        near_c, far_c = np.clip(near, 0, len(x) - 1), np.clip(far, 0, len(x) - 1)
        vals.append(np.where(inside, mc_pairs(x, near_c, far_c, GRAD_MC_R), np.inf))
    return np.median(np.stack(vals), axis=0)


def _dissolves(f: Features, sens: float) -> list[Transition]:
    """Gradual transitions: windows ``[t-h, t+h]`` whose end frames A, B differ a lot (also
    after motion compensation: not a pan) while every frame in between is close to the
    line ``A + a (B - A)`` with ``a`` rising evenly, and the change inside the window is
    much larger than in the windows just before and after (not a continuous flow)."""
    h = GRAD_H
    if f.n < 2 * h + 1:
        return []
    x = f.thumb.reshape(f.n, -1)  # (T, D) ~16x9x3 thumbnails
    centers = np.arange(h, f.n - h)  # (M,)
    a, b = x[centers - h], x[centers + h]  # (M, D)
    delta = b - a
    dn2 = (delta**2).sum(axis=1) + 1e-9  # (M,)
    rms = np.sqrt(dn2 / x.shape[1])  # RMS difference of the end frames, [0, 1]
    hd = hist_dist(f.hist[centers - h], f.hist[centers + h])
    sd = 0.5 * (a.std(axis=1) + b.std(axis=1))  # (M,) local contrast of the end frames
    gain = np.clip(GRAD_LOWC_SD / (sd + 1e-6), 1.0, GRAD_LOWC_GAIN)  # 1 = normal contrast
    # Similar content has similar histograms: at low contrast their change is weak evidence
    # either way, so it is pulled towards the neutral GRAD_HIST0 as the gain grows.
    rms_g = rms * gain
    hd_g = hd + np.maximum(GRAD_HIST0 - hd, 0.0) * (1.0 - 1.0 / gain)
    cand = np.flatnonzero((rms_g > GRAD_MIN_DELTA * sens) & (hd_g > GRAD_MIN_HIST * sens))
    if len(cand) == 0:
        return []
    c = centers[cand]
    offs = np.arange(-h + 1, h)  # (2h-1,)
    mids = x[c[:, None] + offs[None, :]] - a[cand, None, :]  # (K, 2h-1, D)
    d = delta[cand]
    alpha = (mids * d[:, None, :]).sum(axis=2) / dn2[cand, None]  # (K, 2h-1) blend weights
    resid = mids - alpha[..., None] * d[:, None, :]
    rel = np.sqrt((resid**2).sum(axis=2) / dn2[cand, None])  # residual / |B - A|
    ramp = (offs + h) / (2 * h)  # alpha of a window inside a linear transition
    alpha_err = np.abs(alpha - ramp[None, :]).max(axis=1)  # (K,)
    max_resid = np.minimum(GRAD_MAX_RESID * np.sqrt(gain[cand]), GRAD_LOWC_RESID)
    blend = (rel.max(axis=1) < max_resid / sens) & (alpha_err < GRAD_MAX_ALPHA_ERR)
    ok = np.zeros(len(centers), bool)
    ok[cand[blend]] = True
    c = centers[ok]
    if len(c):
        # Not a camera move: motion compensation does not explain B from A ...
        raw = np.abs(f.mid[c - h] - f.mid[c + h]).mean(axis=(1, 2, 3))
        mc = mc_pairs(f.mid, c - h, c + h, GRAD_MC_R)
        # ... and the same-length windows just before and after it change much less (not a
        # continuous flow): the median of three such windows on each side, calmer side.
        side = np.minimum(
            _side_change(f.mid, c - h, -1, 2 * h), _side_change(f.mid, c + h, 1, 2 * h)
        )
        g = gain[c - h]
        contrast = mc / (np.where(np.isfinite(side), side, 0.0) + 0.01 / g)
        k = np.searchsorted(centers[cand], c)  # rows of this subset in the blend arrays
        resid = np.maximum(rel.max(axis=1)[k], 0.05)
        # The evenness of the ramp: up to GRAD_RAMP_EV0, plus log(g) at low contrast.
        even = np.log(GRAD_MAX_ALPHA_ERR / np.maximum(alpha_err[k], 0.02))
        ramp_ev = np.minimum(np.log(g) + GRAD_RAMP_EV0, even)
        score = (
            np.log(contrast / GRAD_CONTRAST0)
            + np.log(hd_g[c - h] / GRAD_HIST0)
            + 0.5 * np.log(GRAD_RESID0 / resid)
            + ramp_ev
        )
        good = (mc > GRAD_MIN_MC_RATIO * raw) & (score > GRAD_MIN_SCORE + np.log(sens))
        # At low contrast a slow pan also ramps evenly (and codec noise keeps ``mc`` near
        # ``raw``): there the change must clearly stand out from the windows beside it.
        good &= (g <= 1.0) | (contrast > GRAD_LOWC_CONTRAST)
        ok[c[~good] - h] = False
    out = []
    for s, e in mask_runs(ok):
        if e - s < 3:  # a real transition passes for several consecutive centres
            continue
        cc = centers[s:e]
        w = rms[s:e]
        mid = float((cc * w).sum() / w.sum()) + 0.5  # boundary between frames -> +0.5
        out.append(
            Transition(
                mid / f.fps,
                (cc[0] - h) / f.fps,
                (cc[-1] + h + 1) / f.fps,
                "dissolve",
                float(w.max()),
            )
        )
    return out


# Dissolves by their variance dip. Cross-fading two unrelated shots, (1 - a) A + a B,
# sums their detail incoherently: its variance follows (1 - a)^2 vA + a^2 vB, a dip well
# under the straight path between the shots' own variances, whatever moves inside either
# shot (a pan over texture, riders passing). The blend test above needs the in-between
# frames to be pixel blends of the window's end frames, which moving content breaks, and
# its contrast gates miss low-contrast pairs; this test needs neither. It fits the curve
# v(t) = (1 - a)^2 vA + a^2 vB + 2 a (1 - a) rho sA sB over a linear ramp of ``a`` and
# keeps windows where the correlation ``rho`` is low (unrelated content) in the fine band
# and not high in the coarse one, the fit is close and the two sides are steady. Content
# that dips for other reasons (a camera moving from texture to a flat area and back,
# objects leaving the view) is kept out by the checks in ``_variance_dissolves``: every
# tile must dip, and the change across the window must stand out from the change beside
# it. Blurs (a whip pan, a focus pull) have no check of their own: none was in the
# footage this was tuned on.
VAR_LENGTHS_S = (0.5, 0.75, 1.0, 1.5)  # dissolve lengths tried, seconds
VAR_SIDE = 4  # frames on each side whose median variance is the shot's own (vA, vB)
VAR_MAX_RHO = 0.3  # fitted correlation of the fine band at most this (0 = unrelated)
VAR_MAX_RHO_COARSE = 0.6  # ... and of the coarse band (layouts of two shots correlate)
VAR_MAX_ERR = 0.12  # RMS misfit of the curve / its mean
VAR_MAX_SIDE = 1.35  # max/min variance within each side (steady shots around the window)
VAR_MIN_DEPTH = 0.25  # the curve's middle is this far under the straight (rho = 1) path
VAR_TILES = (2, 3)  # rows x columns of tiles that must all dip ...
VAR_TILE_MAX_RHO, VAR_TILE_MIN_DEPTH = 0.7, 0.15  # ... each this way, all tiles but one
VAR_MIN_CONTRAST = 1.3  # change across the window / change beside it, at least this
VAR_MIN_SD = 0.012  # detail std ([0, 1] luma, ~3 grey levels) below this: noise, not content


def _band_variances(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame variance of the fine detail (luma minus a sigma-1 blur) and of the coarse
    layout (the blur minus its mean) of ``(T, h, w, 1)`` luma: ``(T,)`` each; and the fine
    variance of each of ``VAR_TILES`` tiles of the frame, ``(T, ty * tx)``."""
    g = gray[..., 0]
    t, h, w = g.shape
    # One cv2 call for the stack: frames side by side along x blur across their borders
    # only within 3 px, which a per-frame mean of the interior would hide anyway.
    blur = cv2.GaussianBlur(g.transpose(1, 0, 2).reshape(h, t * w), (0, 0), 1.0)
    blur = blur.reshape(h, t, w).transpose(1, 0, 2)
    inner = (slice(None), slice(2, h - 2), slice(2, w - 2))  # skip the seams
    detail = (g - blur)[inner]  # (T, h - 4, w - 4)
    fine = detail.reshape(t, -1).var(axis=1)
    coarse = blur[inner].reshape(t, -1).var(axis=1)
    ty, tx = VAR_TILES
    hh, ww = detail.shape[1] // ty, detail.shape[2] // tx
    tiles = rearrange(detail[:, : ty * hh, : tx * ww], "t (a y) (b x) -> t (a b) (y x)", a=ty, b=tx)
    return fine, coarse, tiles.var(axis=2)


def _blend_fit(v: np.ndarray, s: np.ndarray, d: int, rows: bool = False) -> tuple[np.ndarray, ...]:
    """Fit the cross-fade variance curve to ``v`` ``(T,)`` over windows ``[s, s + d)``
    (``rows``: ``v`` is ``(M, T)``, one series per window); returns the correlation
    ``rho``, the relative misfit, the depth under the straight path and the side
    steadiness (max/min of each side, the larger), ``(M,)`` each."""
    k = VAR_SIDE
    take = (lambda idx: np.take_along_axis(v, idx, axis=1)) if rows else (lambda idx: v[idx])
    side_a = take(s[:, None] + np.arange(-k, 0)[None])  # (M, k)
    side_b = take(s[:, None] + d + np.arange(k)[None])  # (M, k)
    va, vb = np.median(side_a, axis=1), np.median(side_b, axis=1)  # (M,)
    a = np.arange(1, d + 1) / (d + 1)  # (d,) blend weight of B in each window frame
    base = (1 - a)[None] ** 2 * va[:, None] + a[None] ** 2 * vb[:, None]  # (M, d)
    cross = 2 * (a * (1 - a))[None] * np.sqrt(va * vb)[:, None]  # (M, d)
    win = take(s[:, None] + np.arange(d)[None])  # (M, d)
    rho = ((win - base) * cross).sum(1) / ((cross**2).sum(1) + 1e-12)
    fit = base + np.clip(rho, -1, 1)[:, None] * cross
    err = np.sqrt(((win - fit) ** 2).mean(1)) / (fit.mean(1) + 1e-12)
    straight = base + cross  # rho = 1: one shot turning into the other coherently
    mid = slice(d // 3, d - d // 3)
    depth = 1 - win[:, mid].mean(1) / (straight[:, mid].mean(1) + 1e-12)
    steady = np.maximum(
        side_a.max(1) / (side_a.min(1) + 1e-12), side_b.max(1) / (side_b.min(1) + 1e-12)
    )
    return rho, err, depth, steady


def _variance_dissolves(f: Features, sens: float) -> list[Transition]:
    """Dissolves found by the variance dip of a cross-fade (see the constants above)."""
    fine, coarse, tiles = _band_variances(f.gray)
    k = VAR_SIDE
    found: list[tuple[float, int, int]] = []  # (score, start, length)
    for sec in VAR_LENGTHS_S:
        d = max(8, int(round(sec * f.fps)))
        s = np.arange(k, f.n - d - k + 1)  # window starts
        if len(s) == 0:
            continue
        rho, err, depth, steady = _blend_fit(fine, s, d)
        rho_c, _, _, _ = _blend_fit(coarse, s, d)
        sd_ok = np.sqrt(np.minimum(fine[s - 1], fine[s + d])) > VAR_MIN_SD
        ok = (
            (rho < VAR_MAX_RHO)
            & (rho_c < VAR_MAX_RHO_COARSE)
            & (err < VAR_MAX_ERR * sens)
            & (depth > VAR_MIN_DEPTH * sens)
            & (steady < VAR_MAX_SIDE)
            & sd_ok
        )
        for i in np.flatnonzero(ok):
            found.append((float(depth[i] - err[i]), int(s[i]), d))
    if not found:
        return []
    # Strongest windows first; the end frames must differ after motion compensation (not
    # one shot's slow change).
    out = []
    for score, st, d in sorted(found, reverse=True):
        if any(st < t.end_s * f.fps and t.start_s * f.fps < st + d for t in out):
            continue  # overlaps a stronger window already kept
        # The whole frame dips at once (alpha is global); content that leaves or enters
        # the view changes the detail of a few tiles only, often the other way.
        rho_t, _, depth_t, _ = _blend_fit(tiles.T, np.full(tiles.shape[1], st), d, rows=True)
        if ((np.abs(rho_t) <= VAR_TILE_MAX_RHO) & (depth_t >= VAR_TILE_MIN_DEPTH)).sum() < (
            tiles.shape[1] - 1
        ):
            continue
        i, j = np.array([st - 1]), np.array([st + d])
        raw = np.abs(f.mid[i] - f.mid[j]).mean()
        mc = mc_pairs(f.mid, i, j, GRAD_MC_R)[0]
        if mc <= GRAD_MIN_MC_RATIO * raw or raw < 1e-3:
            continue
        # ... and the change across the window stands out from same-length windows beside
        # it (a shot whose detail swells and fades as it moves changes as much there).
        side = min(_side_change(f.mid, i, -1, d + 1)[0], _side_change(f.mid, j, 1, d + 1)[0])
        if np.isfinite(side) and mc < VAR_MIN_CONTRAST * side:
            continue
        mid = (st + d / 2) / f.fps
        out.append(Transition(mid, st / f.fps, (st + d) / f.fps, "dissolve", score))
    return out


def _merge(cands: list[Transition], min_gap_s: float) -> list[Transition]:
    """Keep the strongest of boundaries closer than ``min_gap_s``; fades win over others,
    gradual transitions over hard cuts inside their span."""
    prio = {"fade": 2, "dissolve": 1, "hard": 0}
    keep: list[Transition] = []
    for c in sorted(cands, key=lambda t: (-prio[t.kind], -t.score)):
        if any(
            abs(c.time_s - k.time_s) < min_gap_s
            or (k.kind != "hard" and k.start_s - 1e-6 <= c.time_s <= k.end_s + 1e-6)
            for k in keep
        ):
            continue
        keep.append(c)
    return sorted(keep, key=lambda t: t.time_s)


def analyse_frames(frames: np.ndarray, fps: float, threshold: float = 0.0) -> list[Transition]:
    """The worldmill detector on decoded ``(T, H, W, 3)`` uint8 RGB frames (any small size,
    ~64x36 is plenty). ``threshold`` scales all thresholds (0 or 1 = default; > 1 fewer,
    < 1 more boundaries)."""
    sens = threshold if threshold > 0 else 1.0
    f = features(frames, fps)
    fades, runs = _fades(f)
    black = np.zeros(f.n, bool)
    for a, b in runs:
        black[a:b] = True
    cands = list(fades)
    for t in _hard_cuts(f, sens) + _dissolves(f, sens) + _variance_dissolves(f, sens):
        i = int(round(t.time_s * fps))
        if black[max(0, i - 1) : i + 1].any():  # cuts into/out of black belong to fades
            continue
        cands.append(t)
    return _merge(cands, MIN_GAP_S)
