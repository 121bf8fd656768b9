"""Causal video tokenizer trainer; one process per rank under torchrun.

    torchrun --nproc-per-node 2 -m worldmill.training.tokenizer_train \\
        --data SHARDS --out RUN --config RUN/config.json [--resume]

(``worldmill train tokenizer`` writes RUN/config.json and launches this from a Prefect task.)

A fresh run first sets the tokenizer's linear patch codec to the PCA of
``optim.pca_init_clips`` training crops (the conv paths start at zero around it), so step 0
is already a codec that beats the bicubic baseline; training then improves on it.

Per step: each rank draws its slice of the global batch from the resumable clip stream,
DDP all-reduces gradients (gloo on CPU, nccl on GPU), AdamW steps. Rank 0 appends
``{"step", "loss", ...}`` to RUN/log.jsonl (``loss`` is the mean over ranks). Every
``run.checkpoint_every`` steps all ranks write a dist checkpoint. At the end rank 0 evaluates
the held-out clips against the bicubic baseline and writes RUN/metrics.json, RUN/loss.png,
RUN/recon.png.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from worldmill.models.tokenizer import CausalVideoTokenizer, TokenizerConfig
from worldmill.training import checkpoint, data, metrics
from worldmill.training.config import TokenizerTrainConfig

LOG = "log.jsonl"
ATTEMPTS = "attempts.jsonl"


def build_model(cfg: TokenizerTrainConfig) -> CausalVideoTokenizer:
    return CausalVideoTokenizer(TokenizerConfig(**cfg.model.model_dump()))


def lr_at(step: int, cfg: TokenizerTrainConfig) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio at the last step."""
    o, total = cfg.optim, cfg.run.steps
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    frac = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def pca_init(
    model: CausalVideoTokenizer, stream: data.ResumableClipStream, cfg: TokenizerTrainConfig
) -> None:
    """Fresh run: set the linear patch codec to the PCA of ``optim.pca_init_clips`` training
    crops. The crops are rank 0's first batches (a pure function of the seed), so every rank
    computes the same weights; the training stream itself is untouched."""
    n = cfg.optim.pca_init_clips
    if n == 0 or model.patch is None:
        return
    s0 = data.ResumableClipStream(
        stream.refs, n, stream.t, stream.size, cfg.data.width, cfg.data.fps, seed=cfg.run.seed
    )
    s0.cache = stream.cache  # share decoded clips
    explained = model.init_from_data(s0.batch(0))
    if dist.get_rank() == 0:
        print(
            f"patch codec PCA on {n} crops: {float(explained.sum()):.3f} variance kept", flush=True
        )


