"""Per-clip filter stages (limits, motion, quality, text) on real encoded clips."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from tests.tasks._stage_clips import (
    FPS,
    H,
    W,
    camera,
    encode,
    fresh,
    photo,
    put_text,
    still_with_noise,
)
from worldmill.config import StageSpec
from worldmill.media import ClipView
from worldmill.records import Clip
from worldmill.stages import BUILTIN, load_stage, run_stages
from worldmill.tasks import (
    caption,
    embed,
    filter_limits,
    filter_motion,
    filter_quality,
    filter_text,
)

N = int(3 * FPS)  # 3 s clips


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, tuple[Clip, ClipView]]:
    d = tmp_path_factory.mktemp("filter_clips")
    astro, coffee = photo("astronaut"), photo("coffee")
    slow_v = 0.02 * W / FPS  # Ken-Burns pan: 2 % of the frame width per second
    fast_v = 0.15 * W / FPS
    pan = camera(astro, N, 250, 300, vx=-slow_v)
    blurry = [cv2.GaussianBlur(f, (0, 0), 3.0) for f in camera(coffee, N, 100, 150, vx=fast_v)]
    dark_blurry = (np.stack(blurry) * 0.18).astype(np.uint8)  # mean luma ~0.07, blur sigma 3 px
    specs = {
        "still": still_with_noise(coffee[150:], N, sigma=4.0),
        "slow_pan": pan,
        "fast_pan": camera(astro, N, 100, 250, vx=fast_v),
        "text": put_text(camera(coffee, N, 100, 150, vx=fast_v), "SALE"),
        "dark_blurry": dark_blurry,
    }
    return {name: encode(d / f"{name}.mp4", frames) for name, frames in specs.items()}


def test_builtin_names_resolve_to_these_modules():
    # Spelled out, not read from BUILTIN: a wrong or missing entry there must fail here.
    expected = {
        "limits": filter_limits.run,
        "motion": filter_motion.run,
        "quality": filter_quality.run,
        "text": filter_text.run,
        "caption": caption.run,
        "visual_embed": embed.run,
    }
    assert set(BUILTIN) == set(expected)
    for name, fn in expected.items():
        assert load_stage(StageSpec(name=name)).fn is fn, name


# ----------------------------------------------------------------------------- limits


def _meta_clip(start: float, end: float, **extra) -> Clip:
    return Clip("c_0000", "c", start, end, width=456, height=256, extra=dict(extra))


@pytest.mark.parametrize(
    ("start", "end", "extra", "reason"),
    [
        (0.0, 1.0, {}, "duration"),  # too short
        (0.0, 300.0, {}, "duration"),  # too long
        (10.0, 15.0, {"source_width": 200, "source_height": 112}, "resolution"),
        (10.0, 15.0, {"source_width": 1920, "source_height": 1080}, ""),
        (10.0, 15.0, {"source_width": 720, "source_height": 1280}, ""),  # portrait phone video
        (10.0, 15.0, {}, ""),  # falls back to the transcoded size
    ],
)
def test_limits(start, end, extra, reason):
    clip = filter_limits.run(_meta_clip(start, end, **extra), ClipView("unused.mp4"))
    assert clip.reject_reason == reason
    assert clip.kept == (reason == "")


def test_limits_params_and_unknown_size():
    clip = filter_limits.run(
        _meta_clip(0, 5, source_width=1280, source_height=720), ClipView("x"), min_height=1080
    )
    assert clip.reject_reason == "resolution"
    clip = Clip("c_0001", "c", 0, 500)  # size unknown, upper limit off
    assert filter_limits.run(clip, ClipView("x"), max_s=0).kept


# ----------------------------------------------------------------------------- motion


def test_static_clip_with_noise_is_rejected_by_motion(clips):
    clip, view = fresh(*clips["still"])
    filter_motion.run(clip, view)
    assert clip.motion_score < 0.002
    assert (clip.kept, clip.reject_reason) == (False, "motion")


def test_slow_ken_burns_pan_is_kept_and_measured_in_widths_per_second(clips):
    clip, view = fresh(*clips["slow_pan"])
    filter_motion.run(clip, view)
    assert clip.kept, clip.motion_score
    assert clip.motion_score == pytest.approx(0.02, rel=0.25)
    fast, fview = fresh(*clips["fast_pan"])
    filter_motion.run(fast, fview)
    assert fast.motion_score == pytest.approx(0.15, rel=0.2)
    # the threshold is a parameter
    assert filter_motion.run(*fresh(*clips["slow_pan"]), min_score=0.05).reject_reason == "motion"


def test_flow_of_a_single_frame_is_zero():
    flow = filter_motion.flow_fields(np.zeros((1, 90, 160), np.uint8))
    assert flow.shape == (0, 90, 160, 2)
    assert filter_motion.motion_score_from_flow(flow, 4.0) == 0.0


# ----------------------------------------------------------------------------- quality


def test_dark_blurry_clip_is_rejected_by_quality(clips):
    clip, view = fresh(*clips["dark_blurry"])
    filter_quality.run(clip, view)
    assert (clip.kept, clip.reject_reason) == (False, "quality")
    assert clip.quality_score < 0.2
    assert clip.extra["brightness"] < 0.15
    assert clip.extra["sharpness"] < 0.5
    assert clip.extra["quality_worst"] in ("sharpness", "exposure")


@pytest.mark.parametrize("name", ["fast_pan", "text", "still"])
def test_sharp_normal_clips_are_kept_by_quality(clips, name):
    clip, view = fresh(*clips[name])
    filter_quality.run(clip, view)
    assert clip.kept and clip.quality_score > 0.6, clip.extra
    assert 0.25 < clip.extra["brightness"] < 0.75


def test_quality_subscores_are_monotonic_in_blur_and_exposure():
    gray = cv2.cvtColor(photo("astronaut", 360)[:, :320], cv2.COLOR_RGB2GRAY)[None]  # (1, 360, 320)
    blurs = [filter_quality.score_quality(cv2.GaussianBlur(gray[0], (0, 0), s)[None] if s else gray)
             for s in (0, 1, 2, 4)]  # fmt: skip
    sharp = [b["sharpness"] for b in blurs]
    assert sharp[0] == 1.0 and sharp[3] == 0.0 and sharp == sorted(sharp, reverse=True)
    dark = filter_quality.score_quality((gray * 0.05).astype(np.uint8))
    bright = filter_quality.score_quality(np.clip(gray.astype(int) + 200, 0, 255).astype(np.uint8))
    assert dark["exposure"] == 0.0 and bright["exposure"] < 0.5
    assert dark["quality_score"] == 0.0 and bright["quality_score"] < 0.35
    flat = filter_quality.score_quality(np.full((2, 90, 160), 128, np.uint8))
    assert flat["contrast"] == 0.0 and flat["quality_worst"] in ("contrast", "sharpness")


# ----------------------------------------------------------------------------- text


def test_text_overlay_is_rejected_with_recognised_text(clips):
    clip, view = fresh(*clips["text"])
    filter_text.run(clip, view)
    assert (clip.kept, clip.reject_reason) == (False, "text")
    assert clip.text_score > 0.05
    assert "SALE" in str(clip.extra["ocr_text"]).upper()
    assert clip.extra["n_text_boxes"] >= 1


def test_text_stage_skips_a_clip_an_earlier_stage_rejected(clips):
    """OCR cannot change a rejected clip's verdict: by default it is not read (score stays
    NaN, the first reason stays); ``only_kept=False`` reads it all the same."""
    clip, view = fresh(*clips["text"])
    clip.reject("motion")
    filter_text.run(clip, view)
    assert clip.reject_reason == "motion" and math.isnan(clip.text_score)
    assert "ocr_text" not in clip.extra
    filter_text.run(clip, view, only_kept=False)
    assert clip.reject_reason == "motion" and clip.text_score > 0.05
    assert "SALE" in str(clip.extra["ocr_text"]).upper()


@pytest.mark.parametrize("name", ["fast_pan", "slow_pan"])
def test_clip_without_text_is_kept_by_text(clips, name):
    clip, view = fresh(*clips[name])
    filter_text.run(clip, view)
    assert clip.kept and clip.text_score < 0.02, clip.extra
    assert filter_text.get_ocr() is filter_text.get_ocr()  # one cached engine per process


def test_edge_precheck_skips_flat_frames():
    flat = np.full((2, H, W, 3), 90, np.uint8)
    assert filter_text.edge_density(flat[0]) == 0.0
    assert filter_text.ocr_frames(flat) == (0.0, [], 0)


# ----------------------------------------------------------------------------- errors


def test_crashing_stage_on_corrupt_clip_records_error(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    for name in ("motion", "quality", "text", "caption"):
        stage = load_stage(StageSpec(name=name))
        clip = Clip("bad_0000", "bad", 0.0, 3.0, clip_uri=str(bad), width=W, height=H)
        out = stage(clip, ClipView(str(bad), 24.0, W, H))  # must not raise
        assert (out.kept, out.reject_reason) == (False, name)
        assert "MediaError" in out.errors[name]
        assert out.extra["stage_seconds"] >= 0.0


def test_all_default_stages_on_a_good_clip(clips):
    clip, view = fresh(*clips["fast_pan"])
    stages = [
        load_stage(StageSpec(name=n)) for n in ("limits", "motion", "quality", "text", "caption")
    ]
    clip = run_stages(clip, view, stages)
    assert clip.kept and not clip.errors, (clip.reject_reason, clip.errors)
    assert np.isfinite([clip.motion_score, clip.quality_score, clip.text_score]).all()
    assert clip.caption.startswith("A ") and "pan to the right" in clip.caption
