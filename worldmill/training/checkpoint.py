"""Distributed checkpoints (megatron.core dist_checkpointing) of a run's state: the model,
the optimizer (any torch optimizer), the EMA weights, the per-rank RNG and the loader
position. Layout::

    RUN/checkpoints/step_00000040/                 one dist_checkpointing directory per save
    RUN/checkpoints/step_00000040/worldmill.json   {step, samples, world_size, ...}, written last
    RUN/checkpoints/latest                         name of the newest *complete* checkpoint

``latest`` is replaced atomically only after every rank finished writing, so a trainer killed
mid-save resumes from the previous checkpoint, never from a half-written one.

Sharding. Plain-torch models (replicated under DDP) are saved as ShardedTensors with
``replica_id = rank`` (rank 0 writes, the others are replicas); models that provide
``sharded_state_dict()`` (megatron-core modules, tensor-parallel) use their own sharding, so
a checkpoint reloads under another tensor-parallel size. Optimizer state is taken from the
optimizer itself, so any torch optimizer round-trips: every state tensor shaped like its
parameter (Adam's moments, SGD's momentum buffer) is sharded like that parameter, everything
else (step counts, hyper-parameters) is common state. EMA weights are sharded like the
parameters. Loading is strict: a missing or unexpected key is an error.
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


def _megatron_sharded(model: nn.Module) -> dict[str, Any] | None:
    m = _unwrap(model)
    return m.sharded_state_dict(prefix="model.") if hasattr(m, "sharded_state_dict") else None


def model_sharded(model: nn.Module, template: bool = False) -> dict[str, Any]:
    msd = _megatron_sharded(model)
    if msd is not None:  # megatron-core module: its own TP sharding
        return msd
    rank, _ = _rank_world()
    return {
        f"model.{k}": mc.ShardedTensor.from_rank_offsets(
            f"model.{k}", torch.empty_like(v) if template else v.detach(), replica_id=rank
        )
        for k, v in _unwrap(model).state_dict().items()
    }


class _LikeParams:
    """ShardedTensors for tensors shaped like a named parameter (optimizer moments, EMA):
    sharded exactly like the parameter itself."""

    def __init__(self, model: nn.Module):
        self.msd = _megatron_sharded(model)
        self.rank = _rank_world()[0]

    def __call__(self, param_name: str, key: str, t: torch.Tensor) -> Any:
        src = self.msd.get(f"model.{param_name}") if self.msd is not None else None
        if src is not None:
            out = src.without_data()
            # megatron stacks the layers' tensors under one key (each layer a slice of it,
            # keyed without the layer number): keep that key, or layer slices collide.
            out.key, out.data = key.replace(param_name, src.key.removeprefix("model."), 1), t
            return out
        return mc.ShardedTensor.from_rank_offsets(key, t, replica_id=self.rank)


def _param_shaped(v: Any, p: torch.Tensor) -> bool:
    return torch.is_tensor(v) and v.dim() > 0 and v.shape == p.shape


def _optimizer_parts(
    model: nn.Module, opt: torch.optim.Optimizer, like: _LikeParams
) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]:
    """(sharded tensors, common state, {param: [sharded state keys]}) of any optimizer."""
    names = _param_names(model)
    sharded: dict[str, Any] = {}
    per_param: dict[str, dict[str, Any]] = {}
    keys: dict[str, list[str]] = {}
    groups = []
    for g in opt.param_groups:
        groups.append(
            {
                **{k: v for k, v in g.items() if k != "params"},
                "param_names": [names[id(p)] for p in g["params"]],
            }
        )
        for p in g["params"]:
            name = names[id(p)]
            for k, v in opt.state.get(p, {}).items():
                if _param_shaped(v, p):
                    sharded[f"optim.{name}.{k}"] = like(name, f"optim.{name}.{k}", v)
                    keys.setdefault(name, []).append(k)
                else:
                    per_param.setdefault(name, {})[k] = v
    return sharded, {"groups": groups, "state": per_param}, keys


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
    ema: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Collective: save everything needed to continue at ``step`` (steps done so far).
    ``ema`` maps parameter names to their EMA tensors."""
    rank, world = _rank_world()
    root = Path(run_dir) / "checkpoints"
    path = root / f"step_{step:08d}"
    if rank == 0 and path.exists():  # left over from a run killed after writing, before `latest`
        shutil.rmtree(path)
    if dist.is_initialized():
        dist.barrier()
    like = _LikeParams(model)
    optim, optim_common, optim_keys = _optimizer_parts(model, opt, like)
    sd: dict[str, Any] = {
        **model_sharded(model),
        **optim,
        **{f"ema.{n}": like(n, f"ema.{n}", t) for n, t in (ema or {}).items()},
        "rng": mc.ShardedObject("rng", _rng_state(), (world,), (rank,), replica_id=0),
        # Plain values are "common" state, written once by rank 0 (equal on every rank).
        "optim_common": optim_common,
    }
    mc.save(sd, str(path))
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        # `extra` (e.g. wall time so far) is rank 0's; it goes in the meta file, not in the
        # dist checkpoint's common state, which must be identical on every rank.
        meta = {
            "step": step,
            "samples": samples,
            "world_size": world,
            "optimizer": type(opt).__name__,
            "optim_sharded": optim_keys,
            "ema": sorted(ema) if ema else [],
            "model_keys": sorted(model_sharded(model, template=True)),
            "extra": extra or {},
        }
        (path / META).write_text(json.dumps(meta))
        tmp = root / f".{LATEST}.tmp"
        tmp.write_text(path.name)
        os.replace(tmp, root / LATEST)  # atomic: `latest` always names a complete checkpoint
        prune(root, keep, current=path)
    if dist.is_initialized():
        dist.barrier()
    return path


