"""``worldmill train diffusion``: encodes the shards with the upstream CV tokenizer when no
latent cache exists, trains, writes every metric (Video2World and Text2World camera
control) on held-out whole videos, and ``worldmill generate`` works on the run."""

from __future__ import annotations

import json

import numpy as np

from worldmill.training import cli, latents, metrics
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
    e = np.zeros(384, np.float32)
    text = {"a": ("A slow pan to the right over x", e), "b": ("A slow pan to the right over y", e),
            "c": ("A slow zoom in on z", e), "d": ("no motion named", e)}  # fmt: skip
    got = camera_prompts(text, {"b"}, per_class=1)
    assert [(m, c) for m, c, _ in got] == [
        ("pan_right", "A slow pan to the right over y"),  # held-out clips first
        ("zoom_in", "A slow zoom in on z"),
    ]
    assert len(camera_prompts({"d": ("none", e)}, set(), 2)) == 6  # templates
