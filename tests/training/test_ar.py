"""``worldmill train ar``: encodes the shards with the upstream DV tokenizer when no token
cache exists (once), trains, and writes every metric on held-out whole videos."""

from __future__ import annotations

import json

import numpy as np

from tests.training.conftest import TINY_AR
from worldmill.training import cli, latents, metrics


def _train(shards, tokenizer, out, *extra: str) -> int:
    args = ["ar", "--data", str(shards), "--tokenizer", str(tokenizer), "--out", str(out)]
    sets = [*TINY_AR, "run.steps=4", "run.checkpoint_every=2", *extra]
    return cli.main([*args, "--no-prefect", *[x for s in sets for x in ("--set", s)]])


def test_train_ar_end_to_end_encodes_once_and_writes_all_metrics(shards, dv_tokenizer, tmp_path):
    run = tmp_path / "ar"
    assert _train(shards, dv_tokenizer, run) == 0
    m = json.loads((run / "metrics.json").read_text())
    scores = ("psnr", "ssim", "baseline_psnr", "baseline_ssim", "copy_psnr", "tokenizer_psnr")
    modes = ("tokens", "expected_code", "pixel_mean")
    for k in (*scores, *(f"{s}_{p}" for s in ("psnr", "ssim") for p in modes)):
        assert isinstance(m[k], float) and m[k] == m[k], k  # present and not NaN
    assert m["psnr"] == m[f"psnr_{m['predict']}"]
    assert 0 < m["ssim"] <= 1 and 0 < m["baseline_ssim"] <= 1
    assert m["kind"] == "ar" and m["vocab_size"] == 64 and m["steps"] == 4
    # 2 held-out clips x 5 windows (centre + corners of the 8x8 token grid)
    assert m["eval_clips"] == 2 and m["eval_windows"] == 10
    # 1 validation video (data.val): the calibration's fit and its own scores
    cal = m["calibration"]
    assert cal["val_clips"] == 1 and m["val_windows"] == 5
    assert m["val_psnr"] == max(cal["val_psnr"].values()) >= m["val_psnr_uncalibrated"]
    assert cal["val_psnr"][str(cal["copy_bias"])] == m["val_psnr"]
    nll = cal["nll_fit"]
    assert nll["tokens"] == 5 * 2 * 16 and nll["nll_after"] <= nll["nll_before"]
    assert isinstance(m["val_baseline_psnr"], float)
    assert (run / "predict.png").stat().st_size > 1000
    assert "predict.png" in json.loads((run / "figures.json").read_text())
    log = metrics.read_log(run / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4] and "bits_per_token" in log[0]

    # the token cache: every clip once, captions embedded, tied to the tokenizer checkpoint
    tokens = run / "tokens"
    refs = latents.index_latents(tokens)
    assert len(refs) == 8 and all(r.source is not None for r in refs)
    assert all(r.shape == (6, 8, 8) for r in refs)  # 21 frames at 64 px -> 6 x 8 x 8 tokens
    text = latents.caption_embeddings(tokens / latents.TEXT_FILE)
    assert set(text) == {r.clip_id for r in refs}
    assert "panning" in next(iter(text.values()))[0]
    train, held = latents.split_holdout(refs, 2)
    videos = lambda rs: {r.source.meta.get("video_id", r.clip_id) for r in rs}  # noqa: E731
    assert not videos(train) & videos(held)

    _generate_is_a_pure_function_of_its_arguments(run, shards)

    # a second run on the same folder reuses the cache instead of re-encoding
    stamp = (tokens / "manifest.json").stat().st_mtime_ns
    assert _train(shards, dv_tokenizer, run, "run.steps=6") == 0
    assert (tokens / "manifest.json").stat().st_mtime_ns == stamp


def _generate_is_a_pure_function_of_its_arguments(run, shards):
    """Video2World from one image and from a clip: uint8 frames, same seed same video."""
    from worldmill.models.ar import generate_ar
    from worldmill.training import data

    ref = data.index_shards(shards)[0]
    clip = data.decode_clip(ref, 64)  # (24, 64, 64, 3) uint8
    a = generate_ar(run, "a camera panning over coins", clip[0], frames=2, seed=1)
    b = generate_ar(run, "a camera panning over coins", clip[0], frames=2, seed=1)
    assert a.dtype == np.uint8 and a.shape == (9, 32, 32, 3)  # 3 latent frames, 4x4 tokens
    assert np.array_equal(a, b)
    c = generate_ar(run, "a camera panning over coins", clip, frames=1, seed=1, temperature=0)
    assert c.shape == (9, 32, 32, 3)  # 2 context latent frames (max_t - 1) + 1 generated


