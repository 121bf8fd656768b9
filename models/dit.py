"""Diffusion world model over continuous tokenizer latents (Cosmos diffusion family).

Reads top to bottom: config + presets -> conditioning pieces -> the DiT (a megatron-core
``TransformerBlock`` with adaLN-zero around its layers) -> training loss -> sampler.

A clip's CV latent ``(C, T', H', W')`` (``worldmill encode``) is normalised per channel,
noised and denoised by a DiT:

* **3D patchify**: ``(patch_t x patch x patch)`` latent cells -> one token, plus
  factorised learned positions ``pos_t[t] + pos_h[h] + pos_w[w]``;
* **noise level**: rectified flow (as Cosmos-Predict2.5): ``x_t = (1 - t) x_0 + t eps``,
  ``t`` in [0, 1], 0 = clean. Every latent frame has its own ``t`` (diffusion forcing /
  Cosmos Video2World): *given frames are clean, ``t = 0``*, the others share one level.
  ``t`` -> sinusoid -> MLP -> per-frame vector ``c`` -> adaLN-zero: each layer's
  self-attention, cross-attention and MLP input is ``LN(x) * (1 + scale) + shift`` and its
  output is multiplied by a ``gate``; the modulation layers start at zero, so every block
  starts as the identity;
* **caption**: the clip caption's MiniLM embedding (384-d, what ``latents.py`` stores)
  projected to ``text_tokens`` context tokens, attended by cross-attention in every layer;
  and the MiniLM embedding of the caption's camera phrase alone ("steady pan to the left",
  ``training/camera.prompt_conditions``; ``camera_dim``), through an MLP added to the
  noise-level vector ``c``: camera motion is global to the clip, so it modulates every
  token; and the phrase's motion code (``MOTION_DIM``: vx, vy, zoom of the content) drawn
  as a per-cell displacement field (``camera_field``: uniform for a pan or tilt, radial for
  a zoom, times the frames since the anchor) that every latent cell reads next to its
  anchor's gradients, as Cosmos camera control gives every pixel its Pluecker ray. The
  conditioning input is ``(B, text_dim + camera_dim [+ MOTION_DIM])`` (a ``(B, text_dim)``
  caption alone has no camera phrase). Training replaces all by zeros with probability
  ``cond_drop`` (the "null" caption of classifier-free guidance);
* **output**: an ``x_0`` prediction, written as the last given (clean) latent frame before
  each frame plus the network's output (zero when no frame is given, Text2World). The
  final layer starts at zero, so an untrained model predicts "copy the last given frame";
* **loss**: mean squared error of ``x_0`` over the noisy frames (= the velocity loss
  ``|v - v_hat|^2`` weighted by ``t^2``, which keeps high-noise steps -- those that set
  the content -- from being drowned by the nearly clean ones), its channels weighted by
  their raw variance (``loss_weight``: MSE in raw latent units), plus ``pixel_loss`` times
  the MSE of the last latent frame's ``x_0`` *decoded to pixels* by the frozen tokenizer
  (``forward(decode=...)``), on Video2World samples: for this CV decoder the latent-MSE
  optimum is not the pixel optimum (RESULTS.md, diffusion round 2);
* **sampler**: deterministic Euler steps of the flow ODE on a shifted time grid
  (``steps`` model calls, 2x with guidance), given frames held at ``t = 0``; guidance
  ``g``: ``x0 = x0_null + g (x0_caption - x0_null)`` (``g = 1``: caption only, no extra call).

Shapes: latents ``(B, C, T, H, W)``; tokens ``(B, N, D)`` with ``N = T/pt * H/p * W/p``;
megatron-core runs sequence-first ``(N, B, D)``. ``backend="torch"`` builds a plain-torch
twin of the same layers and size (``bench/megatron_overhead.py`` compares them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

TEXT_DIM = 384  # all-MiniLM-L6-v2 sentence embeddings
# The conditioning vector a prompt becomes (``training/camera.prompt_conditions``):
# [caption embedding (text_dim) | camera-phrase embedding (text_dim) | motion code (3)], the
# code being the named camera motion as content motion (vx, vy, zoom): pan left = (1, 0, 0)
# (content moves right), tilt up = (0, 1, 0) (content moves down), zoom in = (0, 0, 1)
# (content expands); zeros for a static shot, no camera phrase and the null caption.
MOTION_DIM = 3


@dataclass
class DiTConfig:
    latent_channels: int = 16  # C of the CV tokenizer run's latents
    max_t: int = 4  # latent frames a window may hold (position table size)
    max_h: int = 8  # latent rows
    max_w: int = 8  # latent columns
    patch_t: int = 1  # latent frames per token (1: every frame keeps its own noise level)
    patch: int = 2  # latent rows = columns per token
    num_layers: int = 4
    hidden_size: int = 128
    num_heads: int = 4
    ffn_hidden_size: int = 0  # 0 = 4 * hidden_size
    text_dim: int = TEXT_DIM  # caption embedding width
    text_tokens: int = 4  # caption -> this many cross-attention context tokens
    freq_dim: int = 128  # sinusoidal noise-level features before the MLP
    cond_drop: float = 0.1  # P(caption replaced by the null caption) in training (CFG)
    t2w_prob: float = 0.25  # P(no given frame) in training (Text2World); else 1..T-1 given
    # Training noise levels t = sigmoid(N(logit_mean, logit_std)): wider than SD3's (0, 1)
    # and tilted to high noise, so t near 1 -- where a sample's content and the one-step
    # prediction are decided -- is trained too (P(t > 0.9) ~ 11 %).
    logit_mean: float = 0.5
    logit_std: float = 1.4
    # P(t = 1 exactly, pure noise) in training (zero terminal SNR, Lin et al. 2024): every
    # sample starts there, and the one-step Video2World prediction E[x0 | given frames] is
    # made there, but the logit-normal almost never draws it (P(t > 0.99) ~ 0.2 %)
    t1_prob: float = 0.1
    # Each token also reads, at its own place, the last given frame (the output's anchor)
    # and that frame's change from the given frame before it (a motion cue), as Cosmos
    # Video2World concatenates its condition frames to the input; without them the network
    # must find the anchor through attention (it had not, in 1,600 steps: RESULTS.md).
    given_inputs: bool = True
    # ... and the anchor's spatial derivatives (d/dx, d/dy and the radial r . grad about the
    # window centre, per latent cell): a camera move by (vx, vy, zoom) changes a frame by
    # about -(vx d/dx + vy d/dy + zoom r . grad) of it, so with these the motion a prompt
    # names is a linear read-out the adaLN conditioning can switch; without them, from one
    # given frame, no run moved its content (RESULTS.md). Needs ``given_inputs``.
    anchor_gradients: bool = True
    # Every latent cell also reads the displacement field the prompt's camera motion implies
    # at its place and frame (2 channels: dx, dy), as Cosmos camera control gives every pixel
    # its Pluecker ray: the motion code (uniform for a pan / tilt, radial about the window
    # centre for a zoom, unit speed) times the frames since the cell's anchor frame; it is
    # an input of each token and, through an MLP, added to that token's adaLN conditioning
    # (spatially varying adaLN, as SPADE): a global adaLN vector must be turned into a
    # per-cell move by the network; with the field modulating each token, moving the anchor
    # is a local product of the field and the anchor's gradients (which the network still
    # has to learn, with the speed). Off: the camera phrase's global adaLN vector only.
    camera_field: bool = True
    # Per-channel weight of the x0 loss: "variance" weights each standardised channel by its
    # raw variance, i.e. the loss is the MSE in raw latent units. The CV decoder is about
    # equally sensitive to every raw channel (1.1-1.4e-3 pixel MSE per unit, measured), so
    # this is ~pixel MSE; "uniform" (standardised MSE) spent the model on the 13 low-variance
    # channels that carry ~15 % of the pixel signal and do not persist between frames.
    loss_weight: str = "variance"
    # Width of the camera-phrase embedding added to the adaLN conditioning (0 = off): in the
    # pooled caption embedding the motion words are drowned by the colour words, and no
    # run without it learned camera control (RESULTS.md, diffusion round 2).
    camera_dim: int = TEXT_DIM
    # Weight of the decoded-pixel x0 MSE (pixels in [-1, 1]; 10 puts it on the scale of the
    # latent term) of the last latent frame of Video2World samples, decoded after the true
    # frame before it by the frozen tokenizer passed to ``forward`` (none passed: no term).
    pixel_loss: float = 10.0
    # Samples per rank and step that get it, those with the most given frames first: a
    # decoder pass over 2 next-frame samples costs ~0.8 of a DiT step at the default size.
    pixel_samples: int = 3
    # ... of which this many are instead those with the fewest given frames, all their
    # predicted frames decoded: from one given frame, the move the prompt names. In latent
    # MSE the fine-detail channels' sub-cell move is noise, so a model trained on it moved
    # only the smooth channels and the decoded detail stood still (RESULTS.md, round 4).
    pixel_first: int = 1
    backend: str = "megatron"  # "megatron" (TransformerBlock) or "torch" (plain twin)

    @property
    def ffn(self) -> int:
        return self.ffn_hidden_size or 4 * self.hidden_size

    @property
    def patch_dim(self) -> int:  # latent values per token
        return self.latent_channels * self.patch_t * self.patch * self.patch


# Sizes. "tiny" is the tests'; "cpu" the 2-core default run (4 x 128, 1.95M parameters with the default tokenizer).
PRESETS: dict[str, DiTConfig] = {
    "tiny": DiTConfig(latent_channels=4, max_t=3, max_h=4, max_w=4, num_layers=2,
                      hidden_size=32, num_heads=4, text_tokens=2, freq_dim=32),
    "cpu": DiTConfig(),
}  # fmt: skip


def preset(name: str, **overrides) -> DiTConfig:
    """A preset with some fields replaced (e.g. ``latent_channels`` from the tokenizer)."""
    return replace(PRESETS[name], **overrides)


def config_dict(cfg: DiTConfig) -> dict:
    return asdict(cfg)


# -- conditioning pieces ---------------------------------------------------------------------


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``(...)`` noise levels in [0, 1] -> ``(..., dim)`` sinusoids of ``1000 t``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    arg = 1000 * t.float()[..., None] * freqs
    return torch.cat([arg.cos(), arg.sin()], -1)


def _modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return h * (1 + scale) + shift


class _TorchSelfAttention(nn.Module):
    """Plain-torch twin of megatron's ``SelfAttention`` (same parameters; returns
    ``(out, None)`` where megatron returns ``(out, bias)``). ``(S, B, D)``."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.linear_qkv = nn.Linear(d, 3 * d)
        self.linear_proj = nn.Linear(d, d)

    def forward(self, x, attention_mask=None):
        q, k, v = rearrange(self.linear_qkv(x), "s b (n h e) -> n b h s e", n=3, h=self.heads)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.linear_proj(rearrange(o, "b h s e -> s b (h e)")), None


