"""The one module that imports ``megatron.core``.

Everything Megatron-specific that worldmill uses goes through here: process-group and
model-parallel setup, the RNG tracker, ``dist_checkpointing`` save/load, sharded-tensor
wrappers, and a small GPT builder (local spec) for the GPT training kind and the benches.

CPU adaptation. megatron-core 0.16.1 assumes CUDA in a few places; with CPU-only torch we
(1) build models with ``TransformerConfig(use_cpu_initialization=True)``, (2) seed the
tensor-parallel RNG tracker with ``initialize_rng_tracker(inference_rng_tracker=True)``
instead of ``model_parallel_cuda_manual_seed`` (which calls into ``torch.cuda``), (3) swap
``parallel_state._GLOBAL_MEMORY_BUFFER`` for one that allocates on CPU, and (4) shim
``torch.cuda.synchronize`` / ``torch.cuda.current_device`` *only while*
``dist_checkpointing.save``/``load`` run. All of it is applied only when CUDA is absent;
on a GPU the real Megatron paths run untouched.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

with warnings.catch_warnings():
    # "Transformer Engine and Apex are not installed": expected; local fallbacks are used.
    warnings.simplefilter("ignore", UserWarning)
    from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
    from megatron.core.dist_checkpointing import ShardedObject, ShardedTensor
    from megatron.core.inference.contexts import StaticInferenceContext
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.transformer_config import TransformerConfig
    from megatron.core.transformer.utils import sharded_state_dict_default
    from megatron.core.utils import GlobalMemoryBuffer

CPU = not torch.cuda.is_available()

__all__ = [
    "CPU",
    "ShardedObject",
    "ShardedTensor",
    "build_dit_block",
    "build_gpt",
    "destroy",
    "device",
    "dp_group",
    "dp_size",
    "inference_context",
    "inference_shims",
    "init",
    "load",
    "save",
    "seed_rng",
    "sharded_state_dict",
    "tp_rank",
    "tp_size",
]


class _CPUMemoryBuffer(GlobalMemoryBuffer):
    """``GlobalMemoryBuffer`` whose scratch tensors live on CPU (the stock one asks CUDA)."""

    def get_tensor(self, tensor_shape, dtype, name, mem_alloc_context=None):  # noqa: D401
        required = functools.reduce(lambda a, b: a * b, tensor_shape, 1)
        buf = self.buffer.get((name, dtype))
        if buf is None or buf.numel() < required:
            buf = self.buffer[(name, dtype)] = torch.empty(required, dtype=dtype)
        return buf[:required].view(*tensor_shape)


@contextlib.contextmanager
def _cuda_shims() -> Iterator[None]:
    """Make the two CUDA calls in dist_checkpointing harmless on CPU, for this block only."""
    if not CPU:
        yield
        return
    sync, cur = torch.cuda.synchronize, torch.cuda.current_device
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.current_device = lambda: "cpu"  # used as a device= argument
    try:
        yield
    finally:
        torch.cuda.synchronize, torch.cuda.current_device = sync, cur


def init(tensor_parallel: int = 1, seed: int = 0) -> None:
    """Join the torchrun process group (gloo on CPU, nccl on GPU) and set up model parallelism.

    Reads RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT from the environment that torchrun sets;
    without them (plain ``python``) a single-process group is created.
    """
    if not dist.is_initialized():
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        if not CPU:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("gloo" if CPU else "nccl")
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tensor_parallel)
    if CPU:
        parallel_state._GLOBAL_MEMORY_BUFFER = _CPUMemoryBuffer()
    seed_rng(seed)


@contextlib.contextmanager
def single_process(seed: int = 0) -> Iterator[None]:
    """A 1-process group (and model parallelism) for work outside torchrun -- loading a
    checkpoint to encode or generate, a test -- torn down after, with the environment it
    set (RANK, MASTER_PORT, ...) restored so a later one gets a fresh port. Inside an
    existing group it does nothing."""
    if dist.is_initialized():  # already in a group (a trainer, a test module's): use it
        yield
        return
    keys = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: os.environ.get(k) for k in keys}
    init(seed=seed)
    try:
        yield
    finally:
        destroy()
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def seed_rng(seed: int) -> None:
    """Seed torch and Megatron's tensor-parallel RNG tracker (same seed on every rank)."""
    torch.manual_seed(seed)
    if CPU:
        tensor_parallel.random.initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)
    else:
        tensor_parallel.model_parallel_cuda_manual_seed(seed)


