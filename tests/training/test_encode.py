"""``worldmill encode``: a trained run's latents / tokens for every clip, as WebDataset shards."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch

from tests.training.conftest import TINY
from worldmill.training import cli, data, launch
from worldmill.training.encode import fit_clip, load_tokenizer
from worldmill.training.registry import resolve_config


def _tiny_run(shards, run, kind: str):
    cfg = resolve_config(
        "tokenizer", None, TINY + [f"model.kind={kind}", "run.steps=2", "run.nproc=1"]
    )
    launch.write_run_config(run, cfg)
    launch.launch_trainer("tokenizer", shards, run, nproc=1, log=lambda _: None)
    return cfg


def _samples(out) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted(out.rglob("*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                f = tf.extractfile(m)
                assert f is not None
                assert ext not in samples.setdefault(key, {}), f"{m.name} twice"
                samples[key][ext] = f.read()
    return samples


@pytest.mark.parametrize("kind", ["cv", "dv"])
def test_encode_writes_every_clip_once_and_decodes_back(shards, tmp_path, kind, capsys):
    cfg = _tiny_run(shards, tmp_path / "run", kind)
    out = tmp_path / "latents"
    rc = cli.encode_main(["--run", str(tmp_path / "run"), "--data", str(shards), "--out", str(out)])
    assert rc == 0 and "encoded 8 clips" in capsys.readouterr().out
    refs = data.index_shards(shards)
    samples = _samples(out)
    assert sorted(samples) == sorted(r.clip_id for r in refs)  # every clip, once
    # the output mirrors the input shard layout
    assert [p.relative_to(out) for p in sorted(out.rglob("*.tar"))] == [
        p.relative_to(shards) for p in data.list_shards(shards)
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(c["clip_id"] for c in manifest["clips"]) == sorted(samples)

    model, _, meta = load_tokenizer(tmp_path / "run")
    assert meta["step"] == 2
    name = "latent.npy" if kind == "cv" else "tokens.npy"
    ref = refs[0]
    s = samples[ref.clip_id]
    assert set(s) == {name, "json"}
    info = json.loads(s["json"])
    arr = np.load(io.BytesIO(s[name]))
    assert list(arr.shape) == info["shape"] and info["clip_id"] == ref.clip_id
    assert info["source_shard"].endswith(ref.shard.split("/")[-1]) and info["step"] == 2
    # 24 frames at 64x64 -> 21 frames = 1 + 5*4 -> 6 latent frames of 8x8
    assert info["source_frames"] == 24 and info["frames_encoded"] == 21
    video = data.to_tensor(data.decode_clip(ref, cfg.data.width))
    with torch.no_grad():
        if kind == "cv":
            assert arr.dtype == np.float16 and arr.shape == (4, 6, 8, 8)
            recon = model.decode(torch.from_numpy(arr).float()[None])
            # the stored latent is the model's latent (up to float16)
            z, _ = model.encode(fit_clip(video, 4, 8)[None])
            torch.testing.assert_close(torch.from_numpy(arr).float(), z[0], atol=2e-3, rtol=1e-2)
        else:
            assert arr.dtype == np.int32 and arr.shape == (6, 8, 8)
            assert 0 <= arr.min() and arr.max() < model.vocab_size == info["vocab_size"]
            recon = model.decode_tokens(torch.from_numpy(arr).long()[None])
    assert recon.shape == (1, 3, 21, 64, 64)


def test_fit_clip_truncates_time_and_pads_space():
    v = torch.arange(3 * 11 * 20 * 30, dtype=torch.float32).reshape(3, 11, 20, 30)
    x = fit_clip(v, 4, 8)
    assert x.shape == (3, 9, 24, 32)
    torch.testing.assert_close(x[:, :, :20, :30], v[:, :9])
    torch.testing.assert_close(x[:, :, 23, :30], v[:, :9, 19])  # edge replicated


def test_encode_without_a_checkpoint_is_a_usage_error(shards, tmp_path, capsys):
    rc = cli.encode_main(["--run", str(tmp_path), "--data", str(shards), "--out", str(tmp_path)])
    assert rc == 2 and "not a training run" in capsys.readouterr().err
