"""Causal video tokenizer (continuous CV or discrete DV), in the style of NVIDIA Cosmos.

Reads top to bottom: config -> causal conv -> blocks -> encoder -> decoder -> linear patch
codec -> tokenizer.

Two paths, summed. A *linear patch codec* maps each ``t_c x s_c x s_c`` block of pixels to
``z`` latent values with one matrix (and back with another), initialised from a PCA of
training blocks: a strong codec from step 0 that already exploits temporal redundancy.
The nonlinear encoder / decoder (causal conv stacks) add a learned residual to the latent
and to the reconstruction; their output layers start at zero, so training starts at the
PCA codec and only improves on it.

Causality. Every temporal convolution pads on the left only, and temporal downsampling keeps
the first frame on its own, so latent frame 0 depends only on input frame 0. A clip of
``1 + k * t_c`` frames encodes to ``1 + k`` latent frames; a single image (T = 1) is a
one-frame video and goes through the same network.

Shapes (B batch, C=3, T frames, H x W pixels, t_c x s_c temporal x spatial compression)::

    video   (B, 3, 1 + k*t_c, H, W)   floats in [-1, 1]
    latent  (B, z, 1 + k,  H/s_c, W/s_c)   CV: z = latent_channels; DV: z = len(fsq_levels)
    tokens  (B,    1 + k,  H/s_c, W/s_c)   DV only: int64 ids < prod(fsq_levels)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from worldmill.models.fsq import FSQ


@dataclass
class TokenizerConfig:
    kind: str = "cv"  # "cv" continuous latents, "dv" discrete FSQ tokens
    temporal_compression: int = 4  # 4 or 8 (power of two); frames per latent after the first
    spatial_compression: int = 8  # 8 or 16 (power of two, >= patch_size)
    patch_size: int = 8  # lossless space-to-depth at the input: (p*p*3) channels at H/p
    latent_channels: int = 16  # CV latent width z
    # DV: 2^16 codes (16 bits per token, as Cosmos' [8,8,8,5,5,5]), spent on few, finely
    # quantised channels: with the quantiser-fitted init, +2.6 dB on held-out curate clips
    # over [8,8,8,5,5,5] (bench/RESULTS.md).
    fsq_levels: list[int] = field(default_factory=lambda: [32, 16, 16, 8])
    channels: int = 128  # width after the patchify stem
    channel_mult: list[int] = field(default_factory=lambda: [1, 1])  # per stride-2 stage
    blocks_per_level: int = 1  # residual blocks per level
    linear_path: bool = True  # add the linear (PCA-initialisable) patch codec around the convs
    # Keep the patch codec fixed while training (only the conv residual paths learn): Adam's
    # first steps at lr 1e-3 move its small fitted weights by percents each (bench/RESULTS.md).
    freeze_linear: bool = False
    # Spatial kernel of the patch codec's decoder: 1 = each block read from its own latent
    # only; k > 1 = also from its k x k neighbours in this and the previous latent frame
    # (causal), fitted by least squares on the quantised codes at init: it undoes part of
    # FSQ's rounding and the block edges (+0.6-0.8 dB at step 0 on held-out world clips).
    patch_decoder_kernel: int = 1

    def __post_init__(self) -> None:
        for name in ("temporal_compression", "spatial_compression", "patch_size"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"{name} must be a power of two, got {v}")
        if self.spatial_compression < self.patch_size:
            raise ValueError("spatial_compression must be >= patch_size")
        if self.kind not in ("cv", "dv"):
            raise ValueError(f"kind must be 'cv' or 'dv', got {self.kind!r}")
        if self.patch_decoder_kernel < 1 or self.patch_decoder_kernel % 2 == 0:
            raise ValueError(f"patch_decoder_kernel must be odd, got {self.patch_decoder_kernel}")

    @property
    def z_channels(self) -> int:
        return self.latent_channels if self.kind == "cv" else len(self.fsq_levels)

    @property
    def n_spatial_down(self) -> int:  # stride-2 stages after the patchify stem
        return int(math.log2(self.spatial_compression // self.patch_size))

    @property
    def n_temporal_down(self) -> int:
        return int(math.log2(self.temporal_compression))


class CausalConv3d(nn.Module):
    """3D conv, causal in time (left padding), 'same' in space (replicate padding).

    ``stride_t = 2`` keeps the first frame on its own: output t reads inputs <= 2t, so
    ``1 + 2m`` frames become ``1 + m``.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: tuple[int, int, int],
        stride_t: int = 1,
        stride_s: int = 1,
    ):
        super().__init__()
        kt, kh, kw = kernel
        self.pad = (kw // 2, kw // 2, kh // 2, kh // 2, kt - 1, 0)  # (W, W, H, H, T_left, T_right)
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride=(stride_t, stride_s, stride_s))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        x = F.pad(x, self.pad, mode="replicate")
        if self.conv.kernel_size[0] == 1 and self.conv.stride[0] == 1:
            # Purely spatial: run as a 2D conv over frames, ~3x faster than conv3d on CPU.
            t = x.shape[2]
            y = F.conv2d(
                rearrange(x, "b c t h w -> (b t) c h w"),
                self.conv.weight[:, :, 0],
                self.conv.bias,
                stride=self.conv.stride[1:],
            )
            return rearrange(y, "(b t) c h w -> b c t h w", t=t)
        if self.conv.kernel_size[1:] == (1, 1) and self.conv.stride[1:] == (1, 1):
            # Purely temporal: a 1D conv over time per pixel (CPU conv3d has no fast kernel).
            h, w = x.shape[-2:]
            y = F.conv1d(
                rearrange(x, "b c t h w -> (b h w) c t"),
                self.conv.weight[:, :, :, 0, 0],
                self.conv.bias,
                stride=self.conv.stride[0],
            )
            return rearrange(y, "(b h w) c t -> b c t h w", h=h, w=w)
        return self.conv(x)


