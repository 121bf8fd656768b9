"""megatron-core GPTModel vs a plain-torch twin of equal size on CPU: forward+backward time.

    python bench/megatron_overhead.py [--layers 2 --hidden 256 --seq 256 --batch 4 --iters 10]

Both models: pre-LayerNorm GPT blocks (causal self-attention + 4x GELU MLP), learned
absolute positions, tied output, same parameter count (printed). Prints one JSON line with
seconds per iteration and the overhead ratio megatron / plain.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, seq: int, layers: int, hidden: int, heads: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(seq, hidden)
        layer = nn.TransformerEncoderLayer(
            hidden,
            heads,
            4 * hidden,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        x = self.tok(ids) + self.pos(torch.arange(t))
        mask = nn.Transformer.generate_square_subsequent_mask(t)
        return self.norm(self.blocks(x, mask=mask, is_causal=True)) @ self.tok.weight.T


def _time(step, iters: int) -> float:
    step()  # warm-up
    t = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t) / iters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--iters", type=int, default=10)
    a = ap.parse_args()

    from worldmill.training import megatron as mc

    mc.init(seed=0)
    mg = mc.build_gpt(a.vocab, a.seq, a.layers, a.hidden, a.heads)
    plain = PlainGPT(a.vocab, a.seq, a.layers, a.hidden, a.heads)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq))
    pos = torch.arange(a.seq)[None].expand(a.batch, -1)
    causal = ~torch.ones(a.seq, a.seq, dtype=torch.bool).tril()[None, None]  # True = masked

    def mg_step():
        mg(ids, pos, causal).float().mean().backward()

    def plain_step():
        plain(ids).mean().backward()

    res = {
        "threads": torch.get_num_threads(),
        "params_megatron": sum(p.numel() for p in mg.parameters()),
        "params_plain": sum(p.numel() for p in plain.parameters()),
        "s_per_iter_megatron": _time(mg_step, a.iters),
        "s_per_iter_plain": _time(plain_step, a.iters),
    }
    res["overhead_ratio"] = res["s_per_iter_megatron"] / res["s_per_iter_plain"]
    print(json.dumps(res))
    mc.destroy()


if __name__ == "__main__":
    main()
