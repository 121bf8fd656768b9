"""Caption embeddings without torch: a BERT sentence-transformers model run in numpy.

Why: loading ``sentence_transformers`` (torch, transformers, scikit-learn) costs about 7 CPU-s
in every ``curate`` process, more than embedding a night's captions; the default text model
(all-MiniLM-L6-v2: 6 layers, 384 wide) runs in numpy in milliseconds per caption. This
module reads the same local folder (``model.safetensors``, ``tokenizer.json``, the
sentence-transformers module configs), tokenizes with Hugging Face ``tokenizers`` and
computes the same embedding: BERT encoder -> mean over the real tokens -> L2 norm.
Its output matches ``SentenceTransformer.encode`` to float32 rounding (tested).

:func:`load` returns None for any folder it does not fully understand (another
architecture, another pooling, extra modules): the caller then uses sentence-transformers.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

# The module stacks this encoder reproduces, exactly (modules.json "type" entries).
_MODULES = ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling"]
_NORMALIZE = "sentence_transformers.models.Normalize"


@dataclass
class BertConfig:
    hidden: int  # model width (384 for MiniLM-L6)
    heads: int  # attention heads (12)
    layers: int  # encoder layers (6)
    eps: float  # LayerNorm epsilon (1e-12)
    max_len: int  # tokens per text, from sentence_bert_config.json (longer texts truncated)
    normalize: bool  # a Normalize module follows the pooling: unit-length outputs


def _read(path: str) -> dict | list | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _config(folder: str) -> BertConfig | None:
    """The folder's config when it is a BERT encoder + mean pooling (+ Normalize), else
    None."""
    cfg = _read(os.path.join(folder, "config.json"))
    modules = _read(os.path.join(folder, "modules.json"))
    st = _read(os.path.join(folder, "sentence_bert_config.json")) or {}
    if not isinstance(cfg, dict) or not isinstance(modules, list):
        return None
    types = [m.get("type") for m in modules if isinstance(m, dict)]
    if types[:2] != _MODULES or types[2:] not in ([], [_NORMALIZE]):
        return None  # another stack: pooling we do not compute, or extra modules
    pool = _read(os.path.join(folder, modules[1].get("path", ""), "config.json"))
    pool_modes = {k: v for k, v in (pool or {}).items() if k.startswith("pooling_mode")}
    if not pool or [k for k, v in pool_modes.items() if v] != ["pooling_mode_mean_tokens"]:
        return None
    plain_bert = (
        cfg.get("model_type") == "bert"
        and cfg.get("hidden_act") == "gelu"
        and cfg.get("position_embedding_type", "absolute") == "absolute"
    )
    if not plain_bert or not os.path.exists(os.path.join(folder, "tokenizer.json")):
        return None
    return BertConfig(
        hidden=int(cfg["hidden_size"]),
        heads=int(cfg["num_attention_heads"]),
        layers=int(cfg["num_hidden_layers"]),
        eps=float(cfg.get("layer_norm_eps", 1e-12)),
        max_len=int(st.get("max_seq_length") or cfg.get("max_position_embeddings", 512)),
        normalize=types[2:] == [_NORMALIZE],
    )


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b  # float32 in and out


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))  # exact GELU, as BERT's "gelu"


class BertSentenceEncoder:
    """A BERT sentence-transformers model (encoder + mean pooling [+ Normalize]) in numpy."""

    def __init__(self, folder: str, cfg: BertConfig) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.cfg = cfg
        prefix = "bert."  # some checkpoints nest the encoder under the task model's name
        w = load_file(os.path.join(folder, "model.safetensors"))
        self.w = {k.removeprefix(prefix): v.astype(np.float32) for k, v in w.items()}
        # Dense weights stored (out, in): kept transposed and contiguous for one BLAS sgemm
        # per layer over all tokens of a batch.
        for k in [k for k in self.w if (k.startswith("encoder.") and k.endswith("dense.weight"))
                  or k.endswith(("query.weight", "key.weight", "value.weight"))]:  # fmt: skip
            self.w[k] = np.ascontiguousarray(self.w[k].T)
        self.tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        self.tok.enable_truncation(max_length=cfg.max_len)
        self.tok.no_padding()

    def get_embedding_dimension(self) -> int:
        return self.cfg.hidden

    def encode(self, texts: list[str], batch_size: int = 64, **_: object) -> np.ndarray:
        """``texts`` -> ``(N, hidden)`` float32 embeddings (unit length with Normalize).
        Keyword arguments of ``SentenceTransformer.encode`` are accepted and ignored: this
        always returns normalized numpy arrays when the model normalizes."""
        from threadpoolctl import threadpool_limits

        if not texts:
            return np.zeros((0, self.cfg.hidden), np.float32)
        # Batches of similar lengths pad less (as sentence-transformers sorts them too).
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.cfg.hidden), np.float32)
        # One BLAS thread: the matrices are small, and more threads only spin (2x the CPU
        # for the same wall time, measured).
        with threadpool_limits(1, user_api="blas"):
            for i in range(0, len(texts), batch_size):
                idx = order[i : i + batch_size]
                out[idx] = self._batch([texts[j] for j in idx])
        return out

    def _batch(self, texts: list[str]) -> np.ndarray:
        enc = self.tok.encode_batch(list(texts))
        n, t = len(enc), max(len(e.ids) for e in enc)
        ids = np.zeros((n, t), np.int64)  # (N, T) token ids, 0-padded ([PAD] is 0 in BERT)
        mask = np.zeros((n, t), np.float32)  # (N, T) 1 on real tokens
        for i, e in enumerate(enc):
            ids[i, : len(e.ids)], mask[i, : len(e.ids)] = e.ids, 1.0
        x = self._encoder(ids, mask)  # (N, T, D)
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        if self.cfg.normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32)  # (N, D)

    def _encoder(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w, c = self.w, self.cfg
        n, t = ids.shape
        dh = c.hidden // c.heads
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:t][None]
            + w["embeddings.token_type_embeddings.weight"][0]  # one segment: type 0
        )  # (N, T, D)
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], c.eps)
        bias = (1.0 - mask)[:, None, None, :] * np.float32(-1e9)  # (N, 1, 1, T): no padding keys

        def dense(h: np.ndarray, name: str) -> np.ndarray:  # (N, T, in) -> (N, T, out)
            wt = w[f"{name}.weight"]  # (in, out), see __init__
            return (h.reshape(n * t, -1) @ wt + w[f"{name}.bias"]).reshape(n, t, -1)

        def heads(h: np.ndarray) -> np.ndarray:  # (N, T, D) -> (N, H, T, dh)
            return h.reshape(n, t, c.heads, dh).transpose(0, 2, 1, 3)

        for i in range(c.layers):
            p = f"encoder.layer.{i}"
            q = heads(dense(x, f"{p}.attention.self.query"))
            k = heads(dense(x, f"{p}.attention.self.key"))
            v = heads(dense(x, f"{p}.attention.self.value"))
            s = q @ k.transpose(0, 1, 3, 2) * (1.0 / math.sqrt(dh)) + bias  # (N, H, T, T)
            s = np.exp(s - s.max(-1, keepdims=True))
            a = (s / s.sum(-1, keepdims=True)) @ v  # (N, H, T, dh)
            a = a.transpose(0, 2, 1, 3).reshape(n, t, c.hidden)  # (N, T, D)
            ln = f"{p}.attention.output.LayerNorm"
            x = _layer_norm(x + dense(a, f"{p}.attention.output.dense"), w[f"{ln}.weight"],
                            w[f"{ln}.bias"], c.eps)  # fmt: skip
            h = _gelu(dense(x, f"{p}.intermediate.dense"))  # (N, T, 4D)
            ln = f"{p}.output.LayerNorm"
            x = _layer_norm(x + dense(h, f"{p}.output.dense"), w[f"{ln}.weight"], w[f"{ln}.bias"],
                            c.eps)  # fmt: skip
        return x


def load(folder: str) -> BertSentenceEncoder | None:
    """The numpy encoder for ``folder``, or None when the folder is not a BERT + mean
    pooling sentence-transformers model (or lacks a weight the encoder needs)."""
    cfg = _config(folder)
    if cfg is None or not os.path.exists(os.path.join(folder, "model.safetensors")):
        return None
    enc = BertSentenceEncoder(folder, cfg)
    need = [
        "embeddings.word_embeddings.weight",
        f"encoder.layer.{cfg.layers - 1}.output.dense.bias",
    ]
    return enc if all(k in enc.w for k in need) else None