class _TorchCrossAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.linear_q = nn.Linear(d, d)
        self.linear_kv = nn.Linear(d, 2 * d)
        self.linear_proj = nn.Linear(d, d)

    def forward(self, x, attention_mask=None, key_value_states=None):
        q = rearrange(self.linear_q(x), "s b (h e) -> b h s e", h=self.heads)
        kv = self.linear_kv(key_value_states)
        k, v = rearrange(kv, "s b (n h e) -> n b h s e", n=2, h=self.heads)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.linear_proj(rearrange(o, "b h s e -> s b (h e)")), None


class _TorchMLP(nn.Module):
    def __init__(self, d: int, f: int):
        super().__init__()
        self.linear_fc1, self.linear_fc2 = nn.Linear(d, f), nn.Linear(f, d)

    def forward(self, x):
        return self.linear_fc2(F.gelu(self.linear_fc1(x))), None


class _TorchLayer(nn.Module):
    """The submodules of a megatron-core DiT layer (``megatron.build_dit_block``), in torch."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.input_layernorm = nn.LayerNorm(d)
        self.self_attention = _TorchSelfAttention(d, cfg.num_heads)
        self.pre_cross_attn_layernorm = nn.LayerNorm(d)
        self.cross_attention = _TorchCrossAttention(d, cfg.num_heads)
        self.pre_mlp_layernorm = nn.LayerNorm(d)
        self.mlp = _TorchMLP(d, cfg.ffn)


class _TorchBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.layers = nn.ModuleList(_TorchLayer(cfg) for _ in range(cfg.num_layers))


def _out(pair: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
    out, bias = pair  # megatron returns the output bias separately (fused bias-add)
    return out if bias is None else out + bias


# -- the model ------------------------------------------------------------------------------


class DiTWorldModel(nn.Module):
    """Caption- and frame-conditioned denoiser of latent windows; see the module doc."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        if d % cfg.num_heads:
            raise ValueError(f"hidden_size {d} is not a multiple of num_heads {cfg.num_heads}")
        if cfg.loss_weight not in ("variance", "uniform"):
            raise ValueError(
                f"loss_weight must be 'variance' or 'uniform', got {cfg.loss_weight!r}"
            )
        if cfg.backend == "megatron":
            from worldmill.training import megatron as mc

            self.block = mc.build_dit_block(cfg.num_layers, d, cfg.num_heads, cfg.ffn)
        elif cfg.backend == "torch":
            self.block = _TorchBlock(cfg)
        else:
            raise ValueError(f"backend must be 'megatron' or 'torch', got {cfg.backend!r}")
        n_in = 1 + (2 + 3 * cfg.anchor_gradients) * cfg.given_inputs  # z_t [+ anchor inputs]
        n_field = 2 * cfg.patch_t * cfg.patch * cfg.patch * cfg.camera_field  # (dx, dy) per cell
        self.patch_in = nn.Linear(cfg.patch_dim * n_in + n_field, d)
        # the field also joins each token's adaLN conditioning (``camera_field``)
        self.field_mlp = (
            nn.Sequential(nn.Linear(n_field, d), nn.SiLU(), nn.Linear(d, d))
            if cfg.camera_field
            else None
        )
        self.pos_t = nn.Embedding(cfg.max_t // cfg.patch_t, d)
        self.pos_h = nn.Embedding(cfg.max_h // cfg.patch, d)
        self.pos_w = nn.Embedding(cfg.max_w // cfg.patch, d)
        self.t_mlp = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.text = nn.Linear(cfg.text_dim, cfg.text_tokens * d)
        self.text_norm = nn.LayerNorm(d)
        self.camera = (
            nn.Sequential(nn.Linear(cfg.camera_dim, d), nn.SiLU(), nn.Linear(d, d))
            if cfg.camera_dim
            else None
        )
        # adaLN-zero: per layer shift / scale / gate for self-attn, cross-attn and MLP
        self.ada = nn.ModuleList(nn.Linear(d, 9 * d) for _ in range(cfg.num_layers))
        self.final_ada = nn.Linear(d, 2 * d)
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False)
        self.patch_out = nn.Linear(d, cfg.patch_dim)
        for m in [*self.ada, self.final_ada, self.patch_out]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        for e in (self.pos_t, self.pos_h, self.pos_w):
            nn.init.normal_(e.weight, std=0.02)
        # per-channel latent statistics of the training cache (set by the trainer, saved
        # with the weights): the model works on standardised latents
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))
        # whitening of the camera-phrase embeddings over the training captions (set by the
        # trainer): MiniLM embeds "pan to the left" and "... right" at cosine 0.98, so
        # whitened, their difference is as large as pan vs. zoom from the first step
        if cfg.camera_dim:
            self.register_buffer("camera_mean", torch.zeros(cfg.camera_dim))
            self.register_buffer("camera_white", torch.eye(cfg.camera_dim))

    def sharded_state_dict(self, prefix: str = "", sharded_offsets=(), metadata=None) -> dict:
        from worldmill.training import megatron as mc

        return mc.sharded_state_dict(self, prefix)  # megatron block keeps its TP sharding

    @torch.no_grad()
    def set_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(std.clamp_min(1e-4))

    @torch.no_grad()
    def set_camera_stats(self, cams: torch.Tensor, ridge: float = 0.01) -> None:
        """ZCA whitening of camera-phrase embeddings ``cams`` ``(N, camera_dim)`` (the
        training captions'; rows of zeros, no phrase, are left out): ``(e - mean) @ W``,
        ``W = (cov + ridge * max_eig)^(-1/2)`` (the ridge keeps directions the captions do
        not span from being blown up)."""
        cams = cams[cams.abs().sum(1) > 0].double()
        if len(cams) < 2:
            return
        mean = cams.mean(0)
        cov = (cams - mean).T @ (cams - mean) / len(cams)
        ev, vec = torch.linalg.eigh(cov)
        inv = (ev.clamp_min(0) + ridge * ev.max()).rsqrt()
        self.camera_mean.copy_(mean)
        self.camera_white.copy_(vec @ torch.diag(inv) @ vec.T)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) raw -> standard
        return (x - self.latent_mean[:, None, None, None]) / self.latent_std[:, None, None, None]

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_std[:, None, None, None] + self.latent_mean[:, None, None, None]

    # -- the denoiser ----------------------------------------------------------------------

    def caption(self, text: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-attention context ``(K, B, D)``, camera vector ``(B, D)``) of the
        conditioning ``text`` ``(B, text_dim [+ camera_dim [+ MOTION_DIM]])``; None = the
        null caption."""
        c = self.cfg
        if text is None:
            text = self.latent_mean.new_zeros(batch, c.text_dim + c.camera_dim)
        text = text.float()
        ctx = rearrange(self.text(text[:, : c.text_dim]), "b (k d) -> k b d", k=c.text_tokens)
        cam = text[:, c.text_dim : c.text_dim + c.camera_dim]  # (B, camera_dim) or empty
        if self.camera is None:
            return self.text_norm(ctx), ctx.new_zeros(batch, c.hidden_size)
        if cam.shape[1] < c.camera_dim:  # a caption without its camera phrase
            cam = F.pad(cam, (0, c.camera_dim - cam.shape[1]))
        named = cam.abs().sum(1, keepdim=True) > 0  # no phrase (or null caption): stays 0
        cam = torch.where(named, (cam - self.camera_mean) @ self.camera_white, 0.0)
        return self.text_norm(ctx), self.camera(cam)

    def denoise(
        self, z_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor | None
    ) -> torch.Tensor:
        """``x_0`` prediction ``(B, C, T, H, W)`` (standardised latents) from noisy latents
        ``z_t`` at per-frame noise levels ``t`` ``(B, T)`` (0 = a given, clean frame)."""
        c = self.cfg
        b, _, T, H, W = z_t.shape
        pt, p = c.patch_t, c.patch
        if T % pt or H % p or W % p or T > c.max_t or H > c.max_h or W > c.max_w:
            raise ValueError(
                f"latent window {T}x{H}x{W} must be divisible by the patch ({pt}x{p}x{p}) "
                f"and within the model's {c.max_t}x{c.max_h}x{c.max_w}"
            )
        tt, hh, ww = T // pt, H // p, W // p
        anchor = last_given(z_t, t)
        x = z_t
        if c.given_inputs:  # (B, 3C, T, H, W): every cell sees its anchor and motion cue
            x = torch.cat([z_t, anchor, given_change(z_t, t)], 1)
            if c.anchor_gradients:  # (B, 6C, T, H, W)
                x = torch.cat([x, spatial_gradients(anchor)], 1)
        if c.camera_field:  # (B, n C + 2, T, H, W): the prompt's displacement at every cell
            field = camera_field(motion_code(text, c.text_dim), t, H, W)  # (B, 2, T, H, W)
            x = torch.cat([x, field], 1)
        x = rearrange(x, "b c (t i) (h j) (w k) -> b (t h w) (c i j k)", i=pt, j=p, k=p)
        x = self.patch_in(x)  # (B, N, D)
        pos = (
            self.pos_t.weight[:tt, None, None]
            + self.pos_h.weight[None, :hh, None]
            + self.pos_w.weight[None, None, :ww]
        )  # (tt, hh, ww, D)
        x = rearrange(x, "b n d -> n b d") + rearrange(pos, "t h w d -> (t h w) 1 d")
        # per token-frame noise level: the noisiest of its patch_t frames
        t_tok = rearrange(t, "b (t i) -> b t i", i=pt).amax(-1)  # (B, tt)
        context, camera = self.caption(text, b)  # (K, B, D), (B, D)
        cond = self.t_mlp(timestep_features(t_tok, c.freq_dim))  # (B, tt, D)
        cond = repeat(cond + camera[:, None], "b t e -> b (t s) e", s=hh * ww)  # (B, N, D)
        if c.camera_field:  # spatially varying adaLN: each token's own displacement
            cond = cond + self.field_mlp(
                rearrange(field, "b c (t i) (h j) (w k) -> b (t h w) (c i j k)", i=pt, j=p, k=p)
            )
        cond = F.silu(cond)
        per_tok = lambda m: rearrange(m, "b n e -> n b e")  # noqa: E731
        for layer, ada in zip(self.block.layers, self.ada, strict=True):
            mods = per_tok(ada(cond)).chunk(9, -1)  # (N, B, D) each
            h = _modulate(layer.input_layernorm(x), mods[0], mods[1])
            x = x + mods[2] * _out(layer.self_attention(h, attention_mask=None))
            h = _modulate(layer.pre_cross_attn_layernorm(x), mods[3], mods[4])
            att = layer.cross_attention(h, attention_mask=None, key_value_states=context)
            x = x + mods[5] * _out(att)
            h = _modulate(layer.pre_mlp_layernorm(x), mods[6], mods[7])
            x = x + mods[8] * _out(layer.mlp(h))
        shift, scale = per_tok(self.final_ada(cond)).chunk(2, -1)
        out = self.patch_out(_modulate(self.final_norm(x), shift, scale))  # (N, B, patch_dim)
        delta = rearrange(
            out, "(t h w) b (c i j k) -> b c (t i) (h j) (w k)",
            t=tt, h=hh, w=ww, i=pt, j=p, k=p,
        )  # fmt: skip
        return anchor + delta

    # -- training --------------------------------------------------------------------------

    def draw(self, x: torch.Tensor, gen: torch.Generator | None = None) -> dict:
        """The random parts of one training step for latents ``x`` ``(B, C, T, H, W)``:
        noise, the noise level of the denoised frames, how many leading frames are given
        (0 = Text2World) and which captions are dropped. ``gen`` None = torch's global RNG
        (checkpointed per rank by the loop, so a resumed run draws the same)."""
        b, _, T = x.shape[:3]
        dev = x.device
        u = torch.rand(b, 4, generator=gen, device=dev)
        noise = torch.randn(x.shape, generator=gen, device=dev)
        logit = self.cfg.logit_mean + self.cfg.logit_std * torch.randn(b, generator=gen, device=dev)
        t = torch.where(u[:, 3] < self.cfg.t1_prob, torch.ones_like(logit), torch.sigmoid(logit))
        given = 1 + (u[:, 1] * (T - 1)).long().clamp_max(T - 2)  # 1 .. T-1
        given = torch.where(u[:, 0] < self.cfg.t2w_prob, torch.zeros_like(given), given)
        return {"noise": noise, "t": t, "given": given,
                "drop": u[:, 2] < self.cfg.cond_drop}  # fmt: skip

    def forward(self, x: torch.Tensor, text: torch.Tensor, draw: dict | None = None, decode=None):
        """Mean ``x_0`` MSE over the noisy frames of raw latents ``x`` ``(B, C, T, H, W)``
        with conditioning ``text`` ``(B, text_dim [+ camera_dim])``, plus the pixel term when
        ``decode`` (the frozen tokenizer's raw latents -> pixels) is given. The model owns
        its loss; ``self.terms`` holds the two parts of the last call (floats, for logs)."""
        z = self.normalise(x.float())
        d = draw or self.draw(z)
        T = z.shape[2]
        noisy = torch.arange(T, device=z.device)[None] >= d["given"][:, None]  # (B, T)
        t = d["t"][:, None] * noisy  # (B, T): 0 on given frames
        tb = t[:, None, :, None, None]
        z_t = (1 - tb) * z + tb * d["noise"]
        text = torch.where(d["drop"][:, None], torch.zeros_like(text), text.float())
        x0 = self.denoise(z_t, t, text)
        sq = (x0 - z).pow(2)  # (B, C, T, H, W)
        err = (sq * self.channel_weight()[:, None, None, None]).sum(1).mean((2, 3))  # (B, T)
        loss = (err * noisy).sum() / noisy.sum().clamp_min(1)
        # both keys always (ranks all-reduce the logged scalars by name)
        self.terms = {"loss_latent": float(loss), "loss_pixel": 0.0}
        if decode is not None and self.cfg.pixel_loss > 0 and T >= 2:
            pix = self.pixel_error(x, x0, d["given"], decode)
            if pix is not None:
                loss = loss + self.cfg.pixel_loss * pix
                self.terms["loss_pixel"] = float(pix)
        return loss

    def pixel_error(self, x, x0, given, decode) -> torch.Tensor | None:
        """Pixel MSE of predictions ``x0`` (standardised) against the true raw latents ``x``
        ``(B, C, T, H, W)``, both decoded by ``decode`` after one true latent frame (the
        decoder is causal: that frame is all the context the new frames' pixels read beyond
        themselves, to a close approximation), the mean over ``pixel_samples`` Video2World
        samples (``given`` ``(B,)`` >= 1) of each one's MSE; None if there is none:

        * ``pixel_samples - pixel_first`` with the most given frames: their last frame,
          after the true frame before it (next-frame prediction, what ``psnr`` scores);
        * ``pixel_first`` with the fewest: every predicted frame, after the last given
          one (from one given frame: the whole camera move the prompt names; in latent
          units the sub-cell move of the fine-detail channels is unpredictable noise, so
          only pixels show whether the frame's detail moved).

        The target is clamped to [-1, 1] like the pixels the metrics read, the prediction is
        not (so an out-of-range pixel still has a gradient back into range)."""
        order = torch.argsort(given, descending=True, stable=True)
        valid = order[given[order] > 0]
        n_first = min(self.cfg.pixel_first, self.cfg.pixel_samples)
        top = valid[: self.cfg.pixel_samples - n_first]
        rest = valid[len(top) :]
        first = rest[torch.argsort(given[rest], stable=True)][:n_first]  # fewest given first
        errs = []
        if len(top):
            prev, true = x[top, :, -2:-1].float(), x[top, :, -1:].float()  # (b, C, 1, H, W)
            errs.append(self._decoded_error(prev, true, self.denormalise(x0[top, :, -1:]), decode))
        for i in first.tolist():
            g = int(given[i])
            prev, true = x[i : i + 1, :, g - 1 : g].float(), x[i : i + 1, :, g:].float()
            errs.append(
                self._decoded_error(prev, true, self.denormalise(x0[i : i + 1, :, g:]), decode)
            )
        return torch.cat(errs).mean() if errs else None

    @staticmethod
    def _decoded_error(prev, true, pred, decode) -> torch.Tensor:
        """``(b,)`` pixel MSE of raw latent frames ``pred`` vs ``true`` ``(b, C, k, H, W)``,
        each decoded after the true frame ``prev`` ``(b, C, 1, H, W)``."""
        with torch.no_grad():
            want = decode(torch.cat([prev, true], 2))[:, :, 1:].clamp(-1, 1)  # (b, 3, k t_c, ..)
        got = decode(torch.cat([prev, pred], 2))[:, :, 1:]
        return (got - want).pow(2).mean((1, 2, 3, 4))

    def channel_weight(self) -> torch.Tensor:
        """``(C,)`` loss weights summing to 1 (``cfg.loss_weight``)."""
        if self.cfg.loss_weight == "uniform":
            return torch.full_like(self.latent_std, 1 / self.cfg.latent_channels)
        var = self.latent_std.pow(2)
        return var / var.sum()

    # -- sampling --------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        context: torch.Tensor | None,
        frames: int,
        text: torch.Tensor | None,
        hw: tuple[int, int] | None = None,
        steps: int = 8,
        guidance: float = 1.0,
        shift: float = 1.0,
        seed: int = 0,
    ) -> torch.Tensor:
        """Raw latents ``(B, C, T0 + frames, H, W)``: the given raw latent frames
        ``context`` ``(B, C, T0, H, W)`` (None or ``T0 = 0``: Text2World, ``hw`` and
        ``text`` give size and batch) followed by ``frames`` generated ones.

        Deterministic for a seed: Euler steps of the flow ODE from ``t = 1`` to 0 on the
        grid ``shift * s / (1 + (shift - 1) * s)`` (``shift`` > 1 spends more steps at
        high noise); ``guidance`` g != 1 adds the null-caption call."""
        dev = self.latent_mean.device
        c = self.cfg
        if context is None:
            b = text.shape[0] if text is not None else 1
            context = torch.zeros(b, c.latent_channels, 0, *(hw or (c.max_h, c.max_w)), device=dev)
        b, _, t0, H, W = context.shape
        T = t0 + frames
        gen = torch.Generator(device=dev).manual_seed(seed)
        z = torch.randn(b, c.latent_channels, T, H, W, generator=gen, device=dev)
        z[:, :, :t0] = self.normalise(context.to(dev).float())
        noisy = (torch.arange(T, device=dev) >= t0)[None].expand(b, -1)
        s = torch.linspace(1, 0, steps + 1, device=dev)
        grid = shift * s / (1 + (shift - 1) * s)
        if text is not None:
            text = text.to(dev).float()
        for i in range(steps):
            t_now, t_next = grid[i], grid[i + 1]
            t = t_now * noisy
            x0 = self.denoise(z, t, text)
            if guidance != 1.0:
                x0_null = self.denoise(z, t, None)
                x0 = x0_null + guidance * (x0 - x0_null)
            ratio = t_next / t_now  # x_next = x0 + t_next * eps_hat, eps_hat = (x - x0) / t
            z_new = ratio * z + (1 - ratio) * x0
            z = torch.where(noisy[:, None, :, None, None], z_new, z)
        return self.denormalise(z)

    @torch.no_grad()
    def text2world(
        self, text: torch.Tensor | None, frames: int, hw: tuple[int, int] | None = None,
        first_frame: bool = True, **kw,
    ) -> torch.Tensor:  # fmt: skip
        """Raw latents ``(B, C, frames, H, W)`` from captions alone (``sample``'s keywords).

        ``first_frame`` (Cosmos-Predict2's Text2World = Text2Image, then Video2World): of a
        joint sample only the first latent frame is kept, and the others are sampled again
        given it, so they start from "copy the frame before" (the output's anchor) and the
        caption has only the motion left to decide; else the joint sample as is."""
        out = self.sample(None, frames, text, hw=hw, **kw)
        if first_frame and frames > 1:
            out = self.sample(out[:, :, :1], frames - 1, text, **kw)
        return out


def _latest_given(t: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` index of the latest given frame (``t == 0``) at or before each frame, -1
    where none is."""
    T = t.shape[1]
    return torch.where(t == 0, torch.arange(T, device=t.device)[None], -1).cummax(1).values


def _frames_at(z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``z[:, :, idx]`` per batch row, zero where ``idx`` is -1. ``(B, C, T, H, W)``."""
    b, c, _, h, w = z.shape
    got = torch.gather(z, 2, repeat(idx.clamp_min(0), "b t -> b c t h w", c=c, h=h, w=w))
    return got * (idx >= 0)[:, None, :, None, None]


def last_given(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)``: for every frame, the latest given frame (``t == 0``) at or
    before it, zero where none is (the anchor the denoiser's output is added to)."""
    return _frames_at(z_t, _latest_given(t))


def given_change(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)``: for every frame, its anchor (``last_given``) minus the given
    frame before the anchor; zero where there are not two given frames (a motion cue)."""
    idx = _latest_given(t)
    prev = torch.gather(idx, 1, (idx - 1).clamp_min(0))  # latest given before the anchor
    prev = torch.where(idx >= 1, prev, -1)
    return torch.where(
        (prev >= 0)[:, None, :, None, None], _frames_at(z_t, idx) - _frames_at(z_t, prev), 0.0
    )


def motion_code(text: torch.Tensor | None, text_dim: int = TEXT_DIM) -> torch.Tensor | None:
    """``(B, MOTION_DIM)`` motion code of conditioning vectors ``text`` (columns
    ``2 text_dim ..``, see ``MOTION_DIM``); zeros when ``text`` is narrower, None for None
    (the null caption)."""
    if text is None:
        return None
    code = text[:, 2 * text_dim : 2 * text_dim + MOTION_DIM].float()
    return F.pad(code, (0, MOTION_DIM - code.shape[1]))


def camera_field(code: torch.Tensor | None, t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(B, 2, T, h, w)`` content displacement (dx, dy) the motion ``code`` ``(B, 3)``
    implies at every latent cell of every frame, relative to the frame's anchor (its latest
    given frame; frame 0 when none is given): ``(frame - anchor) * (vx + zoom * x, vy +
    zoom * y)``, ``x, y`` about the window centre in half-windows (unit speed: the model
    learns the scale). Zero for a given frame, a zero code and the null caption (None)."""
    b, T = t.shape
    if code is None:
        return t.new_zeros(b, 2, T, h, w)
    frames = torch.arange(T, device=t.device, dtype=t.dtype)[None]
    since = frames - _latest_given(t).clamp_min(0).to(t.dtype)  # (B, T) frames since anchor
    half = max(h, w) / 2
    ys = (torch.arange(h, device=t.device, dtype=t.dtype) - (h - 1) / 2) / half
    xs = (torch.arange(w, device=t.device, dtype=t.dtype) - (w - 1) / 2) / half
    vx, vy, zoom = (code[:, i, None, None].to(t.dtype) for i in range(3))  # (B, 1, 1)
    fx = (vx + zoom * xs[None, None, :]).expand(b, h, w)
    fy = (vy + zoom * ys[None, :, None]).expand(b, h, w)
    return torch.stack([fx, fy], 1)[:, :, None] * since[:, None, :, None, None]


def spatial_gradients(z: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B, 3C, T, H, W)``: central differences along x (W) and y
    (H), edges replicated, and the radial derivative ``(x - cx) d/dx + (y - cy) d/dy`` about
    the window centre, in latent cells (the first-order change of ``z`` under a pan, a tilt
    and a zoom)."""
    p = F.pad(z, (1, 1, 1, 1, 0, 0), mode="replicate")
    gx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
    gy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
    h, w = z.shape[-2:]
    ys = torch.arange(h, device=z.device, dtype=z.dtype)[:, None] - (h - 1) / 2
    xs = torch.arange(w, device=z.device, dtype=z.dtype)[None, :] - (w - 1) / 2
    return torch.cat([gx, gy, xs * gx + ys * gy], 1)
