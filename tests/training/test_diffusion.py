"""``worldmill train diffusion``: encodes the shards with the upstream CV tokenizer when no
latent cache exists, trains, writes every metric (Video2World and Text2World camera
control) on held-out whole videos, and ``worldmill generate`` works on the run."""

from __future__ import annotations

import json

import numpy as np
import torch

from worldmill.training import cli, latents, metrics
from worldmill.training.camera import camera_phrase, prompt_conditions, reverse_caption
from worldmill.training.kinds.diffusion import camera_prompts, caption_motion
from worldmill.training.registry import get_spec

TINY_DIFF = list(get_spec("diffusion").tiny)


def _train(shards, tokenizer, out, *extra: str) -> int:
    args = ["diffusion", "--data", str(shards), "--tokenizer", str(tokenizer), "--out", str(out)]
    sets = [*TINY_DIFF, "run.steps=3", "run.checkpoint_every=3", "run.nproc=1", *extra]
    return cli.main([*args, "--no-prefect", *[x for s in sets for x in ("--set", s)]])


def test_train_diffusion_end_to_end_then_generate(shards, tiny_run, tmp_path):
    tok = tiny_run("tokenizer")  # the tiny CV tokenizer (4 latent channels)
    run = tmp_path / "dit"
    assert _train(shards, tok, run) == 0
    m = json.loads((run / "metrics.json").read_text())
    keys = ("psnr", "ssim", "baseline_psnr", "baseline_ssim", "copy_psnr", "tokenizer_psnr",
            "camera_motion_accuracy", "camera_motion_accuracy_g1", "camera_motion_chance")  # fmt: skip
    for k in keys:
        assert isinstance(m[k], float) and np.isfinite(m[k]), k
    assert m["kind"] == "diffusion" and m["steps"] == 3
    assert m["eval_clips"] == 2 and m["eval_windows"] == 10  # centre + 4 corners of 8x8
    # the sample shards' captions name no motion: the captioner-style templates, 6 classes
    assert m["camera_motion_chance"] == 1 / 6 and len(m["camera_motion_accuracy_estimated"]) == 6
    for png in ("predict.png", "text2world.png"):
        assert (run / png).stat().st_size > 1000
    refs = latents.index_latents(run / "tokens", "latent")
    assert len(refs) == 8 and refs[0].shape == (4, 6, 8, 8)  # (C, T', H', W')
    assert [r["step"] for r in metrics.read_log(run / "log.jsonl")] == [1, 2, 3]

    from worldmill.generate import GenerateRequest, generate
    from worldmill.training import data

    t2w = generate(run, GenerateRequest(prompt="A slow pan to the left", frames=3, seed=1),
                   tmp_path / "t2w.mp4")  # fmt: skip
    assert t2w["mode"] == "text2world" and t2w["frames"] == 9  # 3 latent frames, 4x
    assert t2w["size"] == [32, 32] and t2w["guardrails"]["enabled"]
    png = tmp_path / "first.png"
    from PIL import Image

    Image.fromarray(data.decode_clip(data.index_shards(shards)[0], 64)[0]).save(png)
    req = GenerateRequest(prompt="a camera panning over coins", image=str(png), frames=3, seed=2)
    a = generate(run, req, tmp_path / "v2w.mp4")
    assert a["mode"] == "video2world" and a["frames"] == 13  # 1 given + 3 new latent frames
    generate(run, req, tmp_path / "v2w2.mp4")
    assert (tmp_path / "v2w.png").read_bytes() == (tmp_path / "v2w2.png").read_bytes()


def test_bad_diffusion_config_names_the_key_and_needs_a_cv_tokenizer(
    shards, tiny_run, tmp_path, capsys
):
    tok = tiny_run("tokenizer")
    assert _train(shards, tok, tmp_path / "a", "sample.guidance=-1") == 2
    assert "sample.guidance" in capsys.readouterr().err
    assert _train(shards, tok, tmp_path / "b", "model.preset=huge") == 2
    assert "model.preset" in capsys.readouterr().err
    dv = tiny_run("tokenizer", get_spec("ar").tiny_upstream["tokenizer"])
    assert _train(shards, dv, tmp_path / "c") == 2
    assert "tokenizer:" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_camera_prompts_come_from_captions_naming_a_motion():
    assert caption_motion("A steady pan to the left across a beach.") == "pan_left"
    assert caption_motion("A slow tilt down over a city") == "tilt_down"
    assert caption_motion("A fast zoom out from a field") == "zoom_out"
    assert caption_motion("A static shot of a dog") == "static"
    assert caption_motion("a camera panning over coins") is None
    # the phrase the model is conditioned on, pace word kept
    assert camera_phrase("A steady pan to the left across a beach.") == "steady pan to the left"
    assert camera_phrase("A tilt up over x") == "tilt up"
    assert camera_phrase("a camera panning over coins") is None
    cond = prompt_conditions(["A slow zoom in on z", "a camera panning over coins"])
    assert cond.shape == (2, 771) and not cond[1, 384:].any() and cond[0, 384:768].any()
    assert cond[0, 768:].tolist() == [0, 0, 1]  # the motion code: content expands
    code = prompt_conditions(["A steady pan to the left", "A tilt up over x"])[:, 768:]
    assert code.tolist() == [[1, 0, 0], [0, 1, 0]]  # content moves right / down
    e = np.zeros(384, np.float32)
    text = {"a": ("A slow pan to the right over x", e), "b": ("A slow pan to the right over y", e),
            "c": ("A slow zoom in on z", e), "d": ("no motion named", e)}  # fmt: skip
    got = camera_prompts(text, {"b"}, per_class=1)
    assert [(m, c) for m, c, _ in got] == [
        ("pan_right", "A slow pan to the right over y"),  # held-out clips first
        ("zoom_in", "A slow zoom in on z"),
    ]
    assert len(camera_prompts({"d": ("none", e)}, set(), 2)) == 6  # templates