def destroy() -> None:
    """Tear down model parallelism and the process group (end of a training process)."""
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def device() -> torch.device:
    """This rank's device: its GPU under torchrun (LOCAL_RANK), else the CPU."""
    if CPU:
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def dp_size() -> int:
    """Data-parallel world size (ranks that hold the same model shard)."""
    return parallel_state.get_data_parallel_world_size()


def dp_group() -> Any:
    """The data-parallel process group (what DDP all-reduces over)."""
    return parallel_state.get_data_parallel_group()


def tp_rank() -> int:
    return parallel_state.get_tensor_model_parallel_rank()


def tp_size() -> int:
    return parallel_state.get_tensor_model_parallel_world_size()


def save(sharded_state_dict: dict[str, Any], checkpoint_dir: str) -> None:
    """Collective: write a distributed checkpoint (every rank calls this)."""
    os.makedirs(checkpoint_dir, exist_ok=True)
    with _cuda_shims(), _exit_if_a_writer_is_killed():
        dist_checkpointing.save(sharded_state_dict, checkpoint_dir)


@contextlib.contextmanager
def _exit_if_a_writer_is_killed(poll_s: float = 0.2) -> Iterator[None]:
    """End this rank (exit 1) if a checkpoint writer process dies by a signal.

    megatron's ``FileSystemWriterAsync`` forks writer processes and waits on a
    ``JoinableQueue`` that each writer marks done as it finishes; a writer killed before
    that (an OOM kill picks the biggest process) leaves the rank waiting forever, and its
    peers with it. Exiting instead makes torchrun fail the attempt, and the flow's retry
    resumes from the last complete checkpoint (a partial one never becomes ``latest``).
    """
    import multiprocessing.process as mp_process
    import threading

    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(poll_s):
            # ``exitcode`` polls with WNOHANG and records the code, as ``join`` would.
            for p in list(mp_process._children):  # this process's multiprocessing children
                code = p.exitcode
                if code is not None and code < 0:
                    print(
                        f"checkpoint writer pid {p.pid} killed by signal {-code}; "
                        "ending this rank so that the launch fails and is retried",
                        flush=True,
                    )
                    os._exit(1)

    t = threading.Thread(target=watch, name="ckpt-writer-watch", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def load(sharded_state_dict: dict[str, Any], checkpoint_dir: str) -> dict[str, Any]:
    """Collective: read a distributed checkpoint into tensors shaped like the template.

    The template's ShardedTensors say which slice each rank wants, so a checkpoint written
    with one tensor-parallel size loads into another (resharding).
    """
    with _cuda_shims():
        return dist_checkpointing.load(sharded_state_dict, checkpoint_dir)


def build_gpt(
    vocab_size: int,
    max_seq_len: int,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    ffn_hidden_size: int | None = None,
    *,
    num_query_groups: int | None = None,
    swiglu: bool = False,
    rmsnorm: bool = False,
    position_embedding_type: str = "learned_absolute",
    dropout: float = 0.0,
) -> GPTModel:
    """A megatron-core ``GPTModel`` with the local (non Transformer-Engine) layer spec.

    ``num_query_groups`` < heads = grouped-query attention; ``swiglu`` = gated SiLU MLP
    (Llama / Cosmos AR); ``rmsnorm`` = RMSNorm instead of LayerNorm;
    ``position_embedding_type="none"`` when the caller adds its own positions to
    ``decoder_input`` (the AR world model's 3D (t, h, w) embeddings)."""
    import torch.nn.functional as F

    norm = "RMSNorm" if rmsnorm else "LayerNorm"
    cfg = TransformerConfig(
        num_layers=num_layers,
        hidden_size=hidden_size,
        num_attention_heads=num_heads,
        num_query_groups=num_query_groups,
        ffn_hidden_size=ffn_hidden_size or 4 * hidden_size,
        gated_linear_unit=swiglu,
        activation_func=F.silu if swiglu else F.gelu,
        normalization=norm,
        use_cpu_initialization=CPU,
        hidden_dropout=dropout,  # residual-branch and attention-probability dropout
        attention_dropout=dropout,
        tensor_model_parallel_size=tp_size(),
    )
    return GPTModel(
        config=cfg,
        transformer_layer_spec=get_gpt_layer_local_spec(normalization=norm),
        vocab_size=vocab_size,
        max_sequence_length=max_seq_len,
        position_embedding_type=position_embedding_type,
        share_embeddings_and_output_weights=True,
    )


def build_dit_block(
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    ffn_hidden_size: int | None = None,
) -> torch.nn.Module:
    """A megatron-core ``TransformerBlock`` of DiT layers (local spec): unmasked
    self-attention, cross-attention (keys / values: a context of width ``hidden_size``, the
    caption tokens) and a GELU MLP, each behind its own LayerNorm; no final norm (the DiT's
    adaLN-zero output layer has its own).

    The diffusion world model (``models/dit.py``) calls each layer's submodules itself
    (``input_layernorm``, ``self_attention``, ``pre_cross_attn_layernorm``,
    ``cross_attention``, ``pre_mlp_layernorm``, ``mlp``) to put adaLN-zero modulation
    around them: megatron-core's ``TransformerLayer.forward`` has no conditioning hook."""
    import torch.nn.functional as F
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.attention import (
        CrossAttention,
        CrossAttentionSubmodules,
        SelfAttention,
        SelfAttentionSubmodules,
    )
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_block import TransformerBlock
    from megatron.core.transformer.transformer_layer import TransformerLayerSubmodules

    local = get_gpt_layer_local_spec(normalization="LayerNorm")
    sub = local.submodules
    no_mask = {"attn_mask_type": AttnMaskType.no_mask}
    spec = ModuleSpec(
        module=local.module,
        submodules=TransformerLayerSubmodules(
            input_layernorm=sub.input_layernorm,
            self_attention=ModuleSpec(
                module=SelfAttention,
                params=no_mask,
                submodules=SelfAttentionSubmodules(
                    linear_qkv=ColumnParallelLinear,
                    core_attention=DotProductAttention,
                    linear_proj=RowParallelLinear,
                ),
            ),
            self_attn_bda=sub.self_attn_bda,
            pre_cross_attn_layernorm=sub.input_layernorm,
            cross_attention=ModuleSpec(
                module=CrossAttention,
                params=no_mask,
                submodules=CrossAttentionSubmodules(
                    linear_q=ColumnParallelLinear,
                    linear_kv=ColumnParallelLinear,
                    core_attention=DotProductAttention,
                    linear_proj=RowParallelLinear,
                ),
            ),
            cross_attn_bda=sub.self_attn_bda,
            pre_mlp_layernorm=sub.pre_mlp_layernorm,
            mlp=sub.mlp,
            mlp_bda=sub.mlp_bda,
        ),
    )
    cfg = TransformerConfig(
        num_layers=num_layers,
        hidden_size=hidden_size,
        num_attention_heads=num_heads,
        ffn_hidden_size=ffn_hidden_size or 4 * hidden_size,
        activation_func=F.gelu,
        normalization="LayerNorm",
        use_cpu_initialization=CPU,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=tp_size(),
    )
    return TransformerBlock(cfg, spec, post_layer_norm=False)


def sharded_state_dict(module: torch.nn.Module, prefix: str = "") -> dict[str, Any]:
    """Sharded state dict of a plain ``nn.Module`` wrapping megatron-core modules (e.g. a
    ``GPTModel`` plus its own embeddings): megatron children keep their tensor-parallel
    sharding, plain parameters are saved once (replicated over TP / DP ranks)."""
    out: dict[str, Any] = {}
    for name, child in module.named_children():
        out.update(sharded_state_dict_default(child, f"{prefix}{name}.", (), None))
    own = {n: p for n, p in module.named_parameters(recurse=False)}
    own.update({n: b for n, b in module.named_buffers(recurse=False) if b is not None})
    for n, t in own.items():
        key = f"{prefix}{n}"
        out[key] = ShardedTensor.from_rank_offsets(
            key, t.detach(), replica_id=(0, tp_rank(), parallel_state.get_data_parallel_rank())
        )
    return out


def inference_context(max_batch_size: int, max_seq_len: int) -> StaticInferenceContext:
    """megatron-core's static KV cache, passed to ``GPTModel.forward(inference_context=)``;
    the caller advances ``sequence_len_offset`` after each forward. Run the forwards inside
    ``inference_shims()`` (the cache is allocated on ``torch.cuda.current_device()``)."""
    return StaticInferenceContext(max_batch_size, max_seq_len)


def inference_shims() -> contextlib.AbstractContextManager:
    """On CPU: ``torch.cuda.current_device() -> "cpu"`` while a KV cache is allocated (the
    same isolated shim as for checkpoints); on GPU: nothing."""
    return _cuda_shims()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
