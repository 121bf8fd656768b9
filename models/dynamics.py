"""Genie's dynamics model: a MaskGIT spatio-temporal transformer over video tokens.

Reads top to bottom: config -> ST block -> model (inputs, loss) -> MaskGIT decoding.

A clip is a grid of tokenizer tokens ``(T, h, w)`` (one DV tokenizer image per frame) and
latent actions ``a_0 .. a_{T-2}`` (``a_t`` turns frame t into frame t+1, from the LAM).
Each layer of the transformer (Genie §2.1, ST-transformer) runs

    spatial attention   over the h*w tokens of one frame (bidirectional)
    temporal attention  over the T frames at one position (causal: frame t sees frames <= t)
    MLP

so frame t depends on frames <= t only. The latent action ``a_{t-1}`` is an additive
embedding on every token of frame t (frame 0 gets a learned "no action" embedding).

Training (MaskGIT): per clip a mask rate r ~ U(0.5, 1); each token of frames 1..T-1 is
replaced by [MASK] with probability r (frame 0, the prompt, stays visible); cross-entropy
on the masked tokens. Generation: the new frame starts all [MASK]; ``steps`` rounds each
predict every masked token, keep the most confident and re-mask the rest on a cosine
schedule; confidence gets Gumbel noise scaled by ``temperature`` (annealed to 0), as
MaskGIT's choice temperature -- Genie used 25 steps at temperature 2.

Shapes: tokens ``(B, T, h, w)`` int64, actions ``(B, T - 1)`` int64, mask ``(B, T, h, w)``
bool; inside the model ``(B, T, N, D)`` with ``N = h * w``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class DynamicsConfig:
    vocab_size: int = 1000  # tokenizer codebook, prod(fsq_levels); id vocab_size = [MASK]
    num_actions: int = 8  # LAM codebook size
    max_t: int = 8  # frames per window (temporal positions); longer histories slide
    h: int = 8  # token rows per frame
    w: int = 8  # token columns per frame
    hidden: int = 128  # model width
    layers: int = 4  # ST blocks
    heads: int = 4
    mlp_ratio: int = 4
    # Start of a learned gain added to the logit of the token at the same position in the
    # previous frame (where that token is visible): most game tokens do not change between
    # frames, and a small model trained briefly otherwise spends its capacity re-learning
    # "copy" (and samples noise where it has not). 0 = off. As the AR kind's copy_logit.
    copy_logit: float = 0.0

    @property
    def mask_id(self) -> int:
        return self.vocab_size


class STBlock(nn.Module):
    """Spatial attention, causal temporal attention, MLP; pre-norm residuals."""

    def __init__(self, cfg: DynamicsConfig):
        super().__init__()
        d = cfg.hidden
        self.heads = cfg.heads
        self.norm_s, self.norm_t, self.norm_m = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv_s, self.out_s = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.qkv_t, self.out_t = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(
            nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(), nn.Linear(cfg.mlp_ratio * d, d)
        )

    def _attn(self, x: torch.Tensor, qkv: nn.Linear, out: nn.Linear, causal: bool) -> torch.Tensor:
        # x (S, L, D): S independent sequences of length L
        q, k, v = rearrange(qkv(x), "s l (three h e) -> three s h l e", three=3, h=self.heads)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return out(rearrange(y, "s h l e -> s l (h e)"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, N, D)
        b = x.shape[0]
        s = rearrange(self.norm_s(x), "b t n d -> (b t) n d")
        x = x + rearrange(self._attn(s, self.qkv_s, self.out_s, False), "(b t) n d -> b t n d", b=b)
        t = rearrange(self.norm_t(x), "b t n d -> (b n) t d")
        x = x + rearrange(self._attn(t, self.qkv_t, self.out_t, True), "(b n) t d -> b t n d", b=b)
        return x + self.mlp(self.norm_m(x))


class DynamicsModel(nn.Module):
    """MaskGIT ST-transformer: tokens + latent actions -> logits of every token."""

    def __init__(self, cfg: DynamicsConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.tok = nn.Embedding(cfg.vocab_size + 1, d)  # + [MASK]
        self.act = nn.Embedding(cfg.num_actions + 1, d)  # + "no action" (frame 0)
        self.pos_t = nn.Parameter(torch.randn(cfg.max_t, 1, d) * 0.02)
        self.pos_s = nn.Parameter(torch.randn(1, cfg.h * cfg.w, d) * 0.02)
        self.blocks = nn.ModuleList(STBlock(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size)
        self.copy_gain = nn.Parameter(torch.tensor([cfg.copy_logit])) if cfg.copy_logit else None

    def logits(self, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``tokens (B, T, h, w)`` (``mask_id`` where masked), ``actions (B, T - 1)`` ->
        logits ``(B, T, h, w, V)``. Frame t's logits see frames <= t and ``a_{t-1}``."""
        b, t, h, w = tokens.shape
        if t > self.cfg.max_t or (h, w) != (self.cfg.h, self.cfg.w):
            raise ValueError(
                f"{t}x{h}x{w} tokens: the model takes <= {self.cfg.max_t} frames of "
                f"{self.cfg.h}x{self.cfg.w}"
            )
        none = actions.new_full((b, 1), self.cfg.num_actions)
        act = self.act(torch.cat([none, actions], 1))  # (B, T, D)
        x = self.tok(rearrange(tokens, "b t h w -> b t (h w)"))
        x = x + act[:, :, None] + self.pos_t[:t] + self.pos_s
        for blk in self.blocks:
            x = blk(x)
        logits = rearrange(self.head(self.norm(x)), "b t (h w) v -> b t h w v", h=h)
        if self.copy_gain is None:
            return logits
        # copy prior: + gain on frame t-1's token at the same position (frame 0 and
        # positions whose previous token is [MASK] get none)
        prev = tokens[:, :-1]  # (B, T-1, h, w)
        hot = F.one_hot(prev.clamp_max(self.cfg.vocab_size - 1), self.cfg.vocab_size)
        hot = hot * (prev != self.cfg.mask_id)[..., None]
        prior = F.pad(hot, (0, 0, 0, 0, 0, 0, 1, 0)).to(logits.dtype)  # (B, T, h, w, V)
        return logits + self.copy_gain.to(logits.dtype) * prior

    def forward(
        self, tokens: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """MaskGIT loss: mean cross-entropy (nats) of the true ``tokens`` at the positions
        where ``mask`` is True, given the others and the actions."""
        inp = tokens.masked_fill(mask, self.cfg.mask_id)
        logits = self.logits(inp, actions)
        return F.cross_entropy(logits[mask], tokens[mask])

    # -- MaskGIT decoding --------------------------------------------------------------------

    @torch.no_grad()
    def next_frame(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        steps: int = 25,
        temperature: float = 2.0,
        gen: torch.Generator | None = None,
        sample: bool = True,
    ) -> torch.Tensor:
        """The frame after ``context (B, T0, h, w)`` (1 <= T0 < max_t) under ``actions
        (B, T0)`` (``actions[:, -1]`` leads into the new frame): ``(B, h, w)`` ids.

        ``steps`` MaskGIT rounds; round s keeps ``N - floor(N cos(pi/2 * s/steps))`` tokens.
        ``sample``: draw each round's tokens from the softmax (else argmax); ``temperature``
        scales the Gumbel noise on the confidences (annealed linearly to 0). All draws come
        from ``gen``, so a seeded generator gives the same frame every time."""
        b, t0, h, w = context.shape
        n = h * w
        cur = context.new_full((b, n), self.cfg.mask_id)
        known = torch.zeros(b, n, dtype=torch.bool, device=context.device)
        for s in range(steps):
            x = torch.cat([context, cur.view(b, 1, h, w)], 1)
            logits = self.logits(x, actions)[:, -1].reshape(b, n, -1).float()
            probs = logits.softmax(-1)
            if sample:
                ids = torch.multinomial(probs.view(b * n, -1), 1, generator=gen).view(b, n)
            else:
                ids = logits.argmax(-1)
            conf = probs.gather(-1, ids[..., None])[..., 0].clamp_min(1e-12).log()
            ratio = (s + 1) / steps
            if temperature > 0:
                u = torch.rand(b, n, generator=gen, device=conf.device).clamp(1e-12, 1 - 1e-12)
                conf = conf + temperature * (1 - ratio) * -torch.log(-torch.log(u))
            conf = conf.masked_fill(known, float("inf"))  # decided tokens stay
            ids = torch.where(known, cur, ids)
            n_masked = math.floor(n * math.cos(math.pi / 2 * ratio))
            keep = conf.argsort(-1, descending=True)[:, : n - n_masked]
            known = torch.zeros_like(known).scatter(1, keep, True)
            cur = torch.where(known, ids, torch.full_like(ids, self.cfg.mask_id))
        return cur.view(b, h, w)

    @torch.no_grad()
    def rollout(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        steps: int = 25,
        temperature: float = 2.0,
        gen: torch.Generator | None = None,
        sample: bool = True,
    ) -> torch.Tensor:
        """Continue ``context (B, T0, h, w)`` by one frame per action of ``actions (B, T0 - 1
        + k)`` (the context's own transitions, then the k new ones): ``(B, T0 + k, h, w)``.
        Past ``max_t`` frames the window slides (the oldest frames and actions drop)."""
        out = context
        k = actions.shape[1] - (context.shape[1] - 1)
        for _ in range(k):
            t = out.shape[1]
            lo = max(0, t - (self.cfg.max_t - 1))
            new = self.next_frame(out[:, lo:], actions[:, lo:t], steps, temperature, gen, sample)
            out = torch.cat([out, new[:, None]], 1)
        return out