def _filmed(motion: str, frames: int = 13, size: int = 96) -> np.ndarray:
    """``(frames, size, size, 3)`` uint8: a smooth random texture filmed by a camera that
    moves 0.4 px per frame (pan / tilt) or scales its window by 1 % per frame (zoom)."""
    import cv2

    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(
        rng.uniform(0, 255, (3 * size, 3 * size, 3)).astype(np.float32), (0, 0), 3
    )
    tex = cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX)
    c = 1.5 * size
    out = []
    for i in range(frames):
        dx = {"pan_right": 0.4, "pan_left": -0.4}.get(motion, 0.0) * i  # camera moves right
        dy = {"tilt_down": 0.4, "tilt_up": -0.4}.get(motion, 0.0) * i
        s = {"zoom_in": 1.01, "zoom_out": 1 / 1.01}.get(motion, 1.0) ** i  # content scale
        m = np.array([[s, 0, size / 2 - s * (c + dx)], [0, s, size / 2 - s * (c + dy)]])
        out.append(cv2.warpAffine(tex, m, (size, size), flags=cv2.INTER_CUBIC))
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def test_camera_estimator_reads_slow_motion_one_latent_frame_apart():
    from worldmill.sample_world import MOTIONS
    from worldmill.training.camera import estimate_camera

    # 0.4 px per frame: what the world corpus's slowest pans give at 96 px
    for motion in MOTIONS:
        assert estimate_camera(_filmed(motion), 24.0, stride=4) == motion, motion


def test_reversed_windows_play_backwards_with_the_camera_words_swapped():
    from types import SimpleNamespace

    from worldmill.training.latents import ReversibleWindowStream

    assert (
        reverse_caption("A steady pan to the left across x.")
        == "A steady pan to the right across x."
    )
    assert reverse_caption("A slow zoom out from y") == "A slow zoom in from y"
    assert reverse_caption("A tilt up over z") == "A tilt down over z"
    assert reverse_caption("A static shot of a dog") == "A static shot of a dog"
    rng = np.random.default_rng(0)
    refs = [SimpleNamespace(clip_id=f"c{i}") for i in range(3)]
    text = {r.clip_id: ("caption", rng.normal(size=5).astype(np.float32)) for r in refs}
    back = {r.clip_id: rng.normal(size=5).astype(np.float32) for r in refs}

    def stream(prob):
        s = ReversibleWindowStream(refs, text, 4, 3, 2, reverse_prob=prob, reversed_text=back)
        for r in refs:  # (C, T', H', W') latents, as the cache holds them
            s.cache._c[r.clip_id] = rng.normal(size=(2, 3, 2, 2)).astype(np.float32)
        return s

    fwd, rev, half = stream(0.0), stream(1.0), stream(0.5)
    for s in (rev, half):
        s.cache._c = fwd.cache._c
    a, b, c = fwd.batch(0), rev.batch(0), half.batch(0)
    torch.testing.assert_close(b["x"], a["x"].flip(2))  # (B, C, t, H, W): time reversed
    ids = [fwd.ref_at(p).clip_id for p in range(4)]
    torch.testing.assert_close(b["text"], torch.from_numpy(np.stack([back[i] for i in ids])))
    flipped = [bool((c["x"][i] != a["x"][i]).any()) for i in range(4)]
    assert any(flipped) and not all(flipped)  # seed 0: some windows of 4 at p = 0.5
    for i, f in enumerate(flipped):
        torch.testing.assert_close(c["text"][i], b["text"][i] if f else a["text"][i])
    torch.testing.assert_close(half.batch(0)["x"], c["x"])  # the same batch again (resume)