def test_train_ar_reads_a_worldmill_encode_output(shards, dv_tokenizer, tmp_path):
    enc = tmp_path / "enc"
    assert (
        cli.encode_main(["--run", str(dv_tokenizer), "--data", str(shards), "--out", str(enc)]) == 0
    )
    run = tmp_path / "ar"
    # every window played backwards: the reversed captions embed from the encode output's,
    # ... with the camera code appended to each caption's embedding (model.camera_code)
    sets = ("run.steps=2", "data.reverse_prob=1", "model.camera_code=true")
    assert _train(enc, dv_tokenizer, run, *sets) == 0
    assert not (run / "tokens").exists() and (run / latents.TEXT_FILE).is_file()
    assert json.loads((run / "metrics.json").read_text())["eval_windows"] == 10


def test_train_ar_needs_a_dv_tokenizer_run(shards, tmp_path, capsys):
    rc = _train(shards, tmp_path / "nope", tmp_path / "ar")
    assert rc == 2 and "tokenizer:" in capsys.readouterr().err
    rc = cli.main(["ar", "--data", str(shards), "--out", str(tmp_path / "ar"), "--no-prefect"])
    assert rc == 2 and "tokenizer: a tokenizer run folder is required" in capsys.readouterr().err
    assert not (tmp_path / "ar").exists()


def test_bad_ar_value_names_the_key(shards, dv_tokenizer, tmp_path, capsys):
    assert _train(shards, dv_tokenizer, tmp_path / "ar", "model.preset=huge") == 2
    assert "model.preset" in capsys.readouterr().err


def test_reversed_token_windows_play_backwards_and_old_runs_load_without_them():
    from types import SimpleNamespace

    import torch

    from worldmill.training.kinds.ar import ArTrainConfig

    refs = [SimpleNamespace(clip_id=f"c{i}") for i in range(3)]
    text = {r.clip_id: ("caption", np.full(4, i, np.float32)) for i, r in enumerate(refs)}
    back = {r.clip_id: -text[r.clip_id][1] for r in refs}
    streams = [
        latents.ReversibleWindowStream(refs, text, 4, 3, 2, reverse_prob=p, reversed_text=back)
        for p in (0.0, 1.0)
    ]
    grids = {r.clip_id: np.arange(5 * 3 * 3, dtype=np.int32).reshape(5, 3, 3) for r in refs}
    for s in streams:
        s.cache._c.update(grids)  # (T', H', W') token grids, as the cache holds them
    a, b = (s.batch(0) for s in streams)
    assert a["x"].dtype == torch.long and a["x"].shape == (4, 3, 2, 2)
    torch.testing.assert_close(b["x"], a["x"].flip(1))  # (B, t, h, w): time, not rows
    torch.testing.assert_close(b["text"], -a["text"])

    old = ArTrainConfig.from_run({"kind": "ar", "model": {"copy_radius": 1}, "data": {}})
    assert old.data.reverse_prob == 0.0 and not old.model.camera_code and old.data.val == 0
    assert ArTrainConfig.from_run({"kind": "ar", "data": {"val": 8}}).data.val == 8


def test_camera_code_follows_the_caption_embedding():
    from worldmill.training.kinds.ar import ArTrainConfig, conditions, model_config

    emb = np.ones((3, 384), np.float32)
    caps = ["A steady pan to the left across x.", "A slow zoom out from y.", "A dog."]
    assert conditions(caps, emb).shape == (3, 384)
    c = conditions(caps, emb, camera=True)
    assert c.shape == (3, 387) and (c[:, :384] == 1).all()
    assert c[:, 384:].tolist() == [[1, 0, 0], [0, 0, -1], [0, 0, 0]]  # camera.MOTION_CODE
    cfg = ArTrainConfig.model_validate({"model": {"camera_code": True}})
    assert model_config(cfg, [4, 4, 4]).text_dim == 387
