"""Encode a shard set to tokenizer latents / tokens, written back as WebDataset shards.

    worldmill encode --run RUN --data SHARDS --out LATENTS

Loads the tokenizer of run folder RUN (RUN/config.json + the latest dist checkpoint) and
encodes every clip of SHARDS, whole (not a training crop). Each input shard
``SHARDS/<rel>.tar`` becomes ``LATENTS/<rel>.tar`` holding, per clip (same sample key):

    <key>.latent.npy   CV: float16 (C, T', H', W')
    <key>.tokens.npy   DV: int32   (T', H', W')   ids < vocab_size
    <key>.json         clip_id, shapes, compression, tokenizer run/step, source shard

Shapes. A clip is decoded like the trainer decodes it (``data.width``, ``data.fps``). Its
``T`` frames are truncated to the longest causal prefix ``1 + k * t_c`` (at most ``t_c - 1``
trailing frames are dropped; ``frames_encoded`` says how many were kept), and ``H x W`` is
padded on the bottom / right by edge replication up to multiples of ``s_c``
(``padded_hw``); ``decode(latent)[..., :H, :W]`` is the clip at its own size.
``LATENTS/manifest.json`` lists every clip once.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from worldmill.models.tokenizer import CausalVideoTokenizer
from worldmill.training import checkpoint, data
from worldmill.training.kinds.tokenizer import TokenizerTrainConfig, build_tokenizer


def load_tokenizer(run_dir: str | Path) -> tuple[CausalVideoTokenizer, TokenizerTrainConfig, dict]:
    """(model in eval mode, run config, checkpoint meta) from the latest checkpoint of a run."""
    import torch.distributed as dist

    from worldmill.training import megatron as mc

    if dist.is_initialized():  # inside a trainer: load collectively in its process group
        return load_tokenizer_in_group(run_dir)
    cfg = TokenizerTrainConfig.from_run(json.loads((Path(run_dir) / "config.json").read_text()))
    with mc.single_process(seed=cfg.run.seed):  # dist_checkpointing needs a process group
        return load_tokenizer_in_group(run_dir)


def load_tokenizer_in_group(
    run_dir: str | Path,
) -> tuple[CausalVideoTokenizer, TokenizerTrainConfig, dict]:
    """``load_tokenizer`` in the caller's process group (collective: every rank calls it;
    a world-model trainer reading its upstream tokenizer run)."""
    run = Path(run_dir)
    cfg = TokenizerTrainConfig.from_run(json.loads((run / "config.json").read_text()))
    ck = checkpoint.latest(run)
    if ck is None:
        raise FileNotFoundError(f"no complete checkpoint under {run / 'checkpoints'}")
    model = build_tokenizer(cfg)
    meta = checkpoint.load_model(ck[0], model)
    return model.eval(), cfg, {**meta, "checkpoint": ck[0].name}


def fit_clip(video: torch.Tensor, t_c: int, s_c: int) -> torch.Tensor:
    """``(3, T, H, W)`` -> ``(3, 1 + k*t_c, H', W')``: drop trailing frames, pad H, W
    (replicate, bottom/right) up to multiples of ``s_c``."""
    _, t, h, w = video.shape
    video = video[:, : 1 + (t - 1) // t_c * t_c]
    pad_h, pad_w = -h % s_c, -w % s_c
    if pad_h or pad_w:
        video = F.pad(video, (0, pad_w, 0, pad_h), mode="replicate")
    return video


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@torch.no_grad()
def encode_shards(
    run_dir: str | Path, data_dir: str | Path, out_dir: str | Path, log=print, tokenizer=None
) -> dict:
    """Encode every clip of ``data_dir`` with the tokenizer of ``run_dir`` into ``out_dir``
    (layout in the module docstring). Returns the manifest written to OUT/manifest.json.
    ``tokenizer``: an already loaded ``load_tokenizer(run_dir)`` result."""
    import webdataset as wds

    model, cfg, meta = tokenizer or load_tokenizer(run_dir)
    mc, dc = cfg.model, cfg.data
    root, out = Path(data_dir), Path(out_dir)
    shards = data.list_shards(root)
    refs = data.index_shards(root)
    by_shard: dict[str, list[data.ClipRef]] = {}
    for r in refs:
        by_shard.setdefault(r.shard, []).append(r)
    kind = mc.kind
    manifest: dict = {
        "tokenizer_run": str(Path(run_dir).absolute()),
        "checkpoint": meta["checkpoint"],
        "step": meta["step"],
        "kind": kind,
        "temporal_compression": mc.temporal_compression,
        "spatial_compression": mc.spatial_compression,
        "clips": [],
    }
    t0 = time.perf_counter()
    for shard in shards:
        rel = shard.relative_to(root) if root.is_dir() else Path(shard.name)
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        with wds.TarWriter(str(dst)) as sink:
            for ref in sorted(by_shard.get(str(shard), []), key=lambda r: r.member):
                frames = data.decode_clip(ref, dc.width, dc.fps)  # (T, H, W, 3) uint8
                video = data.to_tensor(frames)  # (3, T, H, W) in [-1, 1]
                _, t, h, w = video.shape
                x = fit_clip(video, mc.temporal_compression, mc.spatial_compression)
                latent, tokens = model.encode(x[None])
                key = ref.member[: -len(".mp4")]
                if tokens is None:
                    arr, name = latent[0].to(torch.float16).numpy(), "latent.npy"
                else:
                    arr, name = tokens[0].to(torch.int32).numpy(), "tokens.npy"
                info = {
                    "clip_id": ref.clip_id,
                    "key": key,
                    "kind": kind,
                    "file": f"{key}.{name}",
                    "shape": list(arr.shape),
                    "dtype": str(arr.dtype),
                    "temporal_compression": mc.temporal_compression,
                    "spatial_compression": mc.spatial_compression,
                    "latent_channels": model.cfg.z_channels,
                    "vocab_size": model.vocab_size,
                    "source_shard": str(shard.absolute()),
                    "source_frames": t,
                    "frames_encoded": x.shape[1],
                    "pixel_hw": [h, w],
                    "padded_hw": list(x.shape[-2:]),
                    "width": dc.width,
                    "fps": dc.fps or ref.meta.get("fps"),
                    "tokenizer_run": manifest["tokenizer_run"],
                    "checkpoint": meta["checkpoint"],
                    "step": meta["step"],
                }
                sink.write({"__key__": key, name: _npy(arr), "json": json.dumps(info).encode()})
                manifest["clips"].append(
                    {"clip_id": ref.clip_id, "shard": str(dst), "key": key, "shape": info["shape"]}
                )
        log(f"{dst}: {len(by_shard.get(str(shard), []))} clips")
    manifest["seconds"] = round(time.perf_counter() - t0, 2)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
