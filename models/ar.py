"""Autoregressive video world model over discrete tokenizer tokens (Cosmos AR family).

Reads top to bottom: config + presets -> model (embeddings around a megatron-core
``GPTModel``) -> loss -> KV-cached sampling -> Video2World generation.

A clip's DV (FSQ) tokens ``(T', H', W')`` are flattened frame by frame, row by row (raster
order) and predicted one by one by a decoder-only transformer (megatron-core ``GPTModel``,
local layer spec, built in ``worldmill/training/megatron.py``). Conditioning and positions
are added by this module and handed to the GPT as ``decoder_input``:

    sequence  = [caption prefix (P slots)] [BOS] [x_0] [x_1] ... [x_{N-2}]      length P + N
    predicts                             x_0   x_1   x_2  ...  x_{N-1}

* caption: the clip caption's MiniLM embedding (384-d, ``tasks/embed.py``) projected to
  ``prefix_tokens`` embeddings (prefix conditioning, as in Cosmos' prefix / Emu3 style);
* 3D positions: factorised learned embeddings ``pos_t[t] + pos_h[h] + pos_w[w]`` of the
  token *being predicted* are added to each input slot (so a slot always knows which
  ``(t, h, w)`` it predicts, whatever the grid size);
* vocabulary = the tokenizer's FSQ codebook ``prod(fsq_levels)``.

Shapes: tokens ``(B, T', H', W')`` int64, text ``(B, 384)``; megatron runs sequence-first
``(S, B, D)``; logits come back ``(B, S, V)``.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from worldmill.training import megatron as mc

TEXT_DIM = 384  # all-MiniLM-L6-v2 sentence embeddings


@dataclass
class ARConfig:
    vocab_size: int = 1000  # tokenizer codebook size, prod(fsq_levels) (e.g. [10, 10, 10])
    max_t: int = 8  # latent frames a sequence may hold (position table size)
    max_h: int = 16  # latent rows
    max_w: int = 16  # latent columns
    num_layers: int = 4
    hidden_size: int = 192
    num_heads: int = 6
    num_query_groups: int = 0  # grouped-query attention groups; 0 = num_heads (plain MHA)
    ffn_hidden_size: int = 0  # 0 = 4 * hidden_size (or 8/3 * hidden for swiglu, rounded)
    swiglu: bool = False  # gated SiLU MLP (Llama / Cosmos AR)
    rmsnorm: bool = False  # RMSNorm instead of LayerNorm
    text_dim: int = TEXT_DIM  # caption embedding width
    prefix_tokens: int = 2  # caption -> this many prefix embeddings (0 = unconditional)
    # The tokenizer's FSQ levels (prod = vocab_size). Given, the (tied input / output) token
    # embeddings start as a random linear map of each id's FSQ code vector: ids with nearby
    # codes (nearby pixels) start with nearby embeddings and logits. () = plain random init.
    fsq_levels: tuple[int, ...] = ()
    # Add the embedding of the token at (t - 1, h, w) to the slot predicting (t, h, w): the
    # previous frame's token at the same place. Off by default: it did not help on CPU runs
    # (bench/RESULTS.md); the tiny test preset keeps it on so the path stays tested.
    prev_frame: bool = False
    dropout: float = 0.0  # megatron hidden + attention dropout (training only)
    # Weight of latent frame 0's tokens in the loss. Frame 0 has no earlier frame: its
    # tokens can only be guessed from the caption, which on a small corpus names the photo,
    # so fitting them is memorisation; the world-model task is frames 1.. given the past.
    first_frame_weight: float = 1.0
    # Probability a training caption is replaced by the empty (all-zero) embedding: the
    # unconditional model classifier-free guidance needs (``sample(guidance=...)``).
    caption_dropout: float = 0.0
    # Copy prior: a learned gain (starting here) added to the logit of the token at
    # (t - 1, h, w), the previous latent frame's token at the same place; the model starts
    # near "copy the last frame" and learns where to move away from it. 0 = off.
    copy_logit: float = 0.0
    # > 0: the copy prior reaches the previous frame's (2r+1)^2 tokens around (t - 1, h, w)
    # as a mixture: p = pi_0 softmax(logits) + sum_k pi_k onehot(neighbour k), the weights
    # pi from a linear head on each slot's hidden state (starting at pi_centre ~ softmax
    # over [0, .., copy_logit, .., 0]). A camera pan or zoom moves content by a fraction of
    # a token per latent frame: which neighbour the next token comes from depends on the
    # motion, not on the content, so it is what carries over to unseen videos.
    copy_radius: int = 0

    @property
    def ffn(self) -> int:
        if self.ffn_hidden_size:
            return self.ffn_hidden_size
        return 4 * self.hidden_size if not self.swiglu else 64 * -(-8 * self.hidden_size // 192)

    @property
    def groups(self) -> int:
        return self.num_query_groups or self.num_heads

    @property
    def max_tokens(self) -> int:
        return self.max_t * self.max_h * self.max_w

    @property
    def max_seq_len(self) -> int:
        return self.prefix_tokens + self.max_tokens

    def num_params(self) -> int:
        """Exact parameter count of ``ARWorldModel(self)`` (tensor parallel 1), from the
        config alone: what the 4B / 12B presets are sized by without building them."""
        d, f, L, hd = (
            self.hidden_size,
            self.ffn,
            self.num_layers,
            self.hidden_size // self.num_heads,
        )
        norm = d if self.rmsnorm else 2 * d  # weight (+ bias)
        qkv = d * (d + 2 * self.groups * hd) + (d + 2 * self.groups * hd)  # weight + bias
        proj = d * d + d
        fc1 = d * f * (2 if self.swiglu else 1) + f * (2 if self.swiglu else 1)
        fc2 = f * d + d
        layer = 2 * norm + qkv + proj + fc1 + fc2
        gpt = self.vocab_size * d + L * layer + norm  # tied embedding / output, final norm
        pos = (self.max_t + self.max_h + self.max_w) * d + d  # + BOS
        text = (self.text_dim * d + d) * self.prefix_tokens if self.prefix_tokens else 0
        if self.copy_radius:
            copy = (d + 1) * ((2 * self.copy_radius + 1) ** 2 + 1)  # the mixture head
        else:
            copy = 1 if self.copy_logit else 0
        return gpt + pos + text + copy


# Sizes. "tiny" is the tests'; "cpu" the 2-core default run (its regularisation measured in
# bench/RESULTS.md, AR round 2); "4b" / "12b" mirror
# Cosmos-1.0-Autoregressive-4B / -12B (Llama-style: 16 / 40 layers of width 4096 / 5120, 32
# heads, 8 KV groups, SwiGLU 14336, RMSNorm) over the 64k DV vocabulary and 5 x 40 x 64
# latent grids (33 frames at 640 x 1024 through DV 8x16x16: 12,800 tokens). They build on a
# GPU (``num_params`` states their size: 3.77B and 11.78B).
PRESETS: dict[str, ARConfig] = {
    "tiny": ARConfig(vocab_size=64, max_t=4, max_h=4, max_w=4, num_layers=2, hidden_size=32,
                     num_heads=4, prefix_tokens=1, prev_frame=True),
    "cpu": ARConfig(first_frame_weight=0.2, dropout=0.1, caption_dropout=0.1, copy_logit=6.0,
                    copy_radius=1),
    "4b": ARConfig(vocab_size=64_000, max_t=5, max_h=40, max_w=64, num_layers=16,
                   hidden_size=4096, num_heads=32, num_query_groups=8, ffn_hidden_size=14336,
                   swiglu=True, rmsnorm=True, prefix_tokens=8),
    "12b": ARConfig(vocab_size=64_000, max_t=5, max_h=40, max_w=64, num_layers=40,
                    hidden_size=5120, num_heads=32, num_query_groups=8, ffn_hidden_size=14336,
                    swiglu=True, rmsnorm=True, prefix_tokens=8),
}  # fmt: skip


def preset(name: str, **overrides) -> ARConfig:
    """A preset with some fields replaced (e.g. ``vocab_size`` from the tokenizer run)."""
    return replace(PRESETS[name], **overrides)


def positions(t: int, h: int, w: int, device=None) -> torch.Tensor:
    """``(t*h*w, 3)`` int64 ``(t, h, w)`` of each token in raster order."""
    g = torch.meshgrid(
        torch.arange(t, device=device),
        torch.arange(h, device=device),
        torch.arange(w, device=device),
        indexing="ij",
    )
    return torch.stack([x.flatten() for x in g], -1)


class ARWorldModel(nn.Module):
    """Next-token transformer over ``(t, h, w)`` token grids, caption-conditioned."""

    def __init__(self, cfg: ARConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.gpt = mc.build_gpt(
            cfg.vocab_size,
            cfg.max_seq_len,
            cfg.num_layers,
            d,
            cfg.num_heads,
            cfg.ffn,
            num_query_groups=cfg.groups,
            swiglu=cfg.swiglu,
            rmsnorm=cfg.rmsnorm,
            position_embedding_type="none",  # 3D positions are added here, below
            dropout=cfg.dropout,
        )
        self.pos_t = nn.Embedding(cfg.max_t, d)
        self.pos_h = nn.Embedding(cfg.max_h, d)
        self.pos_w = nn.Embedding(cfg.max_w, d)
        self.bos = nn.Parameter(torch.zeros(d))
        self.text = nn.Linear(cfg.text_dim, cfg.prefix_tokens * d) if cfg.prefix_tokens else None
        for e in (self.pos_t, self.pos_h, self.pos_w):
            nn.init.normal_(e.weight, std=0.02)
        nn.init.normal_(self.bos, std=0.02)
        self.copy_gain = self.copy_head = None
        if cfg.copy_radius:
            k = (2 * cfg.copy_radius + 1) ** 2
            self.copy_head = nn.Linear(d, k + 1)  # mixture logits: [generate, neighbour 0..k-1]
            nn.init.zeros_(self.copy_head.weight)
            with torch.no_grad():
                self.copy_head.bias.zero_()
                self.copy_head.bias[1 + k // 2] = cfg.copy_logit  # the same-place neighbour
            self._hidden: torch.Tensor | None = None  # (S, B, D) of the last GPT call
            self.gpt.output_layer.register_forward_pre_hook(self._keep_hidden)
        elif cfg.copy_logit:
            self.copy_gain = nn.Parameter(torch.tensor([cfg.copy_logit]))
        if cfg.fsq_levels:
            self._init_from_codes(cfg.fsq_levels)

    def _keep_hidden(self, module, args) -> None:
        self._hidden = args[0]  # the final hidden states the output layer reads (S, B, D)

    @torch.no_grad()
    def _init_from_codes(self, levels: tuple[int, ...], std: float = 0.02) -> None:
        from worldmill.models.fsq import FSQ

        fsq = FSQ(list(levels))
        if fsq.codebook_size != self.cfg.vocab_size:
            raise ValueError(f"fsq_levels {levels} give {fsq.codebook_size} codes, not vocab_size")
        codes = fsq.ids_to_codes(torch.arange(fsq.codebook_size))  # (V, len(levels)) in [-1, 1]
        codes = (codes - codes.mean(0)) / codes.std(0).clamp_min(1e-6)
        proj = torch.randn(len(levels), self.cfg.hidden_size) * (std / len(levels) ** 0.5)
        table = codes @ proj + 0.5 * std * torch.randn(fsq.codebook_size, self.cfg.hidden_size)
        emb = self.gpt.embedding.word_embeddings  # vocab-parallel: this rank's rows
        emb.weight.copy_(table[emb.vocab_start_index : emb.vocab_end_index])

    def sharded_state_dict(self, prefix: str = "", sharded_offsets=(), metadata=None) -> dict:
        # the GPT keeps its tensor-parallel sharding; our embeddings are replicated
        return mc.sharded_state_dict(self, prefix)

    # -- inputs ----------------------------------------------------------------------------

    def _embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:  # (B, n) -> (B, n, D)
        # megatron's vocab-parallel embedding wants (B, n) and returns (n, B, D)
        pos0 = torch.zeros_like(ids)
        return rearrange(self.gpt.embedding(input_ids=ids, position_ids=pos0), "n b d -> b n d")

    def _pos(self, pos: torch.Tensor) -> torch.Tensor:  # (n, 3) -> (n, D)
        return self.pos_t(pos[:, 0]) + self.pos_h(pos[:, 1]) + self.pos_w(pos[:, 2])

    def prefix(self, text: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Caption prefix ``(B, P, D)``; ``text`` None = an all-zero caption embedding."""
        if self.text is None:
            return self.bos.new_zeros(batch, 0, self.cfg.hidden_size)
        if text is None:
            text = self.bos.new_zeros(batch, self.cfg.text_dim)
        p = self.text(text.to(self.bos.dtype))
        return rearrange(p, "b (p d) -> b p d", p=self.cfg.prefix_tokens)

    def inputs(
        self,
        prev: torch.Tensor,
        pos: torch.Tensor,
        text: torch.Tensor | None,
        first: bool,
        above: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decoder input ``(S, B, D)`` for the slots predicting the tokens at ``pos`` (n, 3).

        ``prev`` ``(B, n)`` or ``(B, n - 1)`` when ``first``: the tokens before each
        predicted one; ``first`` puts the caption prefix and BOS in front (sequence start).
        ``above`` ``(B, n)``: the token at ``(t - 1, h, w)`` of each predicted one (-1 in
        frame 0), added when ``cfg.prev_frame``."""
        b = prev.shape[0]
        x = self._embed_tokens(prev) if prev.shape[1] else prev.new_zeros(b, 0).float()
        if first:
            bos = self.bos.expand(b, 1, -1)
            x = torch.cat([bos, x.to(bos.dtype)], 1) if x.shape[1] else bos
        x = x + self._pos(pos)[None]
        if self.cfg.prev_frame and above is not None:
            x = x + self._embed_tokens(above.clamp_min(0)) * (above >= 0)[..., None]
        if first:
            x = torch.cat([self.prefix(text, b), x], 1)
        return rearrange(x, "b s d -> s b d")

    def _gpt(self, x: torch.Tensor, labels=None, cache=None, past: int = 0) -> torch.Tensor:
        s, b = x.shape[:2]
        # True = masked. Causal over the new slots; every cached slot is visible.
        mask = torch.ones(s, past + s, dtype=torch.bool, device=x.device).triu(past + 1)
        ids = torch.zeros(b, s, dtype=torch.long, device=x.device)  # unused: decoder_input given
        return self.gpt(
            ids,
            None,
            mask[None, None],
            decoder_input=x,
            labels=labels,
            inference_context=cache,
            runtime_gather_output=labels is None,  # logits: full vocabulary on every TP rank
        )

    # -- training --------------------------------------------------------------------------

    def forward(self, tokens: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) of ``tokens`` ``(B, T', H', W')`` given the
        caption embedding ``text`` ``(B, 384)``. The model owns its loss."""
        b, t, h, w = tokens.shape
        flat = tokens.reshape(b, -1)
        if self.training and self.cfg.caption_dropout > 0 and text is not None:
            keep = torch.rand(b, device=text.device) >= self.cfg.caption_dropout
            text = text * keep[:, None].to(text.dtype)  # dropped = the empty caption (zeros)
        pos, above = positions(t, h, w, tokens.device), _above(flat, 0, t * h * w, h * w)
        x = self.inputs(flat[:, :-1], pos, text, first=True, above=above)
        p = self.cfg.prefix_tokens
        if self.copy_head is not None:
            above = _neighbours(flat, 0, t * h * w, h, w, self.cfg.copy_radius)
        if self.copy_gain is None and self.copy_head is None:
            labels = F.pad(flat, (p, 0))  # prefix slots predict nothing (masked below)
            loss = self.gpt_loss(x, labels)[:, p:]  # (B, N) nats per token
        else:  # full logits (gathered over TP ranks) + the copy prior, then cross-entropy
            logits = self._copy(self._gpt(x)[:, p:].float(), above)  # (B, N, V)
            loss = F.cross_entropy(rearrange(logits, "b n v -> b v n"), flat, reduction="none")
        if self.cfg.first_frame_weight == 1.0:
            return loss.mean()
        wt = torch.ones(t * h * w, device=loss.device, dtype=loss.dtype)
        wt[: h * w] = self.cfg.first_frame_weight
        return (loss * wt).sum(1).mean() / wt.sum()

    def gpt_loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # megatron's vocab-parallel cross-entropy per slot (B, S): correct under TP too
        return self._gpt(x, labels=labels)

    def logits(self, tokens: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, N, V)``: logits of every token of ``tokens`` (B, T', H', W') given the ones
        before it (full-vocab, gathered over tensor-parallel ranks)."""
        b, t, h, w = tokens.shape
        flat = tokens.reshape(b, -1)
        pos, above = positions(t, h, w, tokens.device), _above(flat, 0, t * h * w, h * w)
        x = self.inputs(flat[:, :-1], pos, text, first=True, above=above)
        if self.copy_head is not None:
            above = _neighbours(flat, 0, t * h * w, h, w, self.cfg.copy_radius)
        return self._copy(self._gpt(x)[:, self.cfg.prefix_tokens :], above)

    def _copy(self, logits: torch.Tensor, above: torch.Tensor) -> torch.Tensor:
        """``logits`` ``(B, n, V)`` + ``copy_gain`` on each slot's ``above`` token (B, n)
        (none in frame 0, where ``above`` is -1). With ``copy_radius``, ``above`` is
        ``(B, n, K)`` (``_neighbours``) and the result the mixture's log-probabilities."""
        if self.copy_head is not None:
            return self._copy_mixture(logits, above)
        if self.copy_gain is None:
            return logits
        return logits + self.copy_gain.to(logits.dtype) * _copy_hot(above, logits)

    def _copy_mixture(self, logits: torch.Tensor, nbrs: torch.Tensor) -> torch.Tensor:
        """``log(pi_0 softmax(logits) + sum_k pi_k onehot(nbrs_k))`` ``(B, n, V)``; ``pi``
        ``(B, n, K + 1)`` from the hidden states of the same ``n`` slots, over the valid
        neighbours only (``nbrs`` -1: outside the grid or in frame 0)."""
        n = logits.shape[1]
        hid = rearrange(self._hidden[-n:], "s b d -> b s d")
        mix = self.copy_head(hid.to(self.copy_head.weight.dtype)).float()  # (B, n, K + 1)
        valid = torch.cat([torch.ones_like(nbrs[..., :1], dtype=torch.bool), nbrs >= 0], -1)
        mix = mix.masked_fill(~valid, float("-inf")).log_softmax(-1)
        out = logits.float().log_softmax(-1) + mix[..., :1]
        for k in range(nbrs.shape[-1]):  # add pi_k at token nbrs_k (repeats add up)
            idx = nbrs[..., k : k + 1].clamp_min(0)
            new = torch.logaddexp(out.gather(-1, idx), mix[..., 1 + k : 2 + k])
            out = out.scatter(-1, idx, new)  # an invalid k adds log 0: unchanged
        return out

    @torch.no_grad()
    def fit_calibration(self, tokens: torch.Tensor, text: torch.Tensor | None) -> dict:
        """``fit_calibration`` (``calibrate``'s copy bias and temperature) on the
        teacher-forced logits of token windows ``tokens`` ``(B, T', H', W')`` (captions
        ``text`` ``(B, 384)``) of videos the model never trained on: every position of
        latent frames >= 1 (those that have a previous frame to copy)."""
        b, t, h, w = tokens.shape
        logits = self.logits(tokens, text)[:, h * w :].float()  # (B, N - hw, V)
        flat = tokens.reshape(b, -1)
        above, target = flat[:, : -h * w], flat[:, h * w :]  # token one latent frame earlier
        return fit_calibration(logits.flatten(0, 1), above.flatten(), target.flatten())

    # -- sampling --------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        context: torch.Tensor,
        frames: int,
        text: torch.Tensor | None = None,
        hw: tuple[int, int] | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        use_cache: bool = True,
        return_probs: bool = False,
        guidance: float = 1.0,
        calibration: tuple[float, float] = (0.0, 1.0),
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Continue ``context`` ``(B, T0, H', W')`` (T0 may be 0 with ``hw`` given) by
        ``frames`` latent frames: ``(B, T0 + frames, H', W')``; with ``return_probs`` also
        the model's distribution over each generated token given the tokens drawn before
        it, ``(B, frames, H', W', V)`` (temperature 1, no top-k / top-p; guided if ``guidance``).

        One token at a time, raster order; ``temperature`` 0 = greedy; ``top_k`` 0 and
        ``top_p`` 1 = off. Draws come from a generator seeded with ``seed``, so a seed gives
        the same tokens on every run. ``use_cache``: megatron-core's static KV cache (one
        new slot per forward); ``False`` recomputes the whole prefix for every token (the
        reference the cache is tested against). ``guidance`` != 1 (with ``text``):
        classifier-free guidance, logits ``u + guidance * (c - u)`` of the captioned (c) and
        empty-caption (u) model, run as one doubled batch. ``calibration`` ``(copy_bias,
        temperature)``: every logit vector goes through :func:`calibrate` first (a run's
        fit on its validation videos, ``fit_calibration``); the default changes nothing."""
        cfg_on = guidance != 1.0 and text is not None
        if cfg_on:
            text = torch.cat([text, torch.zeros_like(text)])
            context = torch.cat([context, context])
        b, t0 = context.shape[:2]
        h, w = hw or tuple(context.shape[2:])
        t = t0 + frames
        if t > self.cfg.max_t or h > self.cfg.max_h or w > self.cfg.max_w:
            raise ValueError(
                f"{t}x{h}x{w} tokens exceed the model's {self.cfg.max_t}x{self.cfg.max_h}x"
                f"{self.cfg.max_w} positions"
            )
        dev = self.bos.device
        pos = positions(t, h, w, dev)
        n0, n = t0 * h * w, t * h * w
        out = torch.zeros(b, n, dtype=torch.long, device=dev)
        out[:, :n0] = context.reshape(b, -1).to(dev)
        gen = torch.Generator(device=dev).manual_seed(seed)
        probs = [] if return_probs else None
        if use_cache:
            cache = mc.inference_context(b, self.cfg.prefix_tokens + n)
            shims = mc.inference_shims()
        else:
            cache, shims = None, contextlib.nullcontext()
        with shims:
            past = 0
            for i in range(n0, n):
                if cache is None or i == n0:  # full (re)compute: prefix + tokens 0..i-1
                    up = _above(out, 0, i + 1, h * w)
                    x = self.inputs(out[:, :i], pos[: i + 1], text, first=True, above=up)
                else:  # one new slot: token i-1, predicting position i
                    up = _above(out, i, i + 1, h * w)
                    x = self.inputs(out[:, i - 1 : i], pos[i : i + 1], None, False, above=up)
                logits = self._gpt(x, cache=cache, past=past)[:, -1:].float()
                if self.copy_head is not None:
                    nb = _neighbours(out, i, i + 1, h, w, self.cfg.copy_radius)
                    logits = self._copy(logits, nb)[:, 0]  # (B, V) log-probabilities
                else:
                    logits = self._copy(logits, up[:, -1:])[:, 0]  # (B, V)
                logits = calibrate(logits, up[:, -1], *calibration)
                if cfg_on:  # (2B, V): captioned half, empty-caption half
                    c, u = logits.chunk(2)
                    logits = u + guidance * (c - u)
                if cache is not None:
                    past += x.shape[0]
                    cache.sequence_len_offset = past
                if probs is not None:
                    probs.append(logits.softmax(-1))
                nxt = sample_logits(logits, temperature, top_k, top_p, gen)
                out[:, i] = nxt.repeat(2) if cfg_on else nxt
        out = out.reshape(b, t, h, w)
        if cfg_on:  # both halves hold the same tokens, drawn from the guided logits
            b, out = b // 2, out[: b // 2]
        if probs is None:
            return out
        p = torch.stack(probs, 1) if probs else out.new_zeros(b, 0, self.cfg.vocab_size).float()
        return out, rearrange(p, "b (t h w) v -> b t h w v", h=h, w=w)


def _above(flat: torch.Tensor, start: int, stop: int, hw: int) -> torch.Tensor:
    """``(B, stop - start)``: for raster positions ``start .. stop-1`` the token one latent
    frame earlier (``hw`` positions back), -1 in frame 0. Only reads positions < ``stop -
    hw``, i.e. tokens already known when position ``stop - 1`` is predicted."""
    idx = torch.arange(start, stop, device=flat.device) - hw
    got = flat[:, idx.clamp_min(0)]
    return torch.where(idx[None] >= 0, got, torch.full_like(got, -1))


def _neighbours(flat: torch.Tensor, start: int, stop: int, h: int, w: int, r: int):
    """``(B, stop - start, (2r+1)^2)``: for raster positions ``start .. stop-1`` of an
    ``h x w`` grid the tokens at ``(t - 1, y + dy, x + dx)``, ``dy, dx`` in ``-r .. r``
    (row-major; the centre is index ``K // 2``), -1 outside the grid or in frame 0. Only
    reads the previous latent frame, known before any of frame ``t`` is predicted."""
    idx = torch.arange(start, stop, device=flat.device)
    t, y, x = idx // (h * w), (idx // w) % h, idx % w
    d = torch.arange(-r, r + 1, device=flat.device)
    dy, dx = (g.flatten() for g in torch.meshgrid(d, d, indexing="ij"))
    yy, xx = y[:, None] + dy, x[:, None] + dx  # (n, K)
    ok = (t[:, None] >= 1) & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    src = ((t[:, None] - 1) * h + yy) * w + xx
    got = flat[:, src.clamp(0, flat.shape[1] - 1)]  # (B, n, K)
    return torch.where(ok[None], got, torch.full_like(got, -1))


def _copy_hot(above: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """One-hot ``(..., V)`` of each slot's ``above`` token (all zero where it is -1)."""
    hot = F.one_hot(above.clamp_min(0), logits.shape[-1]) * (above >= 0)[..., None]
    return hot.to(logits.dtype)


def calibrate(
    logits: torch.Tensor, above: torch.Tensor, copy_bias: float = 0.0, temperature: float = 1.0
) -> torch.Tensor:
    """``(logits + copy_bias * onehot(above)) / temperature`` for ``logits`` ``(..., V)``
    and the previous latent frame's token at each place ``above`` ``(...)`` (-1: none).

    Post-hoc calibration for videos the model never saw: a model that memorised its
    training videos moves away from the previous frame's token more often and more
    confidently than is right on new ones; an extra copy bias and a temperature, fitted on
    validation videos (``fit_calibration``), pull it back by as much as they warrant."""
    if copy_bias == 0.0 and temperature == 1.0:
        return logits
    return (logits + copy_bias * _copy_hot(above, logits)) / temperature


def fit_calibration(
    logits: torch.Tensor, above: torch.Tensor, target: torch.Tensor, steps: int = 100
) -> dict[str, float]:
    """Fit ``calibrate``'s ``(copy_bias, temperature)`` to teacher-forced ``logits``
    ``(N, V)`` of tokens ``target`` ``(N,)`` with previous-frame tokens ``above`` ``(N,)``
    (positions of latent frames >= 1 of videos the model never trained on) by minimum
    cross-entropy (L-BFGS over ``copy_bias`` and ``log temperature``; two parameters, so
    a few thousand tokens pin them down). Returns both and the mean NLL (nats/token)
    before and after."""
    logits, hot = logits.double(), _copy_hot(above, logits).double()
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([bias, log_t], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        return F.cross_entropy((logits + bias * hot) / log_t.exp(), target)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nll()
        loss.backward()
        return loss

    with torch.no_grad():
        before = float(F.cross_entropy(logits, target))
    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        after = float(nll())
    if not after < before:  # no improvement (or a diverged fit): leave the logits alone
        bias.data.zero_(), log_t.data.zero_()
        after = before
    return {
        "copy_bias": float(bias),
        "temperature": float(log_t.exp()),
        "nll_before": before,
        "nll_after": after,
        "tokens": int(target.numel()),
    }


def sample_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """``(B, V)`` logits -> ``(B,)`` ids: greedy at temperature 0, else a draw from the
    temperature-scaled distribution restricted to the ``top_k`` most likely ids and the
    smallest set whose probability reaches ``top_p`` (nucleus)."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        srt, idx = logits.sort(-1, descending=True)
        cum = srt.softmax(-1).cumsum(-1)
        drop = cum - srt.softmax(-1) >= top_p  # keep up to and including the crossing id
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, idx, drop), float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=gen)[:, 0]


def config_dict(cfg: ARConfig) -> dict:
    return asdict(cfg)


# -- Video2World ----------------------------------------------------------------------------


def _read_input(video_or_image, width: int) -> np.ndarray:
    """A path (PNG/JPEG image or a video) or a uint8 array ``(H, W, 3)`` / ``(T, H, W, 3)``
    -> ``(T, H, W, 3)`` uint8 whose short side is ``width`` (aspect kept)."""
    from pathlib import Path

    import cv2

    from worldmill.media import decode_frames, even, probe

    if isinstance(video_or_image, str | Path):
        p = str(video_or_image)
        if Path(p).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"):
            img = cv2.imread(p, cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"cannot read image {p}")
            frames = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)[None]
        else:
            info = probe(p)
            s = width / min(info.width, info.height)
            return decode_frames(p, even(info.width * s), even(info.height * s))
    else:
        frames = np.asarray(video_or_image)
        frames = frames[None] if frames.ndim == 3 else frames
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 (T, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    h, w = frames.shape[1:3]
    s = width / min(h, w)
    size = (even(w * s), even(h * s))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


@torch.no_grad()
def generate_ar(
    run,
    prompt: str,
    video_or_image,
    frames: int = 2,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    guidance: float = 1.0,
) -> np.ndarray:
    """Video2World with a trained ``ar`` run: continue a prompt clip or image by ``frames``
    latent frames (``frames * t_c`` pixel frames) under caption ``prompt`` (classifier-free
    ``guidance`` != 1 needs a run trained with ``model.caption_dropout``); returns the
    whole decoded video ``(T, H, W, 3)`` uint8 (context frames included, as the tokenizer
    reconstructs them).

    The input is resized (short side) and centre-cropped to the model's ``data.size`` token
    grid (``size * s_c`` pixels square), and cut to ``1 + k * t_c`` frames with at most
    ``max_t - 1`` latent context frames (the last ones kept). Beyond the model's ``max_t``
    latent frames the context window slides (the oldest latent frames are dropped; the
    model then sees a non-image frame at ``t = 0``, which it was not trained on unless
    ``data.random_start``). Deterministic for a seed; ``temperature`` 0 = greedy. The
    run's calibration (``metrics.json``, fitted on its validation videos) is applied to
    every logit, as in its evaluation. Loads the run (and its tokenizer run) on CPU or the
    first GPU; no Prefect, no side effects.
    """
    import json
    from pathlib import Path

    from worldmill.training import checkpoint, data, encode, metrics
    from worldmill.training import megatron as mc
    from worldmill.training.kinds.ar import conditions, model_config, tokenizer_levels
    from worldmill.training.registry import load_run_config

    run = Path(run)
    cfg = load_run_config(run)
    if cfg.kind != "ar":
        raise ValueError(f"{run} is a {cfg.kind!r} run, not an 'ar' run")
    ck = checkpoint.latest(run)
    if ck is None:
        raise FileNotFoundError(f"no complete checkpoint under {run / 'checkpoints'}")
    m = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    cal = m.get("calibration") or {"copy_bias": 0.0, "temperature": 1.0}
    calibration = (cal["copy_bias"], cal["temperature"])
    import torch.distributed as dist

    group = contextlib.nullcontext() if dist.is_initialized() else mc.single_process(seed)
    with group:
        tok, tcfg, _ = encode.load_tokenizer_in_group(cfg.tokenizer)
        model = ARWorldModel(model_config(cfg, tokenizer_levels(cfg.tokenizer)))
        checkpoint.load_model(ck[0], model)
        dev = mc.device()
        model, tok = model.to(dev).eval(), tok.to(dev)
        tc, sc = tok.cfg.temporal_compression, tok.cfg.spatial_compression
        px = cfg.data.size * sc
        clip = _read_input(video_or_image, px)  # (T, H, W, 3), short side px
        h, w = clip.shape[1:3]
        y0, x0 = (h - px) // 2, (w - px) // 2
        clip = clip[:, y0 : y0 + px, x0 : x0 + px]
        max_ctx = model.cfg.max_t - 1
        n = 1 + min((len(clip) - 1) // tc, max_ctx - 1) * tc  # frames of <= max_ctx latents
        video = data.to_tensor(clip[len(clip) - n :]).to(dev)[None]
        _, ctx = tok.encode(video)  # (1, T0, size, size)
        text = torch.from_numpy(conditions([prompt], camera=cfg.model.camera_code)).to(dev)
        out, left, step_seed = ctx, frames, seed
        while left > 0:
            window = out[:, -min(out.shape[1], max_ctx) :]
            k = min(left, model.cfg.max_t - window.shape[1])
            new = model.sample(window, k, text, temperature=temperature, top_k=top_k,
                               top_p=top_p, seed=step_seed, guidance=guidance,
                               calibration=calibration)[:, window.shape[1] :]  # fmt: skip
            out, left, step_seed = torch.cat([out, new], 1), left - k, step_seed + 1
        video = tok.decode_tokens(out).clamp(-1, 1).float().cpu()
        return metrics.to_uint8(video)[0]
