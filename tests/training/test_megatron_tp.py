"""megatron-core tensor parallelism on CPU: a tiny GPT at TP=2 over gloo, saved with
dist_checkpointing, reloads at TP=1 (resharding 2->1) and gives the same logits.

Everything Megatron goes through ``worldmill.training.megatron``; the TP=2 ranks run in
subprocesses (``torch.multiprocessing.spawn``) and the TP=1 reload runs in a third, so no
process group or Megatron global state leaks into the pytest process.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

VOCAB, SEQ, BATCH = 64, 16, 2


def _tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(123))


def _forward(model) -> torch.Tensor:
    """Full-vocab logits [batch, seq, vocab] (gathered across TP ranks)."""
    from worldmill.training import megatron as mc

    tokens = _tokens()
    position_ids = torch.arange(SEQ).unsqueeze(0).expand(BATCH, SEQ)
    # Explicit causal mask (True = masked): with None, megatron builds its default on "cuda".
    mask = torch.ones(SEQ, SEQ, dtype=torch.bool).triu(diagonal=1)[None, None]
    model.eval()
    with torch.no_grad():
        logits = model(tokens, position_ids, attention_mask=mask)
    if mc.tp_size() > 1:  # the output layer is column-parallel: each rank has a vocab slice
        parts = [torch.empty_like(logits) for _ in range(mc.tp_size())]
        torch.distributed.all_gather(parts, logits.contiguous())
        logits = torch.cat(parts, dim=-1)
    return logits


def _worker(rank: int, world: int, port: int, ckpt: str, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from worldmill.training import megatron as mc

    # Different init seeds per run, so only the checkpoint can make the TP=1 logits match.
    mc.init(tensor_parallel=world, seed=world)
    try:
        assert mc.tp_size() == world
        model = mc.build_gpt(VOCAB, SEQ, num_layers=2, hidden_size=32, num_heads=4)
        if world > 1:  # write the TP=2 checkpoint and the reference logits
            qkv = model.decoder.layers[0].self_attention.linear_qkv.weight
            assert qkv.shape[0] == 3 * 32 // world  # really sharded across the two ranks
            logits = {"after": _forward(model)}
            mc.save(model.sharded_state_dict(), ckpt)
        else:  # reshard 2 -> 1: the template asks for the full tensors
            logits = {"before": _forward(model)}
            model.load_state_dict(mc.load(model.sharded_state_dict(), ckpt))
            logits["after"] = _forward(model)
        if rank == 0:
            torch.save(logits, out)
    finally:
        mc.destroy()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tp2_checkpoint_reshards_to_tp1(tmp_path):
    ckpt = str(tmp_path / "ckpt")
    tp2, tp1 = str(tmp_path / "tp2.pt"), str(tmp_path / "tp1.pt")
    mp.spawn(_worker, args=(2, _free_port(), ckpt, tp2), nprocs=2, join=True)
    mp.spawn(_worker, args=(1, _free_port(), ckpt, tp1), nprocs=1, join=True)

    ref, tp1_out = torch.load(tp2)["after"], torch.load(tp1)
    got = tp1_out["after"]
    assert not torch.allclose(tp1_out["before"], ref, atol=1e-3)  # the load is what matters
    assert ref.shape == got.shape == (BATCH, SEQ, VOCAB)
    assert torch.isfinite(ref).all()
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5), (got - ref).abs().max()
