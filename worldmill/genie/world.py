"""The interactive Genie world: an image in, one generated frame per latent action out.

    world = GenieWorld.load("runs/genie")        # a dynamics run, or a folder with RUN/dynamics
    frame = world.reset(image, seed=0)           # (size, size, 3) uint8: the prompt frame
    frame = world.step(3)                        # next frame under latent action 3

``reset`` resizes (short side to ``size``) and centre-crops the image and encodes it with
the run's DV tokenizer; ``step`` generates the next frame's tokens with the dynamics
model's MaskGIT decoding from the whole history (the last ``max_t - 1`` frames and their
actions: the context window slides) and decodes them. Everything random draws from one
``torch.Generator`` seeded by ``reset``, so the same run, image, seed and actions give
identical frames (``play_frames``). Models load on CPU (or the first GPU), in eval mode,
without Prefect or torchrun.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from worldmill.genie import data as gd


def find_run(run: str | Path) -> Path:
    """The dynamics run folder: ``run`` itself or ``run/dynamics``."""
    run = Path(run)
    for cand in (run, run / "dynamics"):
        cfg = cand / "config.json"
        if cfg.is_file() and json.loads(cfg.read_text()).get("kind") == "dynamics":
            return cand
    raise FileNotFoundError(f"{run} is not a dynamics run and holds none at {run / 'dynamics'}")


def fit_image(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 any size -> ``(size, size, 3)``: short side to ``size`` (area
    interpolation when shrinking), centre crop."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got {img.shape}")
    img = img.astype(np.uint8, copy=False)
    h, w = img.shape[:2]
    s = size / min(h, w)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    img = cv2.resize(img, (nw, nh), interpolation=interp)
    return gd.square(img[None], size)[0]


class GenieWorld:
    """A loaded Genie (tokenizer + dynamics model) and one interactive episode's history."""

    num_actions: int  # LAM codebook size (8 by default)
    size: int  # frame side in pixels (square frames)

    def __init__(
        self, tokenizer, dynamics, size: int, steps: int, temperature: float, argmax=False
    ):
        self.tokenizer, self.dynamics = tokenizer, dynamics
        self.argmax = argmax  # MaskGIT takes the most likely tokens instead of drawing
        self.size, self.num_actions = size, dynamics.cfg.num_actions
        self.steps, self.temperature = steps, temperature
        self.device = next(dynamics.parameters()).device
        self._tokens: torch.Tensor | None = None  # (1, T, h, w) the history
        self._actions: list[int] = []
        self._gen: torch.Generator | None = None

    @classmethod
    def load(
        cls, run: str | Path, steps: int | None = None, temperature: float | None = None
    ) -> GenieWorld:
        """Load a dynamics run (its config names the tokenizer and lam runs). ``steps`` /
        ``temperature``: MaskGIT decoding (default: the run's ``sample`` settings)."""
        import torch.distributed as dist

        from worldmill.training import checkpoint, encode
        from worldmill.training import megatron as mc
        from worldmill.training.kinds.dynamics import dynamics_config, upstream_shapes
        from worldmill.training.registry import load_run_config

        run = find_run(run)
        cfg = load_run_config(run)
        ck = checkpoint.latest(run)
        if ck is None:
            raise FileNotFoundError(f"no complete checkpoint under {run / 'checkpoints'}")
        shapes = upstream_shapes(cfg.tokenizer, cfg.lam)
        from worldmill.models.dynamics import DynamicsModel

        model = DynamicsModel(dynamics_config(cfg, shapes))
        group = contextlib.nullcontext() if dist.is_initialized() else mc.single_process(0)
        with group:
            tok = encode.load_tokenizer_in_group(cfg.tokenizer)[0]
            checkpoint.load_model(ck[0], model)
        dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        return cls(
            tok.to(dev).eval(),
            model.to(dev).eval(),
            shapes["size"],
            cfg.sample.steps if steps is None else steps,
            cfg.sample.temperature if temperature is None else temperature,
            cfg.sample.argmax,
        )

    def _decode(self, tokens: torch.Tensor) -> np.ndarray:  # (1, h, w) -> (size, size, 3)
        x = gd.decode_frames(self.tokenizer, tokens)[0]
        return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()

    @torch.no_grad()
    def reset(self, image: np.ndarray, seed: int = 0) -> np.ndarray:
        """Start an episode from ``image`` (H, W, 3) uint8: returns the first frame
        ``(size, size, 3)`` uint8 (the image resized and centre-cropped); clears history."""
        frame = fit_image(image, self.size)
        x = gd.to_frames(frame[None])
        self._tokens = gd.encode_frames(self.tokenizer, x)[None].to(self.device)
        self._actions = []
        self._gen = torch.Generator(device=self.device).manual_seed(int(seed))
        return frame

    @torch.no_grad()
    def step(self, action: int) -> np.ndarray:
        """The next frame ``(size, size, 3)`` uint8 under latent ``action`` in
        ``[0, num_actions)``, generated from the history (window of ``max_t - 1`` frames)."""
        if self._tokens is None:
            raise RuntimeError("call reset(image) before step(action)")
        a = int(action)
        if not 0 <= a < self.num_actions:
            raise ValueError(f"action {action} is not in [0, {self.num_actions})")
        self._actions.append(a)  # _actions[i]: the transition out of history frame i
        acts = torch.tensor([self._actions], dtype=torch.long, device=self.device)
        new = self.dynamics.next_frame(
            self._tokens, acts, self.steps, self.temperature, self._gen, not self.argmax
        )
        # keep the window the next step reads: the last max_t - 1 frames and their actions
        keep = self.dynamics.cfg.max_t - 1
        self._tokens = torch.cat([self._tokens, new[:, None]], 1)[:, -keep:]
        self._actions = self._actions[len(self._actions) + 1 - self._tokens.shape[1] :]
        return self._decode(new)


def play_frames(run, image: np.ndarray, actions: list[int], seed: int = 0) -> list[np.ndarray]:
    """``reset(image, seed)`` then ``step(a)`` for each action: the frames a page must show
    for the same run, image, seed and actions (first frame included)."""
    world = run if isinstance(run, GenieWorld) else GenieWorld.load(run)
    frames = [world.reset(image, seed)]
    frames += [world.step(a) for a in actions]
    return frames
