"""Training throughput and MFU of both world-model families at a realistic size, on one GPU
(issue 6: "on a GPU machine when one is lent, throughput and MFU at a realistic size").

    python bench/gpu_throughput.py --family ar --preset 4b --layers 8 --latent-frames 2 --batch 1
    python bench/gpu_throughput.py --family diffusion --hidden 2048 --layers 16 --heads 16 \
        --channels 16 --frames 8 --size 40 --batch 4
    python bench/gpu_throughput.py --family ar --preset tiny --iters 2     # CPU smoke run

One training step = forward (the model's own loss) + backward + AdamW step, under bf16
autocast on CUDA (fp32 on CPU), on random inputs of the model's full window (AR: every
latent frame of the preset's ``max_t x max_h x max_w`` grid; diffusion: ``--frames x --size
x --size`` latents). The models are the real ones (``models/ar.py`` on megatron-core's
``GPTModel``, ``models/dit.py`` on its ``TransformerBlock``), built in one process.
``--layers`` trims a preset to fit one GPU's memory with AdamW's fp32 states (the 4B AR
preset's 16 layers need ~70 GB before activations): per-layer throughput does not change.
``--latent-frames`` shortens the AR sequence (the 4B preset's 5 x 40 x 64 = 12,800 tokens
with megatron-core's unfused local attention need ~10 GB of scores per layer).
Not yet run on a GPU (no device was lent to the session that wrote it).

Model FLOPs per step (PaLM's accounting, fwd + bwd = 3 x fwd): ``6 N T + 12 L d S T``, where
N counts the weights of every matrix multiply (2-D parameters other than input embedding
tables; the AR's output projection, tied to its embedding, counted once), T the tokens in
the batch, L layers, d width and S the sequence length (full attention: causal masking is
not discounted). MFU = model FLOPs per second / the device's dense bf16 peak (looked up for
H100/H200/A100, else ``--peak-tflops``). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}


def peak_tflops(device: torch.device, override: float) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def matmul_params(model: torch.nn.Module) -> int:
    """Weights that enter a matrix multiply: 2-D parameters except embedding tables (a
    lookup), plus a tied output projection (it shares the embedding table's storage)."""
    n, seen = 0, set()
    for name, p in model.named_parameters():
        if p.ndim != 2 or id(p) in seen:
            continue
        seen.add(id(p))
        if "embedding" in name and "word_embeddings" not in name:
            continue  # position / other lookup tables
        n += p.numel()  # word_embeddings: the tied output layer's matmul
    return n


def build(a, device):
    """(model, make_batch, tokens per sample, sequence length, layers, width)."""
    if a.family == "ar":
        from worldmill.models.ar import ARWorldModel, preset

        over = {"num_layers": a.layers} if a.layers else {}
        if a.latent_frames:
            over["max_t"] = a.latent_frames
        cfg = preset(a.preset, **over)
        model = ARWorldModel(cfg)
        shape = (a.batch, cfg.max_t, cfg.max_h, cfg.max_w)

        def batch():
            tokens = torch.randint(0, cfg.vocab_size, shape, device=device)
            return (tokens, torch.randn(a.batch, cfg.text_dim, device=device))

        seq = cfg.max_t * cfg.max_h * cfg.max_w + cfg.prefix_tokens
        return model, batch, seq, seq, cfg.num_layers, cfg.hidden_size
    from worldmill.models.dit import DiTWorldModel, preset

    over = {"num_layers": a.layers} if a.layers else {}
    if a.hidden:
        over |= {"hidden_size": a.hidden, "num_heads": a.heads or max(1, a.hidden // 128)}
    cfg = preset(
        a.preset,
        latent_channels=a.channels,
        max_t=a.frames,
        max_h=a.size,
        max_w=a.size,
        **over,
    )
    model = DiTWorldModel(cfg)
    gen = torch.Generator(device=device).manual_seed(0)

    def batch():
        x = torch.randn(a.batch, cfg.latent_channels, a.frames, a.size, a.size, device=device)
        return (x, torch.randn(a.batch, cfg.text_dim, device=device), model.draw(x, gen))

    tokens = (a.frames // cfg.patch_t) * (a.size // cfg.patch) ** 2
    return model, batch, tokens, tokens + cfg.text_tokens, cfg.num_layers, cfg.hidden_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=["ar", "diffusion"], default="ar")
    ap.add_argument(
        "--preset", default="", help="ar: tiny|cpu|4b|12b (default 4b); diffusion: tiny|cpu (cpu)"
    )
    ap.add_argument("--layers", type=int, default=0, help="0 = the preset's")
    ap.add_argument("--latent-frames", type=int, default=0, help="ar: 0 = the preset's max_t")
    ap.add_argument("--hidden", type=int, default=0, help="diffusion: width (0 = preset's)")
    ap.add_argument("--heads", type=int, default=0, help="diffusion: heads (0 = width / 128)")
    ap.add_argument("--channels", type=int, default=16, help="diffusion: latent channels")
    ap.add_argument("--frames", type=int, default=8, help="diffusion: latent frames")
    ap.add_argument("--size", type=int, default=40, help="diffusion: latent rows = columns")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--peak-tflops", type=float, default=0.0)
    a = ap.parse_args()
    a.preset = a.preset or {"ar": "4b", "diffusion": "cpu"}[a.family]

    from worldmill.training import megatron as mc

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with mc.single_process(seed=0):
        model, make_batch, tokens, seq, layers, width = build(a, device)
        model = model.to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
        autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")

        def step() -> None:
            inputs = make_batch()
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = model(*inputs)
            loss.backward()
            opt.step()

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()

        step()  # warm-up: kernels, allocator
        step()
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(a.iters):
            step()
        sync()
        s_step = (time.perf_counter() - t0) / a.iters

    n_params = sum(p.numel() for p in model.parameters())
    n_mm = matmul_params(model)
    batch_tokens = a.batch * tokens
    flops = 6 * n_mm * batch_tokens + 12 * layers * width * seq * batch_tokens
    peak = peak_tflops(device, a.peak_tflops)
    res = {
        "family": a.family,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "params": n_params,
        "matmul_params": n_mm,
        "layers": layers,
        "hidden": width,
        "seq_len": seq,
        "batch": a.batch,
        "s_per_step": round(s_step, 4),
        "tokens_per_s": round(batch_tokens / s_step, 1),
        "model_tflops_per_s": round(flops / s_step / 1e12, 3),
        "peak_tflops": peak,
        "mfu": round(flops / s_step / 1e12 / peak, 4) if peak else None,
        "peak_mem_gb": (
            round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if device.type == "cuda"
            else None
        ),
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
