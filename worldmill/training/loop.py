"""The one training loop; one process per rank under torchrun, for every model kind.

    torchrun --nproc-per-node 2 -m worldmill.training.loop \\
        --kind tokenizer --data SHARDS --out RUN --config RUN/config.json [--resume]

(``worldmill train <kind>`` writes RUN/config.json and launches this from a Prefect task.)

The loop owns: the process group and megatron-core parallel state (gloo on CPU, NCCL on
GPU), DDP over the data-parallel group, the optimizer and LR schedule, gradient clipping and
accumulation, bf16 autocast on GPU, the EMA of the weights, checkpoints (model, optimizer,
EMA, RNG, loader position) and resume, ``log.jsonl``, ``attempts.jsonl``, ``metrics.json``,
``loss.png`` and the figures list the flow publishes as Prefect artifacts. The kind's spec
(``worldmill.training.registry``) provides the model, the data, one step and evaluation.

Determinism: the data stream is a pure function of (seed, step, rank) and the RNG is in the
checkpoint, so a resumed run reproduces an uninterrupted run's losses bit for bit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from worldmill.training import checkpoint, metrics
from worldmill.training.config import OptimConfig, TrainConfig
from worldmill.training.registry import get_spec
from worldmill.training.spec import RunContext

LOG = "log.jsonl"
ATTEMPTS = "attempts.jsonl"
FIGURES = "figures.json"


def lr_at(step: int, o: OptimConfig, total: int) -> float:
    """Linear warmup, then cosine decay to ``lr * min_lr_ratio`` at the last step (or
    constant)."""
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return o.lr
    frac = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def build_optimizer(model: nn.Module, o: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


class EMA:
    """Exponential moving average of the trainable weights (``decay`` per step), kept in
    fp32 beside the model; ``swap`` puts the averaged weights in for evaluation."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {
            n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().float(), 1 - self.decay)

    @contextlib.contextmanager
    def swap(self, model: nn.Module):
        params = dict(model.named_parameters())
        saved = {n: params[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for n, t in self.shadow.items():
                params[n].copy_(t)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, t in saved.items():
                    params[n].copy_(t)


def _precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    p = cfg.run.precision
    if p == "bf16" or (p == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (written by a killed attempt after its last checkpoint)."""
    kept = [r for r in metrics.read_log(path) if r["step"] <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def _mean_over_ranks(values: dict[str, float], world: int, device: torch.device) -> dict:
    if world == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / world for k, v in zip(keys, t.tolist(), strict=True)}


class _Steps(torch.utils.data.Dataset):
    """``data.batch`` as a map-style dataset indexed by step, so DataLoader workers prepare
    the next steps' batches while this one trains -- still a pure function of the step."""

    def __init__(self, data: Any):
        self.data = data

    def __getitem__(self, step: int) -> Any:
        return self.data.batch(step)


def batches(data: Any, start: int, steps: int, workers: int) -> Iterator[Any]:
    """This rank's batches for ``start .. steps - 1`` in order; ``workers`` > 0 decodes them in
    that many DataLoader processes (each with its own copy of ``data`` and its caches)."""
    if workers == 0:
        for step in range(start, steps):
            yield data.batch(step)
        return
    yield from torch.utils.data.DataLoader(
        _Steps(data),
        batch_size=None,  # a step's batch is already a batch
        sampler=range(start, steps),
        num_workers=workers,
        prefetch_factor=2,
        multiprocessing_context="fork",  # no re-import of the trainer per worker
    )


def train(kind: str, data_root: str, out: str, cfg: TrainConfig, resume: bool) -> None:
    from worldmill.training import megatron as mc  # the only megatron.core importer

    spec = get_spec(kind)
    torch.set_num_threads(cfg.run.threads_per_proc)
    torch.use_deterministic_algorithms(True, warn_only=True)
    mc.init(tensor_parallel=cfg.run.tensor_parallel, seed=cfg.run.seed)  # same seed: same init
    rank, world = dist.get_rank(), dist.get_world_size()
    device = mc.device()
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    log_path = run / LOG
    ctx = RunContext(
        run=run,
        data_root=data_root,
        rank=rank,
        world=world,
        device=device,
        seed=cfg.run.seed,
        upstream=spec.resolve_upstream(cfg),
        log=(lambda s: print(s, flush=True)) if rank == 0 else (lambda s: None),
    )

    data = spec.build_data(cfg, ctx)
    model = spec.build_model(cfg, ctx).to(device)
    ck = checkpoint.latest(run) if resume else None
    if ck is None:  # fresh run (a resumed one loads everything below)
        if cfg.init_from:
            meta = checkpoint.load_model(checkpoint.latest(cfg.init_from)[0], model)
            ctx.log(f"initialised from {cfg.init_from} (step {meta['step']})")
        else:
            spec.init_model(model, data, cfg, ctx)
    dp_world = mc.dp_size()
    ddp = (
        nn.parallel.DistributedDataParallel(model, process_group=mc.dp_group())
        if dp_world > 1
        else model
    )
    opt = build_optimizer(model, cfg.optim)
    ema = EMA(model, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
    start, wall0 = 0, 0.0
    if ck is not None:
        meta = checkpoint.load(ck[0], ddp, opt, ema=ema.shadow if ema else None)
        start, wall0 = meta["step"], meta["extra"].get("train_seconds", 0.0)
        ctx.log(f"resumed from {ck[0].name}: step {start}, samples {meta['samples']}")
    if rank == 0:
        if ck is None:
            log_path.write_text("")
        else:
            _truncate_log(log_path, start)
        with (run / ATTEMPTS).open("a") as f:  # one line per launch: the run's history
            rec = {
                "start_step": start,
                "world_size": world,
                "time": time.time(),
                "resumed_from": ck[0].name if ck else None,
            }
            f.write(json.dumps(rec) + "\n")
        n_params = sum(p.numel() for p in model.parameters())
        ctx.log(
            f"{kind}: {n_params / 1e6:.2f}M params, {len(data.held_out)} held-out clips, "
            f"world {world} (tp {cfg.run.tensor_parallel}), {device.type}, steps {start}->"
            f"{cfg.run.steps}"
        )

    autocast_dtype = _precision(cfg, device)
    accum = cfg.optim.grad_accum
    t_start = time.perf_counter()
    workers = getattr(getattr(cfg, "data", None), "workers", 0)
    stream = batches(data, start, cfg.run.steps, workers)
    for step, batch in zip(range(start, cfg.run.steps), stream, strict=True):
        lr = lr_at(step, cfg.optim, cfg.run.steps)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        micro = spec.split_batch(batch, accum)
        sums: dict[str, float] = {}
        loss_sum = torch.zeros((), device=device)
        for i, mb in enumerate(micro):
            # DDP all-reduces on the last micro-batch only.
            sync = contextlib.nullcontext() if i == accum - 1 or ddp is model else ddp.no_sync()
            with sync:
                with torch.autocast(
                    device.type, dtype=autocast_dtype or torch.float32, enabled=bool(autocast_dtype)
                ):
                    loss, scalars = spec.step(ddp, mb, ctx)
                (loss / accum).backward()
            loss_sum += loss.detach().float() / accum
            for k, v in scalars.items():
                sums[k] = sums.get(k, 0.0) + float(v) / accum
        grad_norm = (
            float(nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip))
            if cfg.optim.grad_clip
            else None
        )
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)
        logged = _mean_over_ranks({"loss": float(loss_sum), **sums}, world, device)
        done = step + 1
        elapsed = wall0 + time.perf_counter() - t_start
        if rank == 0:
            rec = {
                "step": done,
                **logged,
                "lr": lr,
                "samples": data.position(done),
                "epoch": round(data.epoch(done), 3),
                "seconds": round(elapsed, 2),
            }
            if grad_norm is not None:
                rec["grad_norm"] = round(grad_norm, 6)
            with log_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(
                f"step {done} loss {rec['loss']:.5f} lr {lr:.2e} epoch {rec['epoch']:.2f} "
                f"{elapsed:.1f}s",
                flush=True,
            )
        if done % cfg.run.checkpoint_every == 0 or done == cfg.run.steps:
            checkpoint.save(
                run,
                done,
                ddp,
                opt,
                samples=data.position(done),
                extra={"train_seconds": elapsed},
                keep=cfg.run.keep_checkpoints,
                ema=ema.shadow if ema else None,
            )
            ctx.log(f"checkpoint step {done}")

    if rank == 0:
        model.eval()
        swap = ema.swap(model) if ema is not None else contextlib.nullcontext()
        with swap, torch.no_grad():
            res = spec.evaluate(model, data, cfg, ctx)
        log = metrics.read_log(log_path)
        res = {
            "kind": res.pop("kind", kind),
            "steps": cfg.run.steps,
            "world_size": world,
            "train_seconds": round(wall0 + time.perf_counter() - t_start, 1),
            "final_loss": log[-1]["loss"] if log else None,
            **res,
        }
        write_outputs(run, res, log, spec.figures)
        print("metrics " + json.dumps(res), flush=True)
    dist.barrier()
    mc.destroy()


def write_outputs(run: Path, res: dict[str, Any], log: list[dict], figures: dict) -> None:
    """metrics.json, loss.png and figures.json (the PNGs the flow publishes, with titles)."""
    (run / "metrics.json").write_text(json.dumps(res, indent=2))
    metrics.plot_loss(log, run / "loss.png")
    listed = {"loss.png": "loss curve", **{k: v for k, v in figures.items() if (run / k).is_file()}}
    (run / FIGURES).write_text(json.dumps(listed, indent=2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", required=True, help="resolved config JSON")
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    cfg = get_spec(a.kind).config.from_run(json.loads(Path(a.config).read_text()))
    train(a.kind, a.data, a.out, cfg, a.resume)
    return 0


if __name__ == "__main__":  # guard matters: dist_checkpointing may spawn helper processes
    sys.exit(main())
