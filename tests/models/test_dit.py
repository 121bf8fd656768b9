"""Diffusion world model (tiny config): the shared model tester, given frames kept by the
sampler, the untrained model predicting "copy the last given frame", the loss training,
guidance, and the megatron block and its plain-torch twin having the same size."""

from __future__ import annotations

import pytest
import torch

from tests.models.tester import ModelTester
from worldmill.models.dit import (
    PRESETS,
    DiTWorldModel,
    camera_field,
    given_change,
    last_given,
    preset,
)

TINY = PRESETS["tiny"]  # 4 latent channels, 3 x 4 x 4 windows, 2 layers of width 32


@pytest.fixture(scope="module", autouse=True)
def megatron_group():
    from worldmill.training import megatron as mc

    with mc.single_process(seed=0):
        yield


def _model(seed: int = 0, cfg=TINY, perturb: bool = True) -> DiTWorldModel:
    """The tiny model; ``perturb`` moves the zero-initialised (adaLN-zero, output) layers
    off zero, as training does, so outputs depend on every weight and on the seed."""
    from worldmill.training import megatron as mc

    mc.seed_rng(seed)
    m = DiTWorldModel(cfg)
    if perturb:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return m


def _latents(b=2, seed=1) -> torch.Tensor:
    return torch.randn(b, 4, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_untrained_model_predicts_the_last_given_frame_and_sampler_keeps_given_frames():
    m = _model(perturb=False).eval()  # adaLN-zero: the network's output starts at zero
    x, text = _latents(), torch.randn(2, 384)
    t = torch.tensor([[0.0, 0.7, 0.7], [0.0, 0.0, 0.7]])
    x0 = m.denoise(x, t, text)
    assert torch.equal(x0[0, :, 1], x[0, :, 0]) and torch.equal(x0[1, :, 2], x[1, :, 1])
    assert torch.equal(last_given(x, torch.full((2, 3), 0.5)), torch.zeros_like(x))
    # the motion cue: the anchor minus the given frame before it (zero with one given frame)
    cue = given_change(x, t)
    torch.testing.assert_close(cue[1, :, 2], x[1, :, 1] - x[1, :, 0])
    assert torch.equal(cue[0], torch.zeros_like(cue[0]))
    trained = _model(3).eval()
    out = trained.sample(x[:, :, :2], 1, text, steps=3, guidance=3.0, seed=5)
    assert out.shape == (2, 4, 3, 4, 4)
    torch.testing.assert_close(out[:, :, :2], x[:, :, :2])  # given frames come back
    again = trained.sample(x[:, :, :2], 1, text, steps=3, guidance=3.0, seed=5)
    assert torch.equal(out, again)  # deterministic for a seed
    g1 = trained.sample(x[:, :, :2], 1, text, steps=3, guidance=1.0, seed=5)
    assert (g1 - out).abs().max() > 1e-4  # guidance changes the sample
    t2w = trained.sample(None, 3, text, hw=(4, 4), steps=2, seed=5)
    assert t2w.shape == (2, 4, 3, 4, 4) and torch.isfinite(t2w).all()


def test_loss_trains_and_the_caption_conditions():
    x, text = _latents(4), torch.randn(4, 384)
    m = _model(0, perturb=False).train()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    draws = [m.draw(m.normalise(x), g) for _ in range(4)]
    first = float(m(x, text, draws[0]))
    for i in range(40):  # memorise one batch under four fixed draws
        loss = m(x, text, draws[i % 4])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(m(x, text, draws[0])) < 0.7 * first
    with torch.no_grad():
        t = torch.full((4, 3), 0.9)
        a, b = m.denoise(x, t, text), m.denoise(x, t, torch.randn(4, 384))
    assert (a - b).abs().max() > 1e-4


def test_megatron_block_and_torch_twin_have_the_same_parameters():
    mg, tw = _model(0), _model(0, preset("tiny", backend="torch"))
    assert sum(p.numel() for p in mg.parameters()) == sum(p.numel() for p in tw.parameters())
    with torch.no_grad():
        assert tw.denoise(_latents(), torch.rand(2, 3), None).shape == (2, 4, 3, 4, 4)
    with pytest.raises(ValueError, match="divisible"):
        mg.denoise(torch.randn(1, 4, 3, 3, 3), torch.rand(1, 3), None)


class TestDiTWorldModel(ModelTester):
    """The shared model tester on the tiny DiT (a megatron-core TransformerBlock)."""

    def tiny_model(self, seed: int = 0) -> DiTWorldModel:
        return _model(seed)

    def inputs(self, gen: torch.Generator) -> dict:
        x = torch.randn(2, 4, 3, 4, 4, generator=gen)  # (B, C, T, H, W) raw latents
        return {
            "x": x,
            "text": torch.randn(2, 384, generator=gen),
            "seed": int(x[0, 0, 0, 0, 0] * 1e6),
        }

    def loss(self, model, x: dict) -> torch.Tensor:
        m = model.module if hasattr(model, "module") else model
        draw = m.draw(x["x"], torch.Generator().manual_seed(x["seed"]))  # fixed per input
        return model(x["x"], x["text"], draw)

    def outputs(self, model, x: dict) -> torch.Tensor:
        t = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.0, 0.9]])  # per-frame noise levels
        return model.denoise(x["x"], t, x["text"])  # (B, C, T, H, W) x0 prediction


