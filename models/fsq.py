"""Finite Scalar Quantization (Mentzer et al., 2023, "FSQ: VQ-VAE made simple").

Each of ``len(levels)`` latent channels is bounded with tanh and rounded to one of
``levels[i]`` values; the straight-through estimator passes gradients through the rounding.
The implicit codebook has ``prod(levels)`` entries and no learned parameters, so it cannot
collapse. Cosmos DV tokenizers use levels ``[8, 8, 8, 5, 5, 5]`` = 64,000 codes; worldmill's
default is ``[32, 16, 16, 8]`` = 65,536 (same 16 bits, see ``models/tokenizer.py``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FSQ(nn.Module):
    """Quantize ``(..., D)`` with ``D = len(levels)`` to codes and integer token ids."""

    def __init__(self, levels: list[int]):
        super().__init__()
        if not levels or any(lv < 2 for lv in levels):
            raise ValueError(f"FSQ levels must all be >= 2, got {levels}")
        lv = torch.tensor(levels, dtype=torch.int64)
        # basis[i] = prod(levels[:i]): mixed-radix digits -> one integer id per position.
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.int64), lv[:-1]]), 0)
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.codebook_size = int(math.prod(levels))

    @property
    def dim(self) -> int:
        return len(self.levels)

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        # Maps to (-half_l, half_l); the offset makes even level counts symmetric
        # (e.g. 8 levels -> {-4..3} shifted by 0.5 before rounding), as in the paper.
        half_l = (self.levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z (..., D)`` float -> (codes ``(..., D)`` in [-1, 1], ids ``(...)`` int64)."""
        bounded = self._bound(z)
        rounded = bounded + (bounded.round() - bounded).detach()  # straight-through
        half_w = (self.levels // 2).to(z.dtype)
        codes = rounded / half_w
        return codes, self.codes_to_ids(codes)

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        half_w = self.levels // 2
        digits = (codes.detach() * half_w).round().long() + half_w  # 0 .. levels-1
        return (digits * self.basis).sum(-1)

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids (...)`` int64 -> codes ``(..., D)`` in [-1, 1]."""
        half_w = self.levels // 2
        digits = (ids.unsqueeze(-1) // self.basis) % self.levels
        return (digits - half_w).float() / half_w
