"""Latent action model (Genie's LAM): which of a few discrete actions turns x_t into x_{t+1}.

Reads top to bottom: config -> vector quantiser -> encoder -> decoder -> model (loss,
inference over whole clips).

Trained without action labels, as in Genie (Bruce et al., 2024, §2.1): an encoder sees
the past frames ``x_{t-c+1} .. x_t`` and the next frame ``x_{t+1}`` and emits a small
vector; a VQ bottleneck of ``num_codes`` codes (8 by default) squeezes it to ~3 bits; a
decoder sees only the past frames and the code and must predict ``x_{t+1}``. With so few
bits the cheapest thing for the code to carry is what the past cannot tell: the agent's
action. At generation time only the codes are used (they become the dynamics model's
actions and the player's buttons).

CPU-sized: the encoder is a strided conv stack (Genie uses an ST-transformer) and the
decoder a small conv U-Net whose bottleneck is modulated (FiLM) by the code; the decoder
predicts the residual ``x_{t+1} - x_t``. Codes are compared by cosine (l2-normalised
vectors, as ViT-VQGAN), and a batch-entropy term keeps every code in use (a codebook of 8
collapses easily otherwise); both are plain gradient terms, so DDP ranks stay identical.

Shapes: frames ``(B, c + 1, 3, H, W)`` in [-1, 1] (past context, then the next frame);
codes ``(B,)`` int64; action vectors ``(B, latent_dim)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class LAMConfig:
    size: int = 64  # frame side in pixels (square frames)
    context: int = 2  # past frames the encoder and the decoder see (x_{t-c+1} .. x_t)
    channels: int = 16  # conv width at full resolution (doubles per stride-2 stage, max 4x)
    levels: int = 3  # stride-2 stages: 64 px -> 8 x 8 at the bottleneck
    latent_dim: int = 16  # action vector width (before quantisation)
    num_codes: int = 8  # VQ codebook size = number of latent actions
    beta: float = 0.25  # commitment weight (encoder pulled towards its code)
    entropy_weight: float = 0.1  # batch-entropy bonus keeping all codes in use; 0 = off
    # Motion cost volume fed to the encoder (a FlowNet-style correlation layer): for every
    # shift (dy, dx) in [-r, r]^2 px, the squared difference of shifted x_t and x_{t+1},
    # per pixel (conv input) and averaged over the frame (straight into the head). CoinRun's
    # camera follows the agent, so an action shows as a 1-2 px scroll of the whole frame;
    # a conv stack trained for minutes on CPU does not learn to measure that by itself.
    # 0 = off.
    cost_radius: int = 2

    def width(self, level: int) -> int:
        return self.channels * min(2**level, 4)


class VectorQuantizer(nn.Module):
    """Nearest code by cosine similarity; straight-through gradients to the encoder."""

    def __init__(self, num_codes: int, dim: int):
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(num_codes, dim))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``z (B, D)`` -> (quantised ``(B, D)`` unit vectors with straight-through
        gradients, codes ``(B,)``, similarities ``(B, K)``)."""
        zn, cb = F.normalize(z, dim=-1), F.normalize(self.codebook, dim=-1)
        sim = zn @ cb.T  # (B, K) cosine
        codes = sim.argmax(-1)
        q = cb[codes]
        return zn + (q - zn).detach(), codes, sim

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B,)`` codes -> ``(B, D)`` unit code vectors (what the decoder is given)."""
        return F.normalize(self.codebook, dim=-1)[codes]


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(min(8, c_out), c_out), nn.SiLU()
    )


def cost_volume(a: torch.Tensor, b: torch.Tensor, r: int) -> torch.Tensor:
    """``a, b (B, 3, H, W)`` -> ``(B, (2r+1)^2, H, W)``: per shift (dy, dx) in [-r, r]^2,
    the channel-mean squared difference of ``a`` shifted by (dy, dx) and ``b`` (edges
    replicated, not wrapped)."""
    h, w = a.shape[-2:]
    pad = F.pad(a, (r, r, r, r), mode="replicate")
    out = [
        ((pad[:, :, r - dy : r - dy + h, r - dx : r - dx + w] - b) ** 2).mean(1)
        for dy in range(-r, r + 1)
        for dx in range(-r, r + 1)
    ]
    return torch.stack(out, 1)


class LAMEncoder(nn.Module):
    """Past frames + next frame (their difference, and the x_t -> x_{t+1} cost volume)
    -> action vector ``(B, D)``."""

    def __init__(self, cfg: LAMConfig):
        super().__init__()
        self.r = cfg.cost_radius
        n_cost = (2 * self.r + 1) ** 2 if self.r else 0
        c_in = 3 * (cfg.context + 1) + 3 + n_cost  # frames stacked + (x_{t+1} - x_t) + costs
        layers = [_conv(c_in, cfg.width(0))]
        for i in range(cfg.levels):
            layers.append(_conv(cfg.width(i), cfg.width(i + 1), stride=2))
        self.convs = nn.Sequential(*layers)
        side = cfg.size // 2**cfg.levels
        self.head = nn.Linear(cfg.width(cfg.levels) * side * side + n_cost, cfg.latent_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # (B, c+1, 3, H, W) -> (B, D)
        diff = frames[:, -1] - frames[:, -2]
        x = [rearrange(frames, "b t c h w -> b (t c) h w"), diff]
        pooled = []
        if self.r:
            cost = cost_volume(frames[:, -2], frames[:, -1], self.r)  # (B, (2r+1)^2, H, W)
            # normalised per sample: which shift fits best matters, not how busy the frame is
            g = cost.mean((2, 3))  # (B, (2r+1)^2)
            pooled = [(g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-6)]
            x.append(cost * 10)  # [-1, 1] frames: per-pixel costs are ~0.01-0.1
        feats = self.convs(torch.cat(x, 1)).flatten(1)
        return self.head(torch.cat([feats, *pooled], 1))


class LAMDecoder(nn.Module):
    """Past frames + code vector -> next frame: U-Net over the past, FiLM by the code at
    every level below full resolution, residual on the last past frame."""

    def __init__(self, cfg: LAMConfig):
        super().__init__()
        self.stem = _conv(3 * cfg.context, cfg.width(0))
        self.down = nn.ModuleList(
            _conv(cfg.width(i), cfg.width(i + 1), stride=2) for i in range(cfg.levels)
        )
        self.film = nn.ModuleList(
            nn.Linear(cfg.latent_dim, 2 * cfg.width(i + 1)) for i in range(cfg.levels)
        )
        self.up = nn.ModuleList(
            _conv(cfg.width(i + 1) + cfg.width(i), cfg.width(i))
            for i in reversed(range(cfg.levels))
        )
        self.out = nn.Conv2d(cfg.width(0), 3, 3, 1, 1)
        # zero: the decoder starts as "copy x_t" (consecutive game frames are ~37 dB apart,
        # a random residual would start far below that) and learns the change
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, past: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``past (B, c, 3, H, W)``, ``action (B, D)`` -> next frame ``(B, 3, H, W)``."""
        x = self.stem(rearrange(past, "b t c h w -> b (t c) h w"))
        skips = [x]
        for down, film in zip(self.down, self.film, strict=True):
            x = down(x)
            gamma, beta = rearrange(film(action), "b (two c) -> two b c 1 1", two=2)
            x = x * (1 + gamma) + beta
            skips.append(x)
        skips.pop()
        for up in self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = up(torch.cat([x, skips.pop()], 1))
        return past[:, -1] + self.out(x)


