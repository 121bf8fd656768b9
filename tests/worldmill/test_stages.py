"""The stage contract (worldmill/stages.py): params checked against signatures when stages
load, numpy values coerced to JSON types, setup() once per worker process, run_batch."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.tasks._stage_clips import camera, encode, photo
from worldmill.config import ConfigError, StageSpec
from worldmill.records import Clip, Video
from worldmill.stages import coerce_clip, load_stage, load_stages, run_stages_batch
from worldmill.tasks.process_video import read_staging, write_staging

PLUGIN = '''
"""A plug-in with setup-once state, a batch hook and numpy outputs."""
import numpy as np

SETUPS = []  # one entry per setup() call in this process


def setup(model_name: str = "tiny"):
    SETUPS.append(model_name)
    return {"model": model_name, "weights": np.arange(3, dtype=np.float32)}


def run_batch(clips, views, *, state, threshold: float = 0.5):
    assert isinstance(state["weights"], np.ndarray)
    frames = [v.frames(width=32, sample_fps=2.0) for v in views]  # one decode per clip
    for c, f in zip(clips, frames):
        c.extra["batch_size"] = np.int64(len(clips))
        c.extra["mean_level"] = np.float32(f.mean() / 255.0)
        c.extra["bright"] = np.bool_(f.mean() / 255.0 > threshold)
        c.extra["model"] = state["model"]
        c.motion_score = np.float32(0.25)
    return clips
'''

PER_CLIP = """
import numpy as np


def run(clip, view, *, gain: float = 1.0, required_knob: int):
    clip.extra["np_float"] = np.float32(0.5) * gain
    clip.extra["np_int"] = np.int64(required_knob)
    clip.extra["np_vec"] = np.arange(3)
    clip.extra["opaque"] = object()  # no JSON form: dropped and recorded
    return clip
