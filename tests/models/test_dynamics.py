"""Dynamics model (tiny config): the shared ModelTester (causal in time), MaskGIT loss on
masked tokens only, and MaskGIT decoding: complete, seeded, sliding past ``max_t``."""

from __future__ import annotations

import pytest
import torch

from tests.models.tester import ModelTester
from worldmill.models.dynamics import DynamicsConfig, DynamicsModel

TINY = DynamicsConfig(vocab_size=16, num_actions=4, max_t=4, h=3, w=3, hidden=16, layers=2,
                      heads=2)  # fmt: skip


def _model(seed: int = 0) -> DynamicsModel:
    torch.manual_seed(seed)
    return DynamicsModel(TINY)


def _batch(gen: torch.Generator, b: int = 2, t: int = 4):
    tokens = torch.randint(0, 16, (b, t, 3, 3), generator=gen)
    actions = torch.randint(0, 4, (b, t - 1), generator=gen)
    mask = torch.rand(b, t, 3, 3, generator=gen) < 0.6
    mask[:, 0] = False
    mask[:, -1, 0, 0] = True
    return tokens, actions, mask


class TestDynamics(ModelTester):
    causal_from = 2  # frames >= 2 (and the actions leading into them) cannot move frames < 2

    def tiny_model(self, seed: int = 0):
        return _model(seed)

    def inputs(self, gen):
        return _batch(gen)

    def loss(self, model, inputs):
        return model(*inputs)

    def outputs(self, model, inputs):
        tokens, actions, mask = inputs
        return model.logits(tokens.masked_fill(mask, TINY.mask_id), actions)

    def perturb_from(self, inputs, t, gen):
        tokens, actions, mask = (x.clone() for x in inputs)
        tokens[:, t:] = (
            tokens[:, t:] + 1 + torch.randint(0, 14, tokens[:, t:].shape, generator=gen)
        ) % 16
        actions[:, t - 1 :] = (actions[:, t - 1 :] + 1) % 4
        mask[:, t:] = False
        return tokens, actions, mask

    def before(self, out, t):
        return out[:, :t]


def test_loss_is_on_masked_tokens_only():
    m = _model().eval()
    tokens, actions, mask = _batch(torch.Generator().manual_seed(0))
    changed = tokens.clone()
    changed[mask] = (changed[mask] + 5) % 16  # only the targets change
    with torch.no_grad():
        a, b = m(tokens, actions, mask), m(changed, actions, mask)
    assert not torch.isclose(a, b)  # the targets are what is scored
    inp = tokens.masked_fill(mask, TINY.mask_id)
    with torch.no_grad():  # and the model never sees them: identical logits
        torch.testing.assert_close(
            m.logits(inp, actions), m.logits(changed.masked_fill(mask, TINY.mask_id), actions)
        )


def test_next_frame_is_complete_seeded_and_action_dependent():
    m = _model().eval()
    ctx = torch.randint(0, 16, (1, 2, 3, 3), generator=torch.Generator().manual_seed(1))

    def gen(seed):
        return torch.Generator().manual_seed(seed)

    a = m.next_frame(ctx, torch.tensor([[1, 2]]), steps=4, temperature=2.0, gen=gen(0))
    b = m.next_frame(ctx, torch.tensor([[1, 2]]), steps=4, temperature=2.0, gen=gen(0))
    assert a.shape == (1, 3, 3) and torch.equal(a, b)
    assert int(a.max()) < TINY.vocab_size  # every [MASK] was filled
    g = m.next_frame(ctx, torch.tensor([[1, 2]]), steps=4, sample=False, temperature=0, gen=None)
    logits = m.logits(
        torch.cat([ctx, torch.full((1, 1, 3, 3), TINY.mask_id)], 1), torch.tensor([[1, 2]])
    )
    assert g.shape == (1, 3, 3)
    outs = {
        tuple(m.next_frame(ctx, torch.tensor([[1, k]]), 4, 2.0, gen(0)).flatten().tolist())
        for k in range(4)
    }
    assert len(outs) > 1  # the action changes the frame
    assert logits.shape == (1, 3, 3, 3, 16)


@pytest.mark.parametrize("k", [2, 6])
def test_rollout_slides_past_max_t(k):
    m = _model().eval()
    ctx = torch.randint(0, 16, (2, 1, 3, 3), generator=torch.Generator().manual_seed(2))
    acts = torch.randint(0, 4, (2, k), generator=torch.Generator().manual_seed(3))
    out = m.rollout(ctx, acts, steps=2, gen=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1 + k, 3, 3) and torch.equal(out[:, :1], ctx)
    again = m.rollout(ctx, acts, steps=2, gen=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_copy_prior_adds_gain_on_the_visible_previous_token():
    from dataclasses import replace

    torch.manual_seed(0)
    plain = DynamicsModel(TINY).eval()
    torch.manual_seed(0)
    copy = DynamicsModel(replace(TINY, copy_logit=3.0)).eval()
    tokens, actions, mask = _batch(torch.Generator().manual_seed(4))
    inp = tokens.masked_fill(mask, TINY.mask_id)
    with torch.no_grad():
        diff = copy.logits(inp, actions) - plain.logits(inp, actions)  # (B, T, h, w, V)
    assert torch.all(diff[:, 0] == 0)  # frame 0 has no previous frame
    prev = inp[:, :-1]
    want = torch.nn.functional.one_hot(prev.clamp_max(15), 16) * (prev != TINY.mask_id)[..., None]
    torch.testing.assert_close(diff[:, 1:], 3.0 * want.float())