def prune(root: Path, keep: int, current: Path) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (``current`` is always kept), and any
    half-written ``step_*`` directory (no meta file) older than ``current``."""
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p != current)
    doomed = old[: max(0, len(old) - (keep - 1))]
    doomed += [p for p in old if p not in doomed and not (p / META).is_file() and p < current]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


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


def _check_model_keys(path: str | Path, meta: dict, tmpl: dict[str, Any]) -> None:
    """Strict in both directions: dist_checkpointing loads only what the template asks for,
    so a checkpoint of a bigger model would load into a smaller one without this."""
    saved = meta.get("model_keys")
    if saved is None:  # written before model_keys was recorded
        return
    want = set(tmpl)  # the model's own sharded keys
    missing, unexpected = sorted(want - set(saved)), sorted(set(saved) - want)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not fit this model: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]} (model config changed?)"
        )


def _load_model_weights(m: nn.Module, sd: dict[str, Any], prefix: str) -> None:
    weights = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    if hasattr(m, "sharded_state_dict"):
        # megatron modules keep non-persistent extra state (e.g. TE's) outside their sharded
        # dict; anything else missing or unexpected is an error.
        own = m.state_dict()
        for k in own:
            if k.endswith("_extra_state") and k not in weights:
                weights[k] = own[k]
    m.load_state_dict(weights, strict=True)


def load(
    path: str | Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    ema: dict[str, torch.Tensor] | None = None,
) -> dict:
    """Collective: restore model, optimizer, EMA (in place) and (same world size) RNG.
    Returns the meta ``{step, samples, world_size, extra, ...}``."""
    rank, world = _rank_world()
    meta = json.loads((Path(path) / META).read_text())
    m = _unwrap(model)
    by_name = dict(m.named_parameters())
    like = _LikeParams(model)
    saved_keys: dict[str, list[str]] = meta.get("optim_sharded", {})
    if meta.get("optimizer", type(opt).__name__) != type(opt).__name__:
        raise ValueError(
            f"checkpoint {path} holds {meta['optimizer']} state; this run uses "
            f"{type(opt).__name__} (optim.optimizer changed?)"
        )
    if sorted(meta.get("ema", [])) != sorted(ema or {}):
        raise ValueError(f"checkpoint {path}: EMA weights saved/expected differ (optim.ema_decay?)")
    tmpl: dict[str, Any] = {
        **model_sharded(model, template=True),
        **{
            f"optim.{n}.{k}": like(n, f"optim.{n}.{k}", torch.zeros_like(by_name[n]))
            for n, ks in saved_keys.items()
            for k in ks
        },
        **{f"ema.{n}": like(n, f"ema.{n}", torch.zeros_like(t)) for n, t in (ema or {}).items()},
        "optim_common": None,
    }
    _check_model_keys(path, meta, model_sharded(model, template=True))
    same_world = meta["world_size"] == world
    if same_world:  # RNG streams are per rank; with another world size they do not map
        tmpl["rng"] = mc.ShardedObject("rng", None, (world,), (rank,), replica_id=0)
    sd = mc.load(tmpl, str(path))
    _load_model_weights(m, sd, "model.")

    common = sd["optim_common"]
    index: dict[str, int] = {}
    names = _param_names(model)
    for g in opt.param_groups:
        for p in g["params"]:
            index[names[id(p)]] = len(index)
    groups = []
    for g in common["groups"]:
        missing = [n for n in g["param_names"] if n not in index]
        if missing:
            raise ValueError(f"checkpoint {path}: optimizer has no parameter(s) {missing[:3]}")
        groups.append(
            {
                **{k: v for k, v in g.items() if k != "param_names"},
                "params": [index[n] for n in g["param_names"]],
            }
        )
    state: dict[int, dict[str, Any]] = {}
    for n in set(saved_keys) | set(common["state"]):
        st = dict(common["state"].get(n, {}))
        st.update({k: sd[f"optim.{n}.{k}"] for k in saved_keys.get(n, [])})
        state[index[n]] = st
    opt.load_state_dict({"state": state, "param_groups": groups})
    for n, t in (ema or {}).items():
        t.copy_(sd[f"ema.{n}"])
    if same_world:
        _set_rng_state(sd["rng"])
    return meta


def load_model(path: str | Path, model: nn.Module, use_ema: bool = True) -> dict:
    """Collective: restore only the model weights (inference: ``worldmill encode``,
    generation), in any world size; the EMA weights when the run kept them and ``use_ema``.
    Returns the checkpoint's meta."""
    meta = json.loads((Path(path) / META).read_text())
    m = _unwrap(model)
    tmpl = model_sharded(model, template=True)
    _check_model_keys(path, meta, tmpl)
    ema_names = meta.get("ema", []) if use_ema else []
    if ema_names:
        like = _LikeParams(model)
        params = dict(m.named_parameters())
        tmpl.update(
            {f"ema.{n}": like(n, f"ema.{n}", torch.zeros_like(params[n])) for n in ema_names}
        )
    sd = mc.load(tmpl, str(path))
    for n in ema_names:  # EMA replaces the raw weights of the parameters it tracks
        sd[f"model.{n}"] = sd.pop(f"ema.{n}")
    _load_model_weights(m, sd, "model.")
    return meta
