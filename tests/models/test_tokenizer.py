"""Causal video tokenizer and FSQ: shapes, causality, image/video sharing, token round trips."""

import math

import pytest
import torch
from einops import rearrange

from tests.models.tester import ModelTester
from worldmill.models.fsq import FSQ
from worldmill.models.tokenizer import CausalVideoTokenizer, TokenizerConfig
from worldmill.training.kinds.tokenizer import loss_fn


def _tok(**kw) -> CausalVideoTokenizer:
    torch.manual_seed(0)
    return CausalVideoTokenizer(TokenizerConfig(channels=16, **kw)).eval()


@pytest.mark.parametrize("tc,sc", [(4, 8), (8, 8), (4, 16)])
def test_shapes_follow_compression(tc, sc):
    m = _tok(temporal_compression=tc, spatial_compression=sc)
    video = torch.rand(2, 3, 1 + 2 * tc, 32, 48) * 2 - 1
    z, tokens = m.encode(video)
    assert tokens is None
    assert z.shape == (2, 16, 3, 32 // sc, 48 // sc)
    assert m.decode(z).shape == video.shape
    assert m.latent_numel(1 + 2 * tc, 32, 48) == z[0].numel()


def test_encoder_is_causal_and_first_frame_is_an_image():
    m = _tok(temporal_compression=4)
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        z = m.encode(video)[0]  # (1, 16, 3, 4, 4): latent t covers frames <= 4t
        image_z = m.encode(video[:, :, :1])[0]  # a still image is a 1-frame video
        changed = video.clone()
        changed[:, :, 5:] = torch.rand_like(changed[:, :, 5:])  # frames 5..8 -> latent 2 only
        z2 = m.encode(changed)[0]
        recon_image = m.decode(image_z)
    assert image_z.shape[2] == 1 and recon_image.shape == (1, 3, 1, 32, 32)
    torch.testing.assert_close(image_z[:, :, 0], z[:, :, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(z2[:, :, :2], z[:, :, :2], atol=1e-5, rtol=0)
    assert (z2[:, :, 2] - z[:, :, 2]).abs().max() > 1e-3  # and the last one does change


def test_decoder_is_causal():
    m = _tok()
    z = torch.randn(1, 16, 3, 4, 4)
    with torch.no_grad():
        a = m.decode(z)
        z[:, :, 2] += 1
        b = m.decode(z)
    # latent frame 2 decodes to frames 5..8 only
    torch.testing.assert_close(a[:, :, :5], b[:, :, :5], atol=1e-5, rtol=0)
    assert (a[:, :, 5:] - b[:, :, 5:]).abs().max() > 1e-3


def test_dv_tokens_round_trip_through_the_default_2_16_vocab():
    m = _tok(kind="dv")
    assert m.vocab_size == 65_536
    video = torch.rand(2, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        codes, tokens = m.encode(video)
        assert tokens.shape == (2, 2, 4, 4) and tokens.dtype == torch.int64
        assert int(tokens.min()) >= 0 and int(tokens.max()) < 65_536
        torch.testing.assert_close(m.decode_tokens(tokens), m.decode(codes))


def test_bad_shapes_are_rejected_with_a_clear_message():
    m = _tok()
    with pytest.raises(ValueError, match="T = 1 \\+ k\\*4"):
        m.encode(torch.zeros(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="power of two"):
        TokenizerConfig(temporal_compression=3)


def test_fsq_ids_and_codes_are_a_bijection():
    fsq = FSQ([8, 5, 3])
    ids = torch.arange(fsq.codebook_size)
    codes = fsq.ids_to_codes(ids)
    assert codes.abs().max() <= 1
    assert torch.equal(fsq.codes_to_ids(codes), ids)
    # quantising the codes' pre-images lands on the same ids
    z = torch.randn(1000, 3) * 3
    q, qid = fsq(z)
    assert torch.equal(fsq.codes_to_ids(q), qid)
    assert len(torch.unique(qid)) > 50


def test_fsq_passes_gradients_straight_through():
    fsq = FSQ([8, 8, 8, 5, 5, 5])
    z = torch.randn(4, 6, requires_grad=True)
    codes, _ = fsq(z)
    codes.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("tc", [4, 8])
def test_pca_init_makes_the_tokenizer_exact_on_rank_z_block_data(tc):
    """Videos whose t_c x 8 x 8 blocks lie in a z-dim affine subspace are reconstructed
    exactly after PCA init: the conv paths start at zero, the patch codec is the PCA."""
    m = _tok(temporal_compression=tc, latent_channels=8)
    # 8 random 8x8 RGB images as a basis; each latent frame shows a mix held for t_c frames
    basis = torch.randn(8, 3 * 8 * 8) * 0.1
    images = rearrange(
        torch.randn(4, 3, 4, 4, 8) @ basis, "n t h w (c a b) -> n c t (h a) (w b)", a=8, b=8
    )
    video = torch.cat([images[:, :, :1], images[:, :, 1:].repeat_interleave(tc, 2)], 2)
    with torch.no_grad():
        explained = m.init_from_data(video)
        recon = m(video)
    assert recon.shape == video.shape
    assert float(explained.sum()) > 0.999
    torch.testing.assert_close(recon, video, atol=1e-4, rtol=0)


def test_without_the_linear_path_shapes_and_causality_hold():
    m = _tok(linear_path=False)
    assert m.patch is None and m.init_from_data(torch.zeros(1, 3, 5, 32, 32)) is None
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        z = m.encode(video)[0]
        changed = video.clone()
        changed[:, :, 5:] = 0
        torch.testing.assert_close(m.encode(changed)[0][:, :, :2], z[:, :, :2], atol=1e-5, rtol=0)
    assert z.shape == (1, 16, 3, 4, 4) and m.decode(z).shape == video.shape


def test_quantiser_fit_is_near_the_optimal_uniform_quantiser_on_gaussians():
    """The DV init fits FSQ's gain and read-out per channel: on Gaussian coefficients the
    5-level channel lands near the best uniform quantiser's error (0.080 sigma^2, Max 1960),
    the 8-level one near it (0.037; FSQ's tanh bound costs a little), both well below the
    error of reading whitened codes back as coefficients (what the PCA init did before)."""
    from worldmill.models.tokenizer import _fit_quantiser

    torch.manual_seed(0)
    fsq = FSQ([8, 5])
    y = torch.randn(20_000, 2).double() * torch.tensor([3.0, 0.5]).double()
    a, g, b = _fit_quantiser(y, fsq)
    codes = fsq((y * a).float())[0].double()
    rel = ((codes * g + b - y) ** 2).mean(0) / y.var(0)
    assert rel[0] < 0.06 and rel[1] < 0.095, rel
    # What the PCA init did before: whiten +-2 sigma to +-1 and decode the code as if it were
    # the whitened coefficient (FSQ's tanh bound and level spacing ignored).
    naive = fsq((y / (2 * y.std(0))).float())[0].double() * 2 * y.std(0)
    rel_naive = ((naive - y) ** 2).mean(0) / y.var(0)
    assert (rel_naive > 1.4 * rel).all(), (rel_naive, rel)  # measured: 2.1x and 1.4x


def test_dv_latent_bytes_count_log2_vocab_bits_per_token():
    dv = _tok(kind="dv", fsq_levels=[8, 8, 8, 5, 5, 5])
    cv = _tok(latent_channels=16)
    tokens = 3 * 4 * 4  # 9 frames of 32x32 at 4x8x8
    assert dv.latent_bytes(9, 32, 32) == pytest.approx(tokens * math.log2(64_000) / 8)
    assert cv.latent_bytes(9, 32, 32) == cv.latent_numel(9, 32, 32) == tokens * 16


class _TokenizerTester(ModelTester):
    kind = "cv"
    causal_from = 5  # frames 5..8 feed latent frame 2 only, which decodes to frames 5..8

    def tiny_model(self, seed: int = 0) -> CausalVideoTokenizer:
        torch.manual_seed(seed)
        return CausalVideoTokenizer(
            TokenizerConfig(kind=self.kind, channels=8, latent_channels=4, fsq_levels=[5, 5, 5])
        )

    def inputs(self, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(2, 3, 9, 32, 32, generator=gen) * 2 - 1  # (B, 3, T, H, W)

    def loss(self, model, video: torch.Tensor) -> torch.Tensor:
        return loss_fn(model(video), video)

    def outputs(self, model, video: torch.Tensor) -> torch.Tensor:
        return model(video)  # reconstruction (B, 3, T, H, W)

    def perturb_from(self, video: torch.Tensor, t: int, gen: torch.Generator) -> torch.Tensor:
        out = video.clone()
        out[:, :, t:] = torch.rand(out[:, :, t:].shape, generator=gen) * 2 - 1
        return out

    def before(self, out: torch.Tensor, t: int) -> torch.Tensor:
        return out[:, :, :t]


class TestCVTokenizerModel(_TokenizerTester):
    kind = "cv"


class TestDVTokenizerModel(_TokenizerTester):
    kind = "dv"


def test_freeze_linear_keeps_the_fitted_codec_and_trains_the_conv_paths():
    m = _tok(kind="dv", freeze_linear=True).train()
    video = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    m.init_from_data(video)
    before = {n: p.clone() for n, p in m.named_parameters()}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        loss_fn(m(video), video).backward()
        opt.step()
    moved = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert not any(n.startswith("patch.") for n in moved)  # the fitted codec is untouched
    assert any(n.startswith("decoder.") for n in moved)  # the residual paths learn


def test_augment_is_a_deterministic_flip_reverse_and_affine_of_each_clip():
    from worldmill.training.kinds.tokenizer import augment

    video = torch.rand(8, 3, 5, 16, 16) * 1.2 - 0.6
    a = augment(video, torch.Generator().manual_seed(3))
    b = augment(video, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)  # a pure function of the generator: resumable
    assert a.shape == video.shape and a.min() >= -1 and a.max() <= 1
    for x, y in zip(video, a, strict=True):
        # y = a * x' + c per channel for x' one of the 4 flips of x: fit and check exactly
        fits = []
        for v in (x, x.flip(-1), x.flip(1), x.flip(-1).flip(1)):
            err = 0.0
            for c in range(3):
                xs, ys = v[c].flatten(), y[c].flatten()
                inside = (ys > -1) & (ys < 1)  # unclamped pixels
                A = torch.stack([xs[inside], torch.ones_like(xs[inside])], 1)
                sol = torch.linalg.lstsq(A, ys[inside, None]).solution
                err += float((A @ sol - ys[inside, None]).abs().max())
            fits.append(err)
        assert min(fits) < 1e-4


def test_freeze_linear_is_a_run_option_and_off_by_default():
    from worldmill.training.kinds.tokenizer import build_tokenizer
    from worldmill.training.registry import resolve_config

    def trainable(*sets: str) -> bool:
        m = build_tokenizer(resolve_config("tokenizer", None, ["model.channels=8", *sets]))
        return all(p.requires_grad for p in m.patch.parameters())

    assert trainable() and trainable("model.kind=dv")
    assert not trainable("model.kind=dv", "model.freeze_linear=true")


class TestDVContextDecoderTokenizerModel(_TokenizerTester):
    """DV with the context patch decoder, fitted (non-zero taps) so causality is tested."""

    kind = "dv"

    def tiny_model(self, seed: int = 0) -> CausalVideoTokenizer:
        torch.manual_seed(seed)
        m = CausalVideoTokenizer(
            TokenizerConfig(kind="dv", channels=8, fsq_levels=[5, 5, 5], patch_decoder_kernel=3)
        )
        fit = torch.rand(4, 3, 9, 32, 32, generator=torch.Generator().manual_seed(seed + 7))
        m.init_from_data(fit * 2 - 1)  # the seed picks the fitting clips
        return m


def test_context_decoder_fit_beats_the_per_block_read_out_and_stays_causal():
    """The least-squares context decoder contains the per-block affine read-out as a special
    case, so on the fitting clips its error is lower; and latent frame t still decodes only
    into frames of blocks >= t."""
    torch.manual_seed(0)
    # Smooth random videos (upsampled noise): neighbouring blocks are correlated.
    small = torch.rand(6, 3, 3, 4, 4) * 2 - 1
    video = torch.nn.functional.interpolate(small, size=(9, 32, 32), mode="trilinear")
    errs = {}
    for k in (1, 3):
        m = _tok(kind="dv", fsq_levels=[8, 5, 5], patch_decoder_kernel=k)
        m.init_from_data(video)
        with torch.no_grad():
            errs[k] = float(((m(video) - video) ** 2).mean())
    assert errs[3] < 0.9 * errs[1], errs
    assert m.patch.ctx.conv.weight.abs().max() > 0
    z = m.encode(video[:1])[0]
    with torch.no_grad():
        a = m.decode(z)
        z[:, :, 1] = -z[:, :, 1]
        b = m.decode(z)
    torch.testing.assert_close(a[:, :, :1], b[:, :, :1], atol=1e-5, rtol=0)  # frame 0: latent 0
    assert (a[:, :, 1:] - b[:, :, 1:]).abs().max() > 1e-3


def test_dv_defaults_fit_the_context_decoder_on_256_crops_cv_is_unchanged():
    from worldmill.training.kinds.tokenizer import build_tokenizer
    from worldmill.training.registry import resolve_config

    def built(*sets: str):
        cfg = resolve_config("tokenizer", None, ["model.channels=8", *sets])
        return build_tokenizer(cfg).patch.ctx, cfg.pca_crops()

    ctx, n = built("model.kind=dv")
    assert ctx is not None and ctx.conv.kernel_size == (2, 3, 3) and n == 256
    assert built() == (None, 64)
    assert built("model.kind=dv", "model.patch_decoder_kernel=1", "optim.pca_init_clips=64") == (
        None,
        64,
    )


def test_a_dv_run_config_from_before_the_context_decoder_builds_without_it():
    from worldmill.training.kinds.tokenizer import TokenizerTrainConfig, build_tokenizer
    from worldmill.training.registry import resolve_config

    new = resolve_config("tokenizer", None, ["model.kind=dv", "model.channels=8"])
    old = new.model_dump(mode="json")
    del old["model"]["patch_decoder_kernel"]  # what an older run's config.json holds
    assert build_tokenizer(TokenizerTrainConfig.from_run(old)).patch.ctx is None
    same = TokenizerTrainConfig.from_run(new.model_dump(mode="json"))
    assert build_tokenizer(same).patch.ctx is not None  # a new run reloads as it was made
