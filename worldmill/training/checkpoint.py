"""Distributed checkpoints (megatron.core dist_checkpointing): model, optimizer, step, RNG,
data-loader position. Layout::

    RUN/checkpoints/step_00000040/   one dist_checkpointing directory per save
    RUN/checkpoints/step_00000040/worldmill.json   {step, samples, world_size}, written last
    RUN/checkpoints/latest           name of the newest *complete* checkpoint

``latest`` is replaced atomically only after every rank finished writing, so a trainer killed
mid-save resumes from the previous checkpoint, never from a half-written one.

Plain-torch models (replicated under DDP) are saved as ShardedTensors with
``replica_id = data-parallel rank`` (rank 0 writes, the others are replicas); models that
provide ``sharded_state_dict()`` (megatron-core GPT, tensor-parallel) use their own sharding,
so a checkpoint reloads under another tensor-parallel size.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from worldmill.training import megatron as mc

LATEST = "latest"
META = "worldmill.json"


def _rank_world() -> tuple[int, int]:
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _param_names(model: nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in _unwrap(model).named_parameters()}


def model_sharded(model: nn.Module, template: bool = False) -> dict[str, Any]:
    m = _unwrap(model)
    if hasattr(m, "sharded_state_dict"):  # megatron-core module: its own TP sharding
        return m.sharded_state_dict(prefix="model.")
    rank, _ = _rank_world()
    return {
        f"model.{k}": mc.ShardedTensor.from_rank_offsets(
            f"model.{k}", torch.empty_like(v) if template else v.detach(), replica_id=rank
        )
        for k, v in m.state_dict().items()
    }


def optimizer_sharded(
    model: nn.Module, opt: torch.optim.Optimizer, template: bool = False
) -> dict[str, Any]:
    """Adam-style per-parameter state (exp_avg, exp_avg_sq) keyed by parameter name, sharded
    like the parameter itself when the model is a megatron module."""
    rank, _ = _rank_world()
    names = _param_names(model)
    msd = (
        _unwrap(model).sharded_state_dict(prefix="model.")
        if hasattr(_unwrap(model), "sharded_state_dict")
        else None
    )
    out: dict[str, Any] = {}
    for group in opt.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            state = opt.state.get(p, {})
            for k in ("exp_avg", "exp_avg_sq"):
                t = torch.zeros_like(p) if template or k not in state else state[k]
                key = f"optim.{name}.{k}"
                if msd is not None and f"model.{name}" in msd:
                    out[key] = msd[f"model.{name}"].without_data()
                    out[key].key, out[key].data = key, t
                else:
                    out[key] = mc.ShardedTensor.from_rank_offsets(key, t, replica_id=rank)
    return out


def _rng_state() -> dict[str, Any]:
    st = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


def save(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    samples: int,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Collective: save everything needed to continue at ``step`` (steps done so far)."""
    rank, world = _rank_world()
    root = Path(run_dir) / "checkpoints"
    path = root / f"step_{step:08d}"
    if rank == 0 and path.exists():  # left over from a run killed after writing, before `latest`
        shutil.rmtree(path)
    if dist.is_initialized():
        dist.barrier()
    sd: dict[str, Any] = {
        **model_sharded(model),
        **optimizer_sharded(model, opt),
        "rng": mc.ShardedObject("rng", _rng_state(), (world,), (rank,), replica_id=0),
        # Plain values are "common" state, written once by rank 0.
        "opt_step": {names: int(st["step"]) for names, st in _opt_steps(model, opt).items()},
    }
    mc.save(sd, str(path))
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        # `extra` (e.g. wall time so far) is rank 0's; it goes in the meta file, not in the
        # dist checkpoint's common state, which must be identical on every rank.
        meta = {"step": step, "samples": samples, "world_size": world, "extra": extra or {}}
        (path / META).write_text(json.dumps(meta))
        tmp = root / f".{LATEST}.tmp"
        tmp.write_text(path.name)
        os.replace(tmp, root / LATEST)  # atomic: `latest` always names a complete checkpoint
        old = sorted(p for p in root.glob("step_*") if p.is_dir() and p != path)
        for p in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()
    return path


def _opt_steps(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, dict]:
    names = _param_names(model)
    return {names[id(p)]: st for p, st in opt.state.items() if "step" in st}


def latest(run_dir: str | Path) -> tuple[Path, dict] | None:
    """(checkpoint dir, its meta) of the newest complete checkpoint, or None."""
    root = Path(run_dir) / "checkpoints"
    try:
        name = (root / LATEST).read_text().strip()
    except FileNotFoundError:
        return None
    path = root / name
    meta_path = path / META
    if not meta_path.is_file():
        return None
    return path, json.loads(meta_path.read_text())


def load(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Collective: restore model, optimizer and (same world size) RNG. Returns the meta
    ``{step, samples, world_size, extra}`` (``extra`` as rank 0 passed it to ``save``)."""
    rank, world = _rank_world()
    meta = json.loads((Path(path) / META).read_text())
    tmpl: dict[str, Any] = {
        **model_sharded(model, template=True),
        **optimizer_sharded(model, opt, template=True),
        "opt_step": None,
    }
    same_world = meta["world_size"] == world
    if same_world:  # RNG streams are per rank; with another world size they do not map
        tmpl["rng"] = mc.ShardedObject("rng", None, (world,), (rank,), replica_id=0)
    sd = mc.load(tmpl, str(path))
    m = _unwrap(model)
    if hasattr(m, "sharded_state_dict"):
        m.load_state_dict(
            {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}, strict=False
        )
    else:
        m.load_state_dict({k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")})
    names = _param_names(model)
    for group in opt.param_groups:
        for p in group["params"]:
            n = names[id(p)]
            if n not in sd["opt_step"]:
                continue
            opt.state[p] = {
                "step": torch.tensor(float(sd["opt_step"][n])),
                "exp_avg": sd[f"optim.{n}.exp_avg"].to(p.device),
                "exp_avg_sq": sd[f"optim.{n}.exp_avg_sq"].to(p.device),
            }
    if same_world:
        _set_rng_state(sd["rng"])
    return meta


def load_model(path: str | Path, model: nn.Module) -> dict:
    """Collective: restore only the model weights (inference, e.g. ``worldmill encode``), in
    any world size. Returns the checkpoint's meta."""
    meta = json.loads((Path(path) / META).read_text())
    sd = mc.load(model_sharded(model, template=True), str(path))
    m = _unwrap(model)
    m.load_state_dict(
        {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")},
        strict=not hasattr(m, "sharded_state_dict"),
    )
    return meta