"""


@pytest.fixture()
def plugins(tmp_path, monkeypatch):
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "wm_batch_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (d / "wm_clip_plugin.py").write_text(textwrap.dedent(PER_CLIP))
    monkeypatch.syspath_prepend(str(d))
    yield d
    for m in ("wm_batch_plugin", "wm_clip_plugin"):
        sys.modules.pop(m, None)


@pytest.fixture(scope="module")
def two_clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("stage_clips")
    img = photo("astronaut", 360)
    a = encode(d / "a.mp4", camera(img, 24, 10, 10, vx=2.0))
    b = encode(d / "b.mp4", camera(img, 24, 200, 60, vy=1.0))
    return [a, b]


def _fresh(two_clips):
    return [Clip(**{**c.to_dict(), "extra": {}, "errors": {}}) for c, _ in two_clips], [
        v for _, v in two_clips
    ]


def test_unknown_param_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"stages\.motion\.params\.min_scroe") as e:
        load_stage(StageSpec(name="motion", params={"min_scroe": 0.5}))
    assert "min_score" in str(e.value)  # lists what run() accepts
    assert load_stage(StageSpec(name="motion", params={"min_score": 0.5})).run_params == {
        "min_score": 0.5
    }
    # **params in run (the visual embedding stage) accepts anything
    load_stage(StageSpec(name="visual_embed", params={"anything": 1}))


def test_required_param_missing_is_a_config_error(plugins):
    with pytest.raises(ConfigError, match=r"stages\.knobby\.params\.required_knob"):
        load_stage(StageSpec(name="knobby", module="wm_clip_plugin"))


def test_unknown_param_exits_2_from_the_cli(small_corpus, tmp_path):
    r = run_cli(
        "curate",
        str(small_corpus),
        "--out",
        str(tmp_path / "o"),
        "--set",
        "stages.quality.params={min_scroe: 0.5}",
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "stages.quality.params.min_scroe" in r.stderr
    assert not (tmp_path / "o" / "lancedb").exists()  # failed before any work


def test_numpy_extras_coerced_and_staging_never_crashes(plugins, two_clips, tmp_path):
    stage = load_stage(
        StageSpec(name="knobby", module="wm_clip_plugin", params={"required_knob": 7})
    )
    (clip, view) = two_clips[0]
    c = Clip(**{**clip.to_dict(), "extra": {}, "errors": {}})
    c = stage(c, view)
    assert type(c.extra["np_float"]) is float and c.extra["np_float"] == 0.5
    assert type(c.extra["np_int"]) is int and c.extra["np_int"] == 7
    assert c.extra["np_vec"] == [0, 1, 2]
    assert "opaque" not in c.extra
    assert "opaque" in c.errors["knobby"] and c.reject_reason == "knobby"
    # The staging file (what the flow commits) round-trips, also for numpy left on a clip
    # by code outside any stage.
    c.quality_score = np.float64(0.75)
    c.embedding = np.ones(4, np.float32)
    v = Video(video_id="v", path="/x.mp4", sha256="0" * 64, width=np.int64(320))
    path = write_staging(str(tmp_path), v, [c])
    v2, (c2,) = read_staging(path)
    assert v2.width == 320 and c2.quality_score == 0.75 and c2.embedding == [1.0] * 4
    assert c2.extra["np_int"] == 7
    json.loads(open(path).read())  # plain JSON


def test_coerce_clip_nested_values():
    c = Clip(clip_id="x", video_id="v", start_s=0, end_s=1)
    c.extra.update(a={"k": np.float32(1.5)}, b=(np.int32(2), np.bool_(True)))
    coerce_clip(c, "s")
    assert c.extra == {"a": {"k": 1.5}, "b": [2, True]} and not c.errors


def test_setup_once_per_process_and_run_batch(plugins, two_clips):
    import wm_batch_plugin

    spec = StageSpec(name="batchy", module="wm_batch_plugin", params={"model_name": "m1"})
    for _ in range(3):  # three videos, each loads its stages (as process_video does)
        (stage,) = load_stages([spec])
        assert stage.batched and stage.setup_params == {"model_name": "m1"}
        assert stage.run_params == {}  # model_name is setup's, not run_batch's
        clips, views = _fresh(two_clips)
        out = run_stages_batch(clips, views, [stage])
        assert [c.extra["batch_size"] for c in out] == [2, 2]  # one call with both clips
        assert all(c.extra["model"] == "m1" and not c.errors for c in out)
        assert all(type(c.extra["mean_level"]) is float for c in out)
        assert all(type(c.extra["bright"]) is bool for c in out)
        assert all(type(c.motion_score) is float for c in out)
    assert wm_batch_plugin.SETUPS == ["m1"]  # set up once for the whole process


def test_batch_stage_between_per_clip_stages(plugins, two_clips):
    stages = load_stages(
        [
            StageSpec(name="limits"),
            StageSpec(name="batchy", module="wm_batch_plugin", params={"threshold": 2.0}),
            StageSpec(name="knobby", module="wm_clip_plugin", params={"required_knob": 1}),
        ]
    )
    clips, views = _fresh(two_clips)
    out = run_stages_batch(clips, views, stages)
    assert [c.clip_id for c in out] == [c.clip_id for c, _ in two_clips]
    for c in out:
        assert c.extra["bright"] is False and c.extra["np_int"] == 1
        assert "batchy" not in c.errors


def test_failing_batch_is_recorded_on_every_clip(plugins, two_clips, tmp_path, monkeypatch):
    bad = tmp_path / "plugins" / "wm_bad_batch.py"
    bad.write_text("def run_batch(clips, views):\n    return clips[:1]\n")
    (stage,) = load_stages([StageSpec(name="short", module="wm_bad_batch")])
    clips, views = _fresh(two_clips)
    out = stage.run_batch(clips, views)
    assert all(not c.kept and c.reject_reason == "short" for c in out)
    assert all("1 items for 2 clips" in c.errors["short"] for c in out)
    sys.modules.pop("wm_bad_batch", None)


def test_setup_without_state_argument_is_a_config_error(plugins):
    (plugins / "wm_no_state.py").write_text(
        "def setup():\n    return 1\n\ndef run(clip, view):\n    return clip\n"
    )
    with pytest.raises(ConfigError, match="state"):
        load_stage(StageSpec(name="nostate", module="wm_no_state"))
    sys.modules.pop("wm_no_state", None)


def test_threads_give_the_same_clips_as_one_at_a_time(two_clips):
    """The built-in stages on several threads (a video alone at a run's tail) score every
    clip exactly as one at a time: clips are independent and the detectors thread-safe."""
    names = ("motion", "quality", "text", "visual_embed")
    stages = load_stages(
        [
            *(StageSpec(name=n) for n in names),
            StageSpec(name="caption", params={"only_kept": False}),
        ]
    )

    def run(threads):
        clips, views = _fresh(two_clips)
        out = run_stages_batch(clips, views, stages, threads=threads)
        for c in out:
            c.extra.pop("stage_seconds")  # wall time, the only thing that may differ
        return [c.to_dict() for c in out]

    one = run(1)
    assert all(c["caption"] and "camera_motion" in c["extra"] for c in one)
    assert run(2) == one
