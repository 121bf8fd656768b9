"""AR world model (tiny config): determinism, causality, KV-cached == uncached sampling,
top-k / top-p, checkpoint round trip, and the 4B / 12B presets' size from the config."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.models.tester import ModelTester
from worldmill.models.ar import (
    PRESETS,
    ARWorldModel,
    calibrate,
    fit_calibration,
    positions,
    sample_logits,
)

TINY = PRESETS["tiny"]  # vocab 64, 4 x 4 x 4 positions, 2 layers of width 32


@pytest.fixture(scope="module", autouse=True)
def megatron_group():
    """A 1-process megatron-core group for this module, torn down (and its environment
    restored) afterwards so later tests start their own."""
    from worldmill.training import megatron as mc

    with mc.single_process(seed=0):
        yield


def _model(seed: int = 0, cfg=TINY) -> ARWorldModel:
    from worldmill.training import megatron as mc

    mc.seed_rng(seed)
    return ARWorldModel(cfg).eval()


def _tokens(b=2, t=3, h=4, w=4, seed=1) -> torch.Tensor:
    return torch.randint(
        0, TINY.vocab_size, (b, t, h, w), generator=torch.Generator().manual_seed(seed)
    )


def test_same_seed_same_model_same_loss_and_loss_trains():
    toks, text = _tokens(), torch.randn(2, 384)
    a, b = _model(0), _model(0)
    with torch.no_grad():
        la, lb = a(toks, text), b(toks, text)
    assert torch.equal(la, lb)
    assert abs(float(la) - torch.log(torch.tensor(64.0))) < 0.5  # ~uniform at init
    m = _model(0).train()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):  # memorise one batch: the loss must fall
        loss = m(toks, text)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses


def test_causal_later_tokens_do_not_change_earlier_logits_and_caption_conditions():
    m = _model(0)
    toks, text = _tokens(b=1), torch.randn(1, 384)
    changed = toks.clone()
    changed[0, 2, 1, 3] = (changed[0, 2, 1, 3] + 7) % 64  # token index 2*16 + 1*4 + 3 = 39
    with torch.no_grad():
        a, b = m.logits(toks, text), m.logits(changed, text)
        c = m.logits(toks, torch.randn(1, 384))
    i = 39
    # the logits at position j predict token j from tokens < j: up to and including 39 equal
    torch.testing.assert_close(a[:, : i + 1], b[:, : i + 1], atol=1e-5, rtol=0)
    assert (a[:, i + 1 :] - b[:, i + 1 :]).abs().max() > 1e-4
    assert (a - c).abs().max() > 1e-4  # another caption, other predictions


def test_positions_are_raster_order():
    p = positions(2, 2, 3)
    assert p.shape == (12, 3)
    assert p[0].tolist() == [0, 0, 0] and p[4].tolist() == [0, 1, 1] and p[11].tolist() == [1, 1, 2]


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.0, 0, 1.0), (1.0, 0, 1.0), (0.9, 8, 0.9)])
def test_kv_cached_sampling_gives_the_same_tokens_as_uncached(temperature, top_k, top_p):
    m = _model(3)
    ctx, text = _tokens(b=2, t=1), torch.randn(2, 384)
    kw = dict(temperature=temperature, top_k=top_k, top_p=top_p, seed=11)
    cached = m.sample(ctx, 2, text, use_cache=True, **kw)
    plain = m.sample(ctx, 2, text, use_cache=False, **kw)
    assert cached.shape == (2, 3, 4, 4)
    assert torch.equal(cached[:, :1], ctx)  # the context is kept
    assert torch.equal(cached, plain)
    again = m.sample(ctx, 2, text, use_cache=True, **kw)
    assert torch.equal(cached, again)  # a seed gives the same sample
    if temperature > 0:
        other = m.sample(ctx, 2, text, use_cache=True, **{**kw, "seed": 12})
        assert not torch.equal(cached, other)


def test_greedy_sampling_follows_the_logits():
    m = _model(4)
    ctx, text = _tokens(b=1, t=2), torch.randn(1, 384)
    out = m.sample(ctx, 1, text, temperature=0.0)
    with torch.no_grad():
        logits = m.logits(out, text)  # (1, 48, V): position j predicts token j
    assert torch.equal(logits[0, 32].argmax(), out[0, 2, 0, 0])


def test_sampled_probabilities_and_classifier_free_guidance():
    m = _model(6)
    ctx, text = _tokens(b=2, t=2), torch.randn(2, 384)
    out, probs = m.sample(ctx, 1, text, temperature=0.0, return_probs=True)
    assert probs.shape == (2, 1, 4, 4, 64)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 1, 4, 4))
    assert torch.equal(probs.argmax(-1), out[:, 2:])  # greedy = the argmax of each draw's probs
    with torch.no_grad():
        ref = m.logits(out, text)[:, 32:].softmax(-1)  # teacher-forced on the drawn tokens
    torch.testing.assert_close(probs.reshape(2, 16, 64), ref, atol=1e-5, rtol=1e-4)
    kw = dict(temperature=0.9, seed=3)
    plain = m.sample(ctx, 1, text, **kw)
    assert torch.equal(m.sample(ctx, 1, text, guidance=1.0, **kw), plain)
    # guidance 0 = the empty-caption model alone; guidance 3 pushes away from it
    assert torch.equal(m.sample(ctx, 1, text, guidance=0.0, **kw), m.sample(ctx, 1, None, **kw))
    g_out, g3 = m.sample(ctx, 1, text, temperature=0.0, guidance=3.0, return_probs=True)
    with torch.no_grad():
        c, u = m.logits(g_out, text)[:, 32:], m.logits(g_out, None)[:, 32:]
    want = (u + 3.0 * (c - u)).softmax(-1)
    torch.testing.assert_close(g3.reshape(2, 16, 64), want, atol=1e-5, rtol=1e-4)
    assert (g3.reshape(2, 16, 64) - u.softmax(-1)).abs().max() > 1e-6


def test_first_frame_weight_and_caption_dropout_change_the_loss_as_stated():
    toks, text = _tokens(), torch.randn(2, 384)
    m = _model(7, replace(TINY, first_frame_weight=0.0))
    with torch.no_grad():
        nll = torch.nn.functional.cross_entropy(
            m.logits(toks, text).transpose(1, 2), toks.reshape(2, -1), reduction="none"
        )  # (B, 48)
        torch.testing.assert_close(m(toks, text), nll[:, 16:].mean(), atol=1e-5, rtol=1e-5)
    d = _model(7, replace(TINY, caption_dropout=1.0)).train()
    with torch.no_grad():  # every caption dropped in training; eval keeps it
        torch.testing.assert_close(d(toks, text), d(toks, None))
        assert float((d.eval()(toks, text) - d(toks, None)).abs()) > 1e-6


def test_copy_prior_adds_a_learned_gain_on_the_previous_frames_token():
    cfg = replace(TINY, copy_logit=6.0)
    m, plain = _model(8, cfg), _model(8)
    toks, text = _tokens(), torch.randn(2, 384)
    with torch.no_grad():
        lg, ref = m.logits(toks, text), plain.logits(toks, text)  # same weights but the gain
        above = toks.reshape(2, -1)[:, :-16]  # the token one latent frame earlier
        diff = lg - ref
        torch.testing.assert_close(diff[:, :16], torch.zeros_like(diff[:, :16]))  # frame 0
        torch.testing.assert_close(diff[:, 16:].gather(-1, above[..., None]).squeeze(-1),
                                   torch.full((2, 32), 6.0))  # fmt: skip
        assert float(diff[:, 16:].abs().sum()) == pytest.approx(6.0 * 64, rel=1e-4)
        nll = torch.nn.functional.cross_entropy(lg.transpose(1, 2), toks.reshape(2, -1))
        torch.testing.assert_close(m(toks, text), nll)  # the loss scores the same logits
    assert sum(p.numel() for p in m.parameters()) == cfg.num_params()
    out = m.sample(toks[:, :1], 2, text, temperature=0.0)  # a random net: copying wins
    assert torch.equal(out, m.sample(toks[:, :1], 2, text, temperature=0.0, use_cache=False))
    assert torch.equal(out[:, 1], out[:, 0]) and torch.equal(out[:, 2], out[:, 0])


def test_calibration_fits_the_copy_rate_and_reaches_the_sampled_probabilities():
    # logits that put 50 % on the previous frame's token where the truth copies it 90 %
    g = torch.Generator().manual_seed(0)
    n, v = 4000, 16
    above = torch.randint(0, v, (n,), generator=g)
    other = (above + torch.randint(1, v, (n,), generator=g)) % v
    target = torch.where(torch.rand(n, generator=g) < 0.9, above, other)
    logits = torch.zeros(n, v).scatter(1, above[:, None], float(torch.tensor(15.0).log()))
    fit = fit_calibration(logits, above, target)
    p_copy = calibrate(logits, above, fit["copy_bias"], fit["temperature"]).softmax(-1)
    assert float(p_copy.gather(1, above[:, None]).mean()) == pytest.approx(0.9, abs=0.02)
    assert fit["copy_bias"] > 0 and fit["nll_after"] < fit["nll_before"] and fit["tokens"] == n
    assert calibrate(logits, above) is logits  # the default changes nothing
    # frame 0 (above = -1) gets no copy bias, only the temperature
    none = torch.full((n,), -1)
    torch.testing.assert_close(calibrate(logits, none, 5.0, 2.0), logits / 2.0)

    m, text = _model(9, replace(TINY, copy_logit=2.0)), torch.randn(2, 384)
    ctx = _tokens(b=2, t=2)
    out, probs = m.sample(ctx, 1, text, temperature=0.0, return_probs=True,
                          calibration=(1.5, 0.7))  # fmt: skip
    with torch.no_grad():
        flat = out.reshape(2, -1)
        want = calibrate(m.logits(out, text)[:, 32:], flat[:, 16:32], 1.5, 0.7).softmax(-1)
    torch.testing.assert_close(probs.reshape(2, 16, 64), want, atol=1e-5, rtol=1e-4)
    fit = m.fit_calibration(_tokens(b=4, t=3, seed=2), torch.randn(4, 384))
    assert fit["tokens"] == 4 * 2 * 16 and fit["nll_after"] <= fit["nll_before"]


def test_neighbour_copy_mixture_is_a_causal_distribution_starting_near_copy():
    cfg = replace(TINY, copy_logit=6.0, copy_radius=1)
    m, toks, text = _model(10, cfg), _tokens(), torch.randn(2, 384)
    assert sum(p.numel() for p in m.parameters()) == cfg.num_params()
    with torch.no_grad():
        lp = m.logits(toks, text)  # (2, 48, 64) log-probabilities of the mixture
        torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 48))
        above = toks.reshape(2, -1)[:, :-16]
        p_copy = lp[:, 16:].exp().gather(-1, above[..., None])  # untrained: ~ e^6 / (e^6 + 9)
        assert float(p_copy.min()) > 0.95
        # frame 0 has no previous frame: the plain softmax
        plain = m._gpt(m.inputs(toks.reshape(2, -1)[:, :-1], positions(3, 4, 4), text, True))
        torch.testing.assert_close(lp[:, :16], plain[:, 1:17].log_softmax(-1))
        changed = toks.clone()
        changed[:, 2] = (changed[:, 2] + 1) % 64  # frame 2 changes: frames 0, 1 must not
        torch.testing.assert_close(m.logits(changed, text)[:, :32], lp[:, :32])
    loss = m.train()(toks, text)
    loss.backward()
    assert m.copy_head.weight.grad.abs().sum() > 0
    m.eval()
    kw = dict(temperature=0.8, seed=2)
    out = m.sample(toks[:, :1], 2, text, **kw)
    assert torch.equal(out, m.sample(toks[:, :1], 2, text, use_cache=False, **kw))


def test_sampling_from_an_image_token_grid_only_and_size_limits():
    m = _model(5)
    out = m.sample(torch.zeros(1, 0, 4, 4, dtype=torch.long), 2, None, hw=(4, 4), seed=1)
    assert out.shape == (1, 2, 4, 4) and 0 <= int(out.min()) and int(out.max()) < 64
    with pytest.raises(ValueError, match="exceed"):
        m.sample(_tokens(b=1, t=3), 2)  # 5 latent frames > max_t 4


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_logits(logits, 1.0, top_k=2, gen=g).tolist()) == {0, 1}
    p = logits[0].softmax(-1)  # 0.64, 0.24, 0.09, ...: top_p 0.8 keeps ids 0 and 1
    assert float(p[:2].sum()) > 0.8 > float(p[:1].sum())
    assert set(sample_logits(logits, 1.0, top_p=0.8, gen=g).tolist()) == {0, 1}
    assert set(sample_logits(logits, 0.0).tolist()) == {0}
    assert len(set(sample_logits(logits, 1.0, gen=g).tolist())) == 5


def test_checkpoint_round_trip(tmp_path):
    from worldmill.training import checkpoint

    m = _model(0)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    toks, text = _tokens(), torch.randn(2, 384)
    m.train()
    m(toks, text).backward()  # optimizer state to save as well
    opt.step()
    m.eval()
    checkpoint.save(tmp_path, 1, m, opt, samples=2)
    fresh = _model(99)  # other init: only the checkpoint can make the logits equal
    with torch.no_grad():
        assert (fresh.logits(toks, text) - m.logits(toks, text)).abs().max() > 1e-3
        checkpoint.load_model(checkpoint.latest(tmp_path)[0], fresh)
        torch.testing.assert_close(fresh.logits(toks, text), m.logits(toks, text), atol=0, rtol=0)
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    meta = checkpoint.load(checkpoint.latest(tmp_path)[0], fresh, opt2)  # strict, with optimizer
    assert meta["step"] == 1 and len(opt2.state) == len(opt.state)


def test_param_count_from_config_matches_the_built_model():
    for cfg in (TINY, replace(TINY, swiglu=True, rmsnorm=True, num_heads=4, num_query_groups=2)):
        m = _model(0, cfg)
        assert sum(p.numel() for p in m.parameters()) == cfg.num_params()


def test_cosmos_like_presets_are_4b_and_12b():
    """Sized from the config alone (they build on a GPU, not in CPU CI)."""
    b4, b12 = PRESETS["4b"], PRESETS["12b"]
    assert 3.5e9 < b4.num_params() < 4.5e9
    assert 11e9 < b12.num_params() < 13e9
    for cfg in (b4, b12):
        assert cfg.vocab_size == 64_000 and cfg.hidden_size % cfg.num_heads == 0
        assert cfg.num_heads % cfg.groups == 0 and cfg.max_tokens == 5 * 40 * 64


def test_code_init_puts_nearby_fsq_codes_at_nearby_embeddings():
    from worldmill.models.fsq import FSQ

    cfg = replace(TINY, fsq_levels=(4, 4, 4))  # 64 codes = vocab
    emb = _model(0, cfg).gpt.embedding.word_embeddings.weight.detach()
    codes = FSQ([4, 4, 4]).ids_to_codes(torch.arange(64))
    d_code = torch.cdist(codes, codes).flatten()
    d_emb = torch.cdist(emb, emb).flatten()
    near, far = d_code[d_code > 0].min(), d_code.max()
    assert d_emb[d_code == near].mean() < 0.6 * d_emb[d_code == far].mean()
    rand = _model(0).gpt.embedding.word_embeddings.weight.detach()  # plain init: no structure
    d_rand = torch.cdist(rand, rand).flatten()
    assert d_rand[d_code == near].mean() > 0.8 * d_rand[d_code == far].mean()
    with pytest.raises(ValueError, match="codes"):
        _model(0, replace(TINY, fsq_levels=(4, 4)))


class TestARWorldModel(ModelTester):
    """The shared model tester on the tiny AR config (a megatron-core GPTModel)."""

    causal_from = 20  # tokens from flat raster index 20 on change; logits 0..20 must not

    def tiny_model(self, seed: int = 0) -> ARWorldModel:
        from worldmill.training import megatron as mc

        mc.seed_rng(seed)
        return ARWorldModel(TINY)

    def inputs(self, gen: torch.Generator) -> dict:
        tokens = torch.randint(0, TINY.vocab_size, (2, 3, 4, 4), generator=gen)  # (B, T, H, W)
        return {"tokens": tokens, "text": torch.randn(2, 384, generator=gen)}  # MiniLM dims

    def loss(self, model, x: dict) -> torch.Tensor:
        return model(x["tokens"], x["text"])  # next-token cross-entropy

    def outputs(self, model, x: dict) -> torch.Tensor:
        return model.logits(x["tokens"], x["text"])  # (B, L, vocab)

    def perturb_from(self, x: dict, t: int, gen: torch.Generator) -> dict:
        flat = x["tokens"].flatten(1).clone()
        flat[:, t:] = torch.randint(0, TINY.vocab_size, flat[:, t:].shape, generator=gen)
        return {"tokens": flat.view_as(x["tokens"]), "text": x["text"]}

    def before(self, out: torch.Tensor, t: int) -> torch.Tensor:
        return out[:, : t + 1]  # logits j predict token j from tokens < j