def test_variance_loss_weight_is_the_mse_in_raw_latent_units():
    x, text = _latents(), torch.randn(2, 384)
    std = torch.tensor([4.0, 2.0, 1.0, 0.5])
    losses = {}
    for how in ("variance", "uniform"):
        m = _model(0, preset("tiny", loss_weight=how))
        m.set_latent_stats(torch.zeros(4), std)
        d = m.draw(m.normalise(x), torch.Generator().manual_seed(3))
        losses[how] = float(m(x, text, d))
        with torch.no_grad():  # by hand: the x0 error of the noisy frames (given: 1 or 2)
            z = m.normalise(x)
            noisy = torch.arange(3)[None] >= d["given"][:, None]
            tb = (d["t"][:, None] * noisy)[:, None, :, None, None]
            z_t = (1 - tb) * z + tb * d["noise"]
            t_drop = torch.where(d["drop"][:, None], torch.zeros_like(text), text)
            raw = m.denormalise(m.denoise(z_t, tb[:, 0, :, 0, 0], t_drop)) - x  # raw units
            if how == "variance":  # squared raw error over the channels' total variance
                err = raw.pow(2).sum(1).mean((2, 3)) / std.pow(2).sum()
            else:  # mean squared standardised error
                err = (raw / std[:, None, None, None]).pow(2).mean((1, 3, 4))
            torch.testing.assert_close(losses[how], float((err * noisy).sum() / noisy.sum()))
    assert losses["variance"] != losses["uniform"]
    with pytest.raises(ValueError, match="loss_weight"):
        DiTWorldModel(preset("tiny", loss_weight="pixels"))


def test_text2world_first_frame_then_video2world():
    m, text = _model(2).eval(), torch.randn(2, 384)
    joint = m.text2world(text, 3, (4, 4), first_frame=False, steps=2, seed=1)
    torch.testing.assert_close(joint, m.sample(None, 3, text, hw=(4, 4), steps=2, seed=1))
    two = m.text2world(text, 3, (4, 4), steps=2, seed=1)  # the joint sample's frame 0 kept
    assert two.shape == (2, 4, 3, 4, 4)
    torch.testing.assert_close(two[:, :, :1], joint[:, :, :1])
    assert (two[:, :, 1:] - joint[:, :, 1:]).abs().max() > 1e-4


def _decoder():
    """A real (random-weight) CV tokenizer with 4 latent channels, frozen: its decoder is what
    the pixel loss differentiates through (8 px per latent cell, 4 frames per latent frame)."""
    from worldmill.models.tokenizer import CausalVideoTokenizer, TokenizerConfig

    torch.manual_seed(0)
    tok = CausalVideoTokenizer(TokenizerConfig(channels=8, latent_channels=4)).eval()
    with torch.no_grad():  # the conv residual starts at zero: move it off, as training does
        for p in tok.decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return tok.requires_grad_(False)


