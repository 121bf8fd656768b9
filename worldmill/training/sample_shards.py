"""Tiny curate-format shards from offline photos (``skimage.data``), for tests and benches.

Each clip is a window panning across a photo (real H.264 via ffmpeg), written like the curate
pipeline writes them: ``<clip_id>.mp4``, ``<clip_id>.json``, ``<clip_id>.txt`` per sample in
WebDataset tars under ``OUT/<bucket>/``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from worldmill.shards import write_tar_index

PHOTOS = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "brick",
    "grass",
    "gravel",
    "camera",
    "coins",
    "moon",
    "page",
    "text",
    "retina",
    "cat",
    "hubble_deep_field",
]


def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    return img[..., :3].astype(np.uint8)


def pan_clip(photo: np.ndarray, size: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """``(frames, size, size, 3)``: a window moving at a constant random velocity over the
    photo, resized so the window sees a ~2x2 grid of the photo's structure."""
    from skimage.transform import resize

    scale = rng.uniform(2.0, 3.0) * size / min(photo.shape[:2])
    h, w = int(photo.shape[0] * scale), int(photo.shape[1] * scale)
    img = (resize(photo, (h, w), anti_aliasing=True) * 255).astype(np.uint8)
    v = rng.uniform(-1.5, 1.5, 2)  # pixels per frame
    start = np.array([rng.uniform(0, h - size), rng.uniform(0, w - size)])
    out = []
    for i in range(frames):
        y, x = np.clip(start + v * i, 0, [h - size, w - size]).astype(int)
        out.append(img[y : y + size, x : x + size])
    return np.stack(out)


def write_sample_shards(
    out: str | Path,
    n_clips: int = 16,
    size: int = 96,
    frames: int = 24,
    fps: float = 8.0,
    clips_per_shard: int = 5,
    seed: int = 0,
    bucket: str | None = None,
) -> Path:
    """Write ``n_clips`` panning clips into ``OUT/<bucket>/shard-XXXXXX.tar``. Returns OUT.

    The defaults (16 clips, one per photo, 96x96, 24 frames) are the CPU-sized tokenizer
    run's data: the 2 held-out clips are photos the tokenizer never sees in training."""
    bucket = bucket or f"{size}p_1x1_{frames / fps:g}s"
    import webdataset as wds

    from worldmill.synth import write_video

    out = Path(out)
    (out / bucket).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n_clips):
            if i % clips_per_shard == 0:
                if writer is not None:
                    writer.close()
                path = out / bucket / f"shard-{i // clips_per_shard:06d}.tar"
                writer = wds.TarWriter(str(path))
            name = PHOTOS[i % len(PHOTOS)]
            clip = pan_clip(_photo(name), size, frames, rng)
            mp4 = write_video(Path(tmp) / f"{i}.mp4", clip, fps=fps)
            clip_id = f"{name}_{i:04d}"
            meta = {
                "clip_id": clip_id,
                "video_id": name,
                "width": size,
                "height": size,
                "fps": fps,
                "num_frames": frames,
                "start_s": 0.0,
                "end_s": frames / fps,
                "caption": f"a camera panning over {name}",
            }
            assert writer is not None
            writer.write(
                {
                    "__key__": clip_id,
                    "mp4": mp4.read_bytes(),
                    "json": json.dumps(meta).encode(),
                    "txt": meta["caption"].encode(),
                }
            )
        if writer is not None:
            writer.close()
    for tar in sorted(out.rglob("*.tar")):
        write_tar_index(tar)  # what the curate writer leaves next to every tar
    (out / "manifest.json").write_text(json.dumps({"clips": n_clips}))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m worldmill.training.sample_shards OUT [--clips N] [--size PX]``."""
    import argparse

    ap = argparse.ArgumentParser(description="write tiny curate-format shards (panning photos)")
    ap.add_argument("out")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    out = write_sample_shards(a.out, n_clips=a.clips, size=a.size, seed=a.seed)
    print(f"wrote {a.clips} clips ({a.size}x{a.size}) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