class FactorizedConv(nn.Sequential):
    """(2+1)D conv as in Cosmos: spatial 1x3x3 then causal temporal 3x1x1 (cheaper than 3x3x3)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            CausalConv3d(c_in, c_out, (1, 3, 3)), CausalConv3d(c_out, c_out, (3, 1, 1))
        )


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(32, c_in // 4), c_in)
        self.conv1 = FactorizedConv(c_in, c_out)
        self.norm2 = nn.GroupNorm(min(32, c_out // 4), c_out)
        self.conv2 = FactorizedConv(c_out, c_out)
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GroupNorm normalises per frame-group over (C, T, H, W); statistics include later
        # frames, which would break causality, so normalise each frame on its own.
        h = self.conv1(F.silu(_per_frame(self.norm1, x)))
        h = self.conv2(F.silu(_per_frame(self.norm2, h)))
        return self.skip(x) + h


def _per_frame(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    t = x.shape[2]
    y = norm(rearrange(x, "b c t h w -> (b t) c h w"))
    return rearrange(y, "(b t) c h w -> b c t h w", t=t)


class Down(nn.Module):
    """Halve H, W (and T, first frame kept) with a strided causal conv."""

    def __init__(self, c: int, time: bool):
        super().__init__()
        self.conv = CausalConv3d(
            c, c, (3 if time else 1, 3, 3), stride_t=2 if time else 1, stride_s=2
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Up(nn.Module):
    """Double H, W (and T: ``1 + m`` -> ``1 + 2m`` latent frames) by depth-to-space/time.

    Each latent frame expands to 2 frames; the first expansion's leading frame is dropped,
    mirroring ``Down`` so that output frame 0 still depends on latent frame 0 only.
    """

    def __init__(self, c: int, time: bool):
        super().__init__()
        self.rt = 2 if time else 1
        self.conv = CausalConv3d(c, c * 4 * self.rt, (3 if time else 1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = rearrange(
            self.conv(x), "b (c rt rh rw) t h w -> b c (t rt) (h rh) (w rw)", rt=self.rt, rh=2, rw=2
        )
        return y[:, :, self.rt - 1 :]


def _level_plan(cfg: TokenizerConfig) -> list[tuple[int, bool]]:
    """(channels, also-downsample-time) per stride-2 stage, coarse levels last.

    Time is compressed in the *last* stages (the cheapest, lowest-resolution ones); if there
    are more temporal than spatial stages, the extra time-only halvings go at the end.
    """
    n_s, n_t = cfg.n_spatial_down, cfg.n_temporal_down
    n = max(n_s, n_t)
    mult = cfg.channel_mult + [cfg.channel_mult[-1]] * max(0, n + 1 - len(cfg.channel_mult))
    return [(cfg.channels * mult[i + 1], i >= n - n_t) for i in range(n)]


class TimeDown(nn.Module):  # time-only halving, used when t_c > s_c / patch_size
    def __init__(self, c: int):
        super().__init__()
        self.conv = CausalConv3d(c, c, (3, 1, 1), stride_t=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class TimeUp(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = CausalConv3d(c, c * 2, (3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.conv(x), "b (c rt) t h w -> b c (t rt) h w", rt=2)[:, :, 1:]


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        p = cfg.patch_size
        self.p = p
        self.stem = CausalConv3d(3 * p * p, cfg.channels, (1, 3, 3))
        layers: list[nn.Module] = []
        c = cfg.channels
        for i, (c_out, time) in enumerate(_level_plan(cfg)):
            for _ in range(cfg.blocks_per_level):
                layers.append(ResBlock(c, c_out))
                c = c_out
            spatial = i < cfg.n_spatial_down
            layers.append(Down(c, time) if spatial else TimeDown(c))
        for _ in range(cfg.blocks_per_level):
            layers.append(ResBlock(c, c))
        self.body = nn.Sequential(*layers)
        self.norm = nn.GroupNorm(min(32, c // 4), c)
        self.out = CausalConv3d(c, cfg.z_channels, (1, 1, 1))
        if cfg.linear_path:  # a residual on the patch codec's latent: start at zero
            _zero(self.out.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 3, T, H, W) -> (B, 3*p*p, T, H/p, W/p): lossless patchify.
        x = rearrange(x, "b c t (h ph) (w pw) -> b (c ph pw) t h w", ph=self.p, pw=self.p)
        h = self.body(self.stem(x))
        return self.out(F.silu(_per_frame(self.norm, h)))  # (B, z, T', H/s_c, W/s_c)


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        p = cfg.patch_size
        self.p = p
        plan = _level_plan(cfg)
        c = plan[-1][0] if plan else cfg.channels
        self.stem = CausalConv3d(cfg.z_channels, c, (1, 3, 3))
        layers: list[nn.Module] = [ResBlock(c, c) for _ in range(cfg.blocks_per_level)]
        chans = [cfg.channels] + [c_ for c_, _ in plan]
        for i in reversed(range(len(plan))):
            spatial = i < cfg.n_spatial_down
            layers.append(Up(c, plan[i][1]) if spatial else TimeUp(c))
            for _ in range(cfg.blocks_per_level):
                layers.append(ResBlock(c, chans[i]))
                c = chans[i]
        self.body = nn.Sequential(*layers)
        self.norm = nn.GroupNorm(min(32, c // 4), c)
        self.out = CausalConv3d(c, 3 * p * p, (1, 3, 3))
        if cfg.linear_path:  # a residual on the patch codec's reconstruction: start at zero
            _zero(self.out.conv)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.body(self.stem(z))
        x = self.out(F.silu(_per_frame(self.norm, h)))
        return rearrange(x, "b (c ph pw) t h w -> b c t (h ph) (w pw)", ph=self.p, pw=self.p)


def _zero(m: nn.Module) -> None:
    nn.init.zeros_(m.weight)
    nn.init.zeros_(m.bias)


class PatchCodec(nn.Module):
    """Linear codec on ``t_c x s_c x s_c`` pixel blocks: ``D = 3*t_c*s_c*s_c`` values -> ``z``.

    Causal and image-compatible: the first frame is repeated ``t_c - 1`` times in front, so
    block 0 is frame 0 alone (a still image) and block k >= 1 is frames ``(k-1)*t_c+1 ..
    k*t_c``; decoding drops the ``t_c - 1`` padding frames again.

    With ``patch_decoder_kernel`` k > 1 the decoder also reads the k x k neighbouring latents
    of this and the previous latent frame (``ctx``, a causal ``(2, k, k)`` conv added to
    ``dec``), so latent frame 0 still decodes from itself alone.
    """

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.tc, self.s = cfg.temporal_compression, cfg.spatial_compression
        d = 3 * self.tc * self.s * self.s
        self.enc = nn.Linear(d, cfg.z_channels)
        self.dec = nn.Linear(cfg.z_channels, d)
        k = cfg.patch_decoder_kernel
        self.ctx = CausalConv3d(cfg.z_channels, d, (2, k, k)) if k > 1 else None
        if self.ctx is not None:  # adds nothing until fitted (DV init) or trained
            _zero(self.ctx.conv)

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 1 + k*t_c, H, W)`` -> ``(B, 1 + k, H/s_c, W/s_c, D)``."""
        x = torch.cat([x[:, :, :1].expand(-1, -1, self.tc - 1, -1, -1), x], 2)
        return rearrange(
            x, "b c (t pt) (h ph) (w pw) -> b t h w (c pt ph pw)", pt=self.tc, ph=self.s, pw=self.s
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, z, T', h, w)
        return rearrange(self.enc(self.blocks(x)), "b t h w z -> b z t h w")

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # (B, z, T', h, w) -> (B, 3, T, H, W)
        y = self.dec(rearrange(z, "b z t h w -> b t h w z"))  # (B, T', h, w, D)
        if self.ctx is not None:
            y = y + rearrange(self.ctx(z), "b d t h w -> b t h w d")
        y = rearrange(
            y, "b t h w (c pt ph pw) -> b c (t pt) (h ph) (w pw)", pt=self.tc, ph=self.s, pw=self.s
        )
        return y[:, :, self.tc - 1 :]

    @torch.no_grad()
    def init_pca(self, videos: torch.Tensor, fsq: FSQ | None = None) -> torch.Tensor:
        """Set encoder/decoder to the top-``z`` principal components of the blocks of
        ``videos`` ``(N, 3, T, H, W)``. Returns the explained-variance fraction of each
        component.

        With ``fsq`` (DV) the codec is fitted *through the quantiser*: a plain PCA (or one
        whitened to FSQ's range) ignores FSQ's tanh bound and its rounding, so the decoder
        reads a code of ``tanh``-shrunk, coarsely rounded values as if it were the PCA
        coefficient (-1.8 dB on held-out curate clips at [8,8,8,5,5,5]). Per channel we pick the
        encoder gain that minimises the error of the best affine read-out of the quantised
        code (``y ~ g * code + b``, least squares) and set the decoder to that read-out: a
        Lloyd-Max-style uniform quantiser per principal component.
        """
        x = self.blocks(videos).reshape(-1, self.enc.in_features).double()
        mu = x.mean(0)
        evals, evecs = torch.linalg.eigh((x - mu).T @ (x - mu) / len(x))  # ascending
        k = self.enc.out_features
        p = evecs[:, -k:].flip(1).T  # (z, D) top components first
        gain, g, b = torch.ones(k).double(), torch.ones(k).double(), torch.zeros(k).double()
        if fsq is not None:
            gain, g, b = _fit_quantiser((x - mu) @ p.T, fsq)
        self.enc.weight.copy_(p * gain[:, None])
        self.enc.bias.copy_(-(p @ mu) * gain)
        self.dec.weight.copy_(p.T * g[None, :])
        self.dec.bias.copy_(mu + p.T @ b)
        if self.ctx is not None and fsq is not None:
            self._fit_context_decoder(videos, fsq)
        return (evals.flip(0)[:k] / evals.sum()).float()

    @torch.no_grad()
    def _fit_context_decoder(self, videos: torch.Tensor, fsq: FSQ, ridge: float = 1e-3) -> None:
        """Least-squares decoder from the quantised codes of ``videos`` ``(N, 3, T, H, W)``:
        each block's pixels from the codes of its ``(2, k, k)`` causal neighbourhood (the
        taps of ``ctx``; the centre tap of the current frame goes to ``dec``)."""
        codes, _ = fsq(rearrange(self.encode(videos), "b z t h w -> b t h w z"))
        codes = rearrange(codes, "b t h w z -> b z t h w").double()
        conv = self.ctx.conv
        kt, kh, kw = conv.kernel_size
        xp = F.pad(codes, self.ctx.pad, mode="replicate")  # as CausalConv3d pads
        _, _, t, h, w = codes.shape
        taps = [
            xp[:, :, i : i + t, j : j + h, m : m + w]
            for i in range(kt)
            for j in range(kh)
            for m in range(kw)
        ]
        x = rearrange(torch.stack(taps, 1), "b f z t h w -> (b t h w) (f z)")
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)  # bias column
        y = self.blocks(videos).reshape(len(x), -1).double()  # (blocks, D)
        a = x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype)
        sol = torch.linalg.solve(a, x.T @ y)  # (taps * z + 1, D)
        weight = rearrange(sol[:-1], "(kt kh kw z) d -> d z kt kh kw", kt=kt, kh=kh, kw=kw).clone()
        centre = weight[:, :, -1, kh // 2, kw // 2].clone()  # current frame, same block
        weight[:, :, -1, kh // 2, kw // 2] = 0
        self.dec.weight.copy_(centre)
        self.dec.bias.copy_(sol[-1])
        conv.weight.copy_(weight)
        conv.bias.zero_()


def _fit_quantiser(
    y: torch.Tensor, fsq: FSQ, n_grid: int = 48
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per channel of centred PCA coefficients ``y (N, z)`` (float64): the encoder gain ``a``
    (FSQ input = ``a * y``) and the affine read-out ``y ~ g * code + b`` with the least
    squared error, searching FSQ input spreads ``a * std(y)`` in [0.05, 4] (log grid).
    Returns (a, g, b), each ``(z,)``."""
    sd = y.std(0).clamp_min(1e-8)
    best_err = torch.full_like(sd, math.inf)
    a, g, b = torch.ones_like(sd), torch.ones_like(sd), torch.zeros_like(sd)
    for spread in torch.logspace(math.log10(0.05), math.log10(4.0), n_grid).tolist():
        codes = fsq((y * (spread / sd)).float())[0].double()  # (N, z); FSQ is per channel
        c = codes - codes.mean(0)
        var = (c**2).mean(0).clamp_min(1e-12)
        cov = (c * y).mean(0)
        err = (y**2).mean(0) - cov**2 / var  # residual of the least-squares read-out
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        a = torch.where(better, spread / sd, a)
        g = torch.where(better, cov / var, g)
        b = torch.where(better, -cov / var * codes.mean(0), b)  # y is centred
    return a, g, b


class CausalVideoTokenizer(nn.Module):
    """Encoder -> (FSQ for DV) -> decoder. ``forward`` returns the reconstruction."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.patch = PatchCodec(cfg) if cfg.linear_path else None
        if self.patch is not None and cfg.freeze_linear:
            self.patch.requires_grad_(False)  # the loop's optimizer skips frozen parameters
        self.fsq = FSQ(cfg.fsq_levels) if cfg.kind == "dv" else None

    def check_shape(self, video: torch.Tensor) -> None:
        _, c, t, h, w = video.shape
        s, tc = self.cfg.spatial_compression, self.cfg.temporal_compression
        if c != 3 or (t - 1) % tc or h % s or w % s:
            raise ValueError(
                f"video (B, 3, T, H, W) needs T = 1 + k*{tc} and H, W divisible "
                f"by {s}; got {tuple(video.shape)}"
            )

    def encode(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, 3, T, H, W)`` in [-1, 1] -> (latent ``(B, z, T', h, w)``, tokens or None).

        For DV the latent returned is the quantised code (what the decoder consumes).
        """
        self.check_shape(video)
        z = self.encoder(video)
        if self.patch is not None:
            z = z + self.patch.encode(video)
        if self.fsq is None:
            return z, None
        codes, ids = self.fsq(rearrange(z, "b d t h w -> b t h w d"))
        return rearrange(codes, "b t h w d -> b d t h w"), ids

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, z, T', h, w)`` -> video ``(B, 3, 1 + (T'-1)*t_c, H, W)``."""
        x = self.decoder(latent)
        return x if self.patch is None else x + self.patch.decode(latent)

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """DV: ``(B, T', h, w)`` int64 ids -> video."""
        assert self.fsq is not None, "decode_tokens needs a DV tokenizer"
        return self.decode(rearrange(self.fsq.ids_to_codes(tokens), "b t h w d -> b d t h w"))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(video)[0])

    def init_from_data(self, videos: torch.Tensor) -> torch.Tensor | None:
        """PCA-initialise the linear patch codec from training clips ``(N, 3, T, H, W)``
        (call once, before training). Returns the explained variance per latent channel."""
        if self.patch is None:
            return None
        return self.patch.init_pca(videos, fsq=self.fsq)

    @property
    def vocab_size(self) -> int:
        return self.fsq.codebook_size if self.fsq is not None else 0

    def latent_numel(self, t: int, h: int, w: int) -> int:
        """Number of latent values for a ``t x h x w`` clip."""
        c = self.cfg
        t_lat = 1 + (t - 1) // c.temporal_compression
        return c.z_channels * t_lat * (h // c.spatial_compression) * (w // c.spatial_compression)

    def latent_bytes(self, t: int, h: int, w: int) -> float:
        """Bytes of the latent of a ``t x h x w`` clip (the budget a baseline gets): DV
        ``log2(vocab_size)`` bits per token; CV one byte per value (8-bit, as the pixels a
        bicubic baseline keeps)."""
        n = self.latent_numel(t, h, w)
        if self.fsq is None:
            return float(n)
        return n // self.cfg.z_channels * math.log2(self.vocab_size) / 8