def test_pixel_loss_decodes_the_last_frame_after_the_true_frame_before_it():
    tok, x, text = _decoder(), _latents(4), torch.randn(4, 768)
    m = _model(0, cfg=preset("tiny", pixel_first=0, pixel_samples=2)).train()
    # sample 0 is Text2World (no pixel term); pixel_samples = 2: the most given first,
    # ties in batch order, so samples 2 and 1
    given = torch.tensor([0, 1, 2, 1])
    assert m.cfg.pixel_samples == 2
    z = m.normalise(x)
    # a perfect prediction: only the target's clamp to [-1, 1] (the pixels the metric reads;
    # the prediction is not clamped, so it keeps its gradient) is left
    full = tok.decode(torch.cat([x[1:3, :, 1:2], x[1:3, :, 2:3]], 2))[:, :, 1:]
    torch.testing.assert_close(
        m.pixel_error(x, z, given, tok.decode), (full - full.clamp(-1, 1)).pow(2).mean()
    )
    assert m.pixel_error(x, z, torch.zeros(4, dtype=torch.long), tok.decode) is None
    copy = torch.cat([z[:, :, :-1], z[:, :, -2:-1]], 2)  # "copy the frame before" predicted
    prev, true = x[1:3, :, 1:2], x[1:3, :, 2:3]
    want = tok.decode(torch.cat([prev, true], 2))[:, :, 1:].clamp(-1, 1)
    got = tok.decode(torch.cat([prev, prev], 2))[:, :, 1:]
    torch.testing.assert_close(
        m.pixel_error(x, copy, given, tok.decode), (got - want).pow(2).mean()
    )
    # the default, pixel_first = 1: sample 2 (most given) by its last frame, and sample 1
    # (fewest given, ties in batch order) by all its predicted frames after its given one;
    # the mean of the two samples' errors
    assert PRESETS["cpu"].pixel_samples == 3 and PRESETS["cpu"].pixel_first == 1
    m1 = _model(0, cfg=preset("tiny", pixel_samples=2)).train()
    want1 = tok.decode(x[1:2, :, :3])[:, :, 1:].clamp(-1, 1)  # frames 1, 2 after frame 0
    got1 = tok.decode(x[1:2, :, [0, 1, 1]])[:, :, 1:]  # what `copy` predicts for sample 1
    two = torch.stack([(got[1] - want[1]).pow(2).mean(), (got1 - want1).pow(2).mean()])
    torch.testing.assert_close(m1.pixel_error(x, copy, given, tok.decode), two.mean())
    d = m.draw(z, torch.Generator().manual_seed(0))
    d["given"] = given
    plain, with_px = m(x, text, d), m(x, text, d, decode=tok.decode)
    assert m.terms["loss_pixel"] > 0
    torch.testing.assert_close(float(with_px - plain), m.cfg.pixel_loss * m.terms["loss_pixel"])
    m.zero_grad()
    (with_px - plain).backward()  # the pixel term alone reaches the DiT, not the decoder
    assert m.patch_out.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in tok.parameters())


def test_camera_phrase_is_whitened_and_conditions_every_token():
    m = _model(1).eval()
    g = torch.Generator().manual_seed(0)
    base = torch.randn(384, generator=g)
    left, right = (
        base + 0.1 * torch.randn(384, generator=g),
        base + 0.1 * torch.randn(384, generator=g),
    )
    zoom = torch.randn(384, generator=g)
    m.set_camera_stats(torch.stack([left, right, zoom, torch.zeros(384)] * 3))
    white = (torch.stack([left, right, zoom]) - m.camera_mean) @ m.camera_white
    cos = torch.nn.functional.cosine_similarity(white[0], white[1], 0)
    assert torch.nn.functional.cosine_similarity(left, right, 0) > 0.98 and cos < 0.5
    x, text = _latents(), torch.randn(2, 384)
    t = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.0, 0.9]])
    with torch.no_grad():  # no camera phrase (zeros) = a caption without one
        alone = m.denoise(x, t, text)
        torch.testing.assert_close(
            m.denoise(x, t, torch.cat([text, torch.zeros(2, 384)], 1)), alone
        )
        a = m.denoise(x, t, torch.cat([text, left.expand(2, -1)], 1))
        b = m.denoise(x, t, torch.cat([text, right.expand(2, -1)], 1))
    assert (a - b).abs().amax((1, 2, 3, 4)).min() > 1e-4  # in every sample


def test_camera_field_is_the_named_motion_per_cell_since_the_anchor_and_conditions():
    code = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # pan left; zoom out
    t = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.0, 0.5]])  # 1 and 2 given frames
    f = camera_field(code, t, 4, 4)  # (B, 2, T, H, W)
    assert f.shape == (2, 2, 3, 4, 4)
    assert not f[0, :, 0].any() and not f[1, :, :2].any()  # given frames: no displacement
    assert torch.equal(f[0, 0, 2], 2 * f[0, 0, 1]) and (f[0, 0, 1] == 1).all()  # uniform
    assert not f[0, 1].any()
    # zoom out: content moves towards the centre, in proportion to the distance from it
    assert (f[1, 0, 2, :, 0] > 0).all() and (f[1, 0, 2, :, 3] < 0).all()
    torch.testing.assert_close(f[1, 0, 2, 0], -torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert not camera_field(None, t, 4, 4).any()  # the null caption: no field
    m = _model(2).eval()
    x, text = _latents(), torch.randn(2, 771)
    with torch.no_grad():
        text[:, 768:] = code
        a = m.denoise(x, t, text)
        text[:, 768:] = -code
        b = m.denoise(x, t, text)
    assert (a - b)[:, :, 1:].abs().amax((1, 2, 3, 4)).min() > 1e-4  # the code conditions
