"""Visual descriptor on real encoded videos + the shipped text model, offline."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tasks._dedup_corpus import TRANSFORMS
from worldmill.config import EmbedConfig
from worldmill.media import ClipView, MediaError, probe
from worldmill.records import Clip
from worldmill.tasks import embed


def _view(path) -> ClipView:
    info = probe(str(path))
    return ClipView(str(path), info.fps, info.width, info.height)


@pytest.fixture(scope="module")
def descriptors(corpus_descriptors) -> dict[str, np.ndarray]:
    return corpus_descriptors  # tests/tasks/conftest.py: encoded and described once


def test_descriptor_shape_and_norm(descriptors):
    for v in descriptors.values():
        assert v.shape == (embed.DESCRIPTOR_DIM,) == (256,)
        assert v.dtype == np.float32
        assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_descriptor_robust_to_transforms(descriptors, transform):
    for base in ("tex0", "shp0", "tex3"):
        sim = float(descriptors[base] @ descriptors[f"{base}.{transform}"])
        assert sim > 0.95, (base, transform, sim)  # within the default eps = 0.05


def test_descriptor_discriminates_shots(descriptors):
    bases = [n for n in descriptors if "." not in n]
    for i, a in enumerate(bases):
        for b in bases[i + 1 :]:
            sim = float(descriptors[a] @ descriptors[b])
            assert sim < 0.8, (a, b, sim)


def test_descriptor_from_few_frames_and_flat_frames():
    one = np.full((1, 36, 64, 3), 128, np.uint8)  # a single flat grey frame: no structure
    v = embed.descriptor_from_frames(one)
    assert v.shape == (256,) and np.isfinite(v).all()
    with pytest.raises(ValueError):
        embed.descriptor_from_frames(np.zeros((0, 8, 8, 3), np.uint8))


def test_stage_run_sets_visual_embedding(tmp_path):
    from worldmill.synth import write_video

    frames = np.random.default_rng(0).integers(0, 255, (12, 64, 96, 3), dtype=np.uint8)
    path = write_video(tmp_path / "c.mp4", frames, fps=12)
    clip = Clip(clip_id="v_0000", video_id="v", start_s=0.0, end_s=1.0, clip_uri=str(path))
    out = embed.run(clip, _view(path))
    assert out is clip and clip.kept
    assert isinstance(clip.visual_embedding, list) and len(clip.visual_embedding) == 256

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(MediaError):
        embed.run(Clip("v_0001", "v", 0, 1), ClipView(str(bad), 12, 96, 64))


def test_text_embeddings_offline_semantics(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = [
        "a dog runs across a grassy park",
        "a puppy is running on the grass in a park",
        "the stock market fell sharply on tuesday",
        "",
    ]
    e = embed.embed_texts(texts, EmbedConfig(batch_size=2))
    assert e.shape == (4, embed.TEXT_DIM) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.3
    assert float(e[0] @ e[1]) > 0.6
    assert embed.text_embedder() is embed.text_embedder("")  # cached
    assert embed.embed_texts([], EmbedConfig()).shape == (0, embed.TEXT_DIM)


def test_text_embedder_missing_path_is_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        embed.text_embedder(str(tmp_path / "nope"))
