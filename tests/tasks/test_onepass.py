"""tasks/onepass.py: one decode feeds detection, the encoder and the per-clip stages."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from worldmill.config import SplitConfig, TranscodeConfig
from worldmill.media import InfraError, MediaError, decode_frames, probe
from worldmill.records import OK, Clip, Video
from worldmill.synth import write_video
from worldmill.tasks import onepass
from worldmill.tasks.split import split_video
from worldmill.tasks.split_backends import decode_analysis
from worldmill.tasks.transcode import transcode_clips

FPS = 24


def _video(tmp_path, levels=(40, 200, 110), n=60) -> Video:
    """Flat noisy shots of ``n`` frames each, hard cuts between them (160x90, 24 fps)."""
    rng = np.random.default_rng(3)
    frames = np.concatenate(
        [
            np.full((n, 90, 160, 3), v, np.uint8)
            + rng.integers(0, 9, (n, 90, 160, 3), dtype=np.uint8)
            for v in levels
        ]
    )
    src = write_video(tmp_path / "src 'a'.mp4", frames, FPS)
    i = probe(str(src))
    return Video(
        "vid",
        str(src),
        "s",
        status=OK,
        duration_s=i.duration_s,
        width=i.width,
        height=i.height,
        fps=i.fps,
        num_frames=i.num_frames,
    )


def test_one_decode_splits_cuts_and_feeds_stages(tmp_path, monkeypatch):
    v = _video(tmp_path)
    split, tc = SplitConfig(min_clip_s=1.0), TranscodeConfig(height=64)
    out = tmp_path / "clips"
    assert onepass.eligible(v, split, tc, str(out))
    with onepass.decode_once(v, split, tc, str(out)) as dec:
        # The detector sees the frames its own decode gives (same count, same raster).
        ref, _ = decode_analysis(v.path, split.analysis_width)
        assert dec.analysis.shape == ref.shape == (180, 36, 64, 3)
        assert np.abs(dec.analysis.astype(int) - ref).mean() < 2.0
        clips = split_video(v, split, (dec.analysis, dec.fps))
        assert [(c.start_s, c.end_s) for c in clips] == [(0, 2.5), (2.5, 5.0), (5.0, 7.5)]
        assert (dec.spool.width, dec.spool.height, dec.spool.n_frames) == (114, 64, 180)
        transcode_clips(v, clips, str(out), tc, dec.spool)
        # Frame-exact clips from the spool, with the right content in each.
        assert [c.num_frames for c in clips] == [60, 60, 60]
        assert [probe(c.clip_uri).num_frames for c in clips] == [60, 60, 60]
        # Cut times between frames (a long shot split in equal pieces): still counted right.
        odd = [Clip("vid_0100", "vid", 0.0, 1.3521), Clip("vid_0101", "vid", 1.3521, 4.0187)]
        transcode_clips(v, odd, str(tmp_path / "odd"), tc, dec.spool)
        assert [c.num_frames for c in odd] == [probe(c.clip_uri).num_frames for c in odd]
        assert all((c.width, c.height) == (114, 64) for c in clips)
        means = [decode_frames(c.clip_uri, 32, 18).mean() for c in clips]
        assert np.allclose(means, [44, 204, 114], atol=6)
        # Stages read the already-decoded 4-fps frames: no clip file is decoded again.
        monkeypatch.setattr(
            "worldmill.media.decode_frames", lambda *a, **k: pytest.fail("clip decoded")
        )
        for c, level in zip(clips, (44, 204, 114), strict=True):
            view = dec.clip_view(c)
            f320 = view.frames(width=320, sample_fps=4.0)
            assert f320.shape == (10, 180, 320, 3) and abs(f320.mean() - level) < 6
            assert view.frames(width=160, sample_fps=4.0).shape == (10, 90, 160, 3)
            assert view.frames(width=160, sample_fps=4.0, gray=True).shape == (10, 90, 160)
            assert view.keyframes(3, 320).shape == (3, 180, 320, 3)
        tmp = dec.spool.path.parent
        assert tmp.is_dir()
    assert not tmp.exists()  # raw files removed on exit
    assert sorted(p.name for p in out.iterdir()) == [f"vid_000{i}.mp4" for i in range(3)]


def test_not_eligible_falls_back_to_two_decodes(tmp_path, monkeypatch):
    v = _video(tmp_path, levels=(40,), n=24)
    split, tc = SplitConfig(), TranscodeConfig(height=64)
    assert not onepass.eligible(v, SplitConfig(method="fixed"), tc, str(tmp_path))
    assert not onepass.eligible(v, split, TranscodeConfig(fps=12), str(tmp_path))
    monkeypatch.setattr(onepass, "SPOOL_MAX_BYTES", 1000)  # the spool would be too big
    assert not onepass.eligible(v, split, tc, str(tmp_path))
    monkeypatch.setattr(onepass, "SPOOL_MAX_BYTES", 1 << 40)
    monkeypatch.setenv("WORLDMILL_ONEPASS", "0")
    assert not onepass.eligible(v, split, tc, str(tmp_path))


def test_killed_decoder_is_infrastructure_and_bad_file_is_media(tmp_path, monkeypatch):
    from tests.tasks.test_transcode import _fake_ffmpeg

    v = _video(tmp_path, levels=(40,), n=24)
    split, tc = SplitConfig(), TranscodeConfig(height=64)
    out = tmp_path / "clips"
    real = onepass.ffmpeg_bin()
    monkeypatch.setattr(onepass, "ffmpeg_bin", lambda: _fake_ffmpeg(tmp_path, "kill -KILL $$"))
    with pytest.raises(InfraError, match="killed by signal 9"):
        with onepass.decode_once(v, split, tc, str(out)):
            pass
    assert list(out.iterdir()) == []  # no temp files left
    monkeypatch.setattr(onepass, "ffmpeg_bin", lambda: real)
    open(v.path, "wb").write(b"\x00" * 1000)
    with pytest.raises(MediaError, match="no frames decoded"):
        with onepass.decode_once(v, split, tc, str(out)):
            pass


def test_stages_before_the_encode_and_only_kept_clips_encoded(tmp_path):
    """The one-decode path runs the stages on views of clips that have no file yet, then
    encodes only the clips still kept: a rejected clip between two kept ones costs no
    encode, and the kept ones are still frame-exact with their own content."""
    v = _video(tmp_path, levels=(40, 200, 110, 160))
    split, tc = SplitConfig(min_clip_s=1.0), TranscodeConfig(height=64)
    out = tmp_path / "clips"
    with onepass.decode_once(v, split, tc, str(out)) as dec:
        clips = split_video(v, split, (dec.analysis, dec.fps))
        assert len(clips) == 4 and not any(c.clip_uri for c in clips)
        view = dec.clip_view(clips[1])
        assert (view.width, view.height, view.fps) == (114, 64, FPS)
        assert abs(view.frames(width=320, sample_fps=4.0).mean() - 204) < 6
        view.clear()  # the decoded frames handed in survive a clear (no decode needed)
        assert view.frames(width=320, sample_fps=4.0).shape == (10, 180, 320, 3)
        # A size/rate nobody handed in: decoded from the clip's span of the source.
        every = view.frames(width=32, sample_fps=None)
        assert every.shape == (60, 18, 32, 3) and abs(every.mean() - 204) < 6
        clips[1].reject("motion")
        clips[3].reject("text")
        transcode_clips(v, clips, str(out), tc, dec.spool)
    assert [bool(c.clip_uri) for c in clips] == [True, False, True, False]
    assert sorted(p.name for p in out.iterdir()) == ["vid_0000.mp4", "vid_0002.mp4"]
    kept = [clips[0], clips[2]]
    assert [c.num_frames for c in kept] == [probe(c.clip_uri).num_frames for c in kept] == [60, 60]
    means = [decode_frames(c.clip_uri, 32, 18).mean() for c in kept]
    assert np.allclose(means, [44, 114], atol=6)
    # Every frame of a clip is its own shot's (no frame of the skipped clip leaks in).
    for c, level in zip(kept, (44, 114), strict=True):
        per_frame = decode_frames(c.clip_uri, 32, 18).reshape(60, -1).mean(1)
        assert np.all(np.abs(per_frame - level) < 8)


def test_running_decodes_reserve_their_spool_space(tmp_path, monkeypatch):
    """A decode reserves its raw files' size under OUT/clips/.spools while it runs; what it
    has yet to write is not free for another video's spool (two concurrent spools must not
    each take half the disk); the reservation goes when the decode ends, and a killed
    run's is removed by the next run's clean-up."""
    from worldmill.tasks.transcode import remove_stale_temp

    v = _video(tmp_path)
    split, tc = SplitConfig(min_clip_s=1.0), TranscodeConfig(height=64)
    clips = tmp_path / "out" / "clips"
    work = str(clips / v.video_id)
    need = onepass.spool_bytes(v, tc)
    assert need > 0 and onepass.reserved_bytes(work) == 0
    with onepass.decode_once(v, split, tc, work):
        (res,) = (clips / ".spools").iterdir()
        assert int(res.read_text().split("\n")[0]) == need
        assert 0 <= onepass.reserved_bytes(work) < need  # the files are written by now
    assert onepass.reserved_bytes(work) == 0 and not any((clips / ".spools").iterdir())

    # Another worker's decode that has written nothing yet reserves all of it.
    other = tmp_path / "out" / "clips" / "other" / ".seg_other_dec_1"
    other.mkdir(parents=True)
    (clips / ".spools" / "other_dec_1").write_text(f"{10 * need}\n{other}")
    assert onepass.reserved_bytes(work) == 10 * need

    def disk_with(free):  # a disk with ``free`` bytes free, whatever else writes meanwhile
        monkeypatch.setattr(onepass.shutil, "disk_usage", lambda _p: SimpleNamespace(free=free))

    disk_with(11 * need)  # free, less the other spool's 10x: room for 1x, not 2x
    assert not onepass.eligible(v, split, tc, work)
    disk_with(13 * need)  # 3x left: room for twice this spool
    assert onepass.eligible(v, split, tc, work)
    monkeypatch.undo()
    assert remove_stale_temp(str(clips)) == 2  # the segment dir and the reservation
    assert not any((clips / ".spools").iterdir())