def loss_fn(recon: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    # L1 for sharpness + MSE (what PSNR measures); no perceptual loss (needs pretrained nets).
    return F.l1_loss(recon, video) + F.mse_loss(recon, video)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (written by a killed attempt after its last checkpoint)."""
    kept = [r for r in metrics.read_log(path) if r["step"] <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def train(data_root: str, out: str, cfg: TokenizerTrainConfig, resume: bool) -> None:
    from worldmill.training import megatron as mc  # the only megatron.core importer

    torch.set_num_threads(cfg.run.threads_per_proc)
    torch.use_deterministic_algorithms(True, warn_only=True)
    mc.init(tensor_parallel=1, seed=cfg.run.seed)  # same seed on all ranks: identical init
    rank, world = dist.get_rank(), dist.get_world_size()
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    log_path = run / LOG

    refs = data.index_shards(data_root)
    train_refs, held = data.split_holdout(refs, cfg.data.holdout)
    d = cfg.data
    stream = data.ResumableClipStream(
        train_refs,
        d.batch_size,
        d.num_frames,
        d.crop,
        d.width,
        d.fps,
        seed=cfg.run.seed,
        rank=rank,
        world=world,
    )

    model = build_model(cfg)
    ck = checkpoint.latest(run) if resume else None
    if ck is None:  # fresh run (a resumed one loads the weights below)
        pca_init(model, stream, cfg)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
    )
    start, wall0 = 0, 0.0
    if ck is not None:
        meta = checkpoint.load(ck[0], ddp, opt)
        start, wall0 = meta["step"], meta["extra"].get("train_seconds", 0.0)
        if rank == 0:
            print(f"resumed from {ck[0].name}: step {start}, samples {meta['samples']}", flush=True)
    if rank == 0:
        if ck is None:
            log_path.write_text("")
        else:
            _truncate_log(log_path, start)
        with (run / ATTEMPTS).open("a") as f:  # one line per launch: the run's history
            f.write(
                json.dumps(
                    {
                        "start_step": start,
                        "world_size": world,
                        "time": time.time(),
                        "resumed_from": ck[0].name if ck else None,
                    }
                )
                + "\n"
            )
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"tokenizer {cfg.model.kind}: {n_params / 1e6:.2f}M params, {len(train_refs)} "
            f"train / {len(held)} held-out clips, world {world}, steps {start}->"
            f"{cfg.run.steps}",
            flush=True,
        )

    t_start = time.perf_counter()
    for step in range(start, cfg.run.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        video = stream.batch(step)  # (B, 3, T, S, S) in [-1, 1]
        loss = loss_fn(ddp(video), video)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        mean_loss = loss.detach().clone()
        if world > 1:
            dist.all_reduce(mean_loss)
            mean_loss /= world
        done = step + 1
        elapsed = wall0 + time.perf_counter() - t_start
        if rank == 0:
            rec = {
                "step": done,
                "loss": float(mean_loss),
                "lr": lr_at(step, cfg),
                "samples": stream.position(done),
                "epoch": round(stream.epoch(done), 3),
                "seconds": round(elapsed, 2),
            }
            with log_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(
                f"step {done} loss {rec['loss']:.5f} lr {rec['lr']:.2e} "
                f"epoch {rec['epoch']:.2f} {elapsed:.1f}s",
                flush=True,
            )
        if done % cfg.run.checkpoint_every == 0 or done == cfg.run.steps:
            checkpoint.save(
                run,
                done,
                ddp,
                opt,
                samples=stream.position(done),
                extra={"train_seconds": elapsed},
                keep=cfg.run.keep_checkpoints,
            )
            if rank == 0:
                print(f"checkpoint step {done}", flush=True)

    if rank == 0:
        evaluate(
            model, cfg, held, run, train_seconds=wall0 + time.perf_counter() - t_start, world=world
        )
    dist.barrier()
    mc.destroy()


@torch.no_grad()
def evaluate(
    model: CausalVideoTokenizer,
    cfg: TokenizerTrainConfig,
    held: list,
    run: Path,
    train_seconds: float,
    world: int,
) -> dict:
    """Held-out PSNR/SSIM vs a bicubic baseline with the same number of values; plots."""
    model.eval()
    d = cfg.data
    clips = data.eval_clips(held[: cfg.run.eval_max_clips], d.num_frames, d.crop, d.width, d.fps)
    recon = torch.cat([model(c[None]) for c in clips]).clamp(-1, 1)
    n, _, t, h, w = clips.shape
    budget = model.latent_numel(t, h, w)
    base, base_hw = metrics.bicubic_baseline(clips, budget)
    log = metrics.read_log(run / LOG)
    res = {
        "kind": f"tokenizer-{cfg.model.kind}",
        "steps": cfg.run.steps,
        "world_size": world,
        "train_seconds": round(train_seconds, 1),
        "final_loss": log[-1]["loss"] if log else None,
        "psnr": metrics.psnr(recon, clips),
        "ssim": metrics.ssim(recon, clips),
        "baseline_psnr": metrics.psnr(base, clips),
        "baseline_ssim": metrics.ssim(base, clips),
        "baseline": f"bicubic {w}x{h} -> {base_hw[1]}x{base_hw[0]} -> {w}x{h} per frame",
        "eval_clips": n,
        "eval_shape": [t, h, w],
        "latent_values_per_clip": budget,
        "compression": round(3 * t * h * w / budget, 2),
        "params": sum(p.numel() for p in model.parameters()),
    }
    (run / "metrics.json").write_text(json.dumps(res, indent=2))
    metrics.plot_loss(log, run / "loss.png")
    metrics.plot_recon(
        {"input": clips[0], "tokenizer": recon[0], "bicubic": base[0]}, run / "recon.png"
    )
    print("metrics " + json.dumps(res), flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", required=True, help="resolved config JSON")
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    cfg = TokenizerTrainConfig.model_validate(json.loads(Path(a.config).read_text()))
    train(a.data, a.out, cfg, a.resume)
    return 0


if __name__ == "__main__":  # guard matters: dist_checkpointing may spawn helper processes
    sys.exit(main())
