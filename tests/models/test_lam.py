"""Latent action model (tiny config): the shared ModelTester, window layout, inference
shapes, codebook usage, and that the code carries what the past frames cannot tell."""

from __future__ import annotations

import torch

from tests.models.tester import ModelTester
from worldmill.models.lam import LAMConfig, LatentActionModel

TINY = LAMConfig(size=16, context=2, channels=8, levels=2, latent_dim=4, num_codes=4)


def _model(seed: int = 0, cfg: LAMConfig = TINY) -> LatentActionModel:
    torch.manual_seed(seed)
    return LatentActionModel(cfg)


class TestLAM(ModelTester):
    def tiny_model(self, seed: int = 0):
        return _model(seed)

    def inputs(self, gen):
        return torch.rand(2, TINY.context + 1, 3, 16, 16, generator=gen) * 2 - 1

    def loss(self, model, inputs):
        return model(inputs)[0]

    def outputs(self, model, inputs):
        z = model.encoder(inputs)
        pred = model.decoder(inputs[:, :-1], model.vq(z)[0])
        return torch.cat([z.flatten(), pred.flatten()])


def test_windows_pair_each_transition_with_its_past():
    m = _model()
    clip = torch.arange(5.0).view(1, 5, 1, 1, 1).expand(1, 5, 3, 16, 16)  # frame t holds t
    w = m.windows(clip)  # (1, 4, 3, 3, 16, 16): context 2 + next
    assert w.shape == (1, 4, 3, 3, 16, 16)
    got = w[0, :, :, 0, 0, 0].tolist()
    assert got == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4]]  # frame 0 repeats before t=0


def test_decoder_starts_as_copy_of_the_last_frame():
    m = _model().eval()
    x = torch.rand(3, 3, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(m.predict(x[:, :2], torch.tensor([0, 1, 2])), x[:, 1])


def test_infer_gives_one_code_per_transition_and_predict_uses_the_code():
    m = _model().eval()
    torch.nn.init.normal_(m.decoder.out.weight, std=0.1)  # as after training (starts at 0)
    clip = torch.rand(2, 6, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    codes, z = m.infer(clip, chunk=3)  # chunked like a long clip
    assert codes.shape == (2, 5) and z.shape == (2, 5, TINY.latent_dim)
    assert codes.dtype == torch.int64 and 0 <= int(codes.min()) and int(codes.max()) < 4
    w = m.windows(clip)[0]
    a, b = (
        m.predict(w[:, :2], torch.zeros(5, dtype=torch.long)),
        m.predict(w[:, :2], codes[0] * 0 + 1),
    )
    assert (a - b).abs().max() > 1e-4  # another code, another next frame


def test_training_lowers_the_loss_and_uses_several_codes():
    """Two kinds of transition (shift left / shift right) that the past cannot tell apart:
    the model must learn to put the direction into the code."""
    g = torch.Generator().manual_seed(0)
    m = _model()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)

    def batch():
        base = torch.rand(16, 1, 3, 16, 16, generator=g) * 2 - 1
        d = torch.randint(0, 2, (16,), generator=g) * 2 - 1
        nxt = torch.stack([torch.roll(b, int(s) * 2, -1) for b, s in zip(base, d, strict=True)])
        return torch.cat([base, base, nxt], 1), d

    losses = []
    for _ in range(60):
        x, _ = batch()
        loss, parts = m(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(parts["recon"]))
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses
    x, d = batch()
    codes = m.infer(x[:, 1:])[0][:, -1]
    assert len(set(codes.tolist())) >= 2  # not collapsed to one code