class LatentActionModel(nn.Module):
    """Encoder -> VQ (``num_codes`` latent actions) -> decoder; the model owns its loss."""

    def __init__(self, cfg: LAMConfig):
        super().__init__()
        if cfg.size % 2**cfg.levels:
            raise ValueError(f"size {cfg.size} must be divisible by 2**levels ({2**cfg.levels})")
        self.cfg = cfg
        self.encoder = LAMEncoder(cfg)
        self.vq = VectorQuantizer(cfg.num_codes, cfg.latent_dim)
        self.decoder = LAMDecoder(cfg)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``frames (B, c + 1, 3, H, W)`` -> (loss, parts): next-frame MSE (relative to
        copying x_t) + VQ codebook and commitment terms - entropy bonus. ``parts`` holds detached scalars and ``codes``."""
        z = self.encoder(frames)
        q, codes, sim = self.vq(z)
        pred = self.decoder(frames[:, :-1], q)
        # next-frame MSE relative to copying x_t (scale-free: frame changes are small, and
        # a raw MSE of ~1e-3 would be drowned by the VQ terms)
        copy = F.mse_loss(frames[:, -2], frames[:, -1]).detach()
        recon = F.mse_loss(pred, frames[:, -1]) / (copy + 1e-4)
        zn, cb = F.normalize(z, dim=-1), F.normalize(self.vq.codebook, dim=-1)[codes]
        codebook = F.mse_loss(cb, zn.detach())
        commit = F.mse_loss(zn, cb.detach())
        # Batch entropy of the soft assignment: high when codes are used evenly.
        p = (sim / 0.1).softmax(-1).mean(0)
        entropy = -(p * p.clamp_min(1e-9).log()).sum()
        loss = recon + codebook + self.cfg.beta * commit
        if self.cfg.entropy_weight:
            loss = loss - self.cfg.entropy_weight * entropy
        parts = {"recon": recon.detach(), "entropy": entropy.detach(), "codes": codes}
        return loss, parts

    def windows(self, clip: torch.Tensor) -> torch.Tensor:
        """``clip (B, T, 3, H, W)`` -> ``(B, T - 1, c + 1, 3, H, W)``: for every transition
        t -> t+1 the past ``c`` frames (the first frame repeated before the clip starts)
        and the next one."""
        c = self.cfg.context
        padded = torch.cat([clip[:, :1].expand(-1, c - 1, -1, -1, -1), clip], 1)
        return padded.unfold(1, c + 1, 1).permute(0, 1, 5, 2, 3, 4)

    @torch.no_grad()
    def infer(self, clip: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent actions of every transition of ``clip (B, T, 3, H, W)``: (codes
        ``(B, T - 1)`` int64, pre-quantisation vectors ``(B, T - 1, D)``)."""
        w = self.windows(clip)
        b, n = w.shape[:2]
        flat = rearrange(w, "b n t c h w -> (b n) t c h w")
        z = torch.cat([self.encoder(flat[i : i + chunk]) for i in range(0, len(flat), chunk)])
        _, codes, _ = self.vq(z)
        return codes.view(b, n), z.view(b, n, -1)

    @torch.no_grad()
    def predict(self, past: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``past (B, c, 3, H, W)`` + ``codes (B,)`` -> the decoder's next frame."""
        return self.decoder(past, self.vq.embed(codes))
