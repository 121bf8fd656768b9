"""Generate a world from a trained run, with guardrails: one entry for every kind that
generates (the run's kind decides -- ``ar`` today; a diffusion kind plugs in the same way).

    rec = generate("runs/ar1", GenerateRequest(prompt="a camera panning ...", image="x.png"),
                   out="sample.mp4")

Order of work: the run is checked (a finished run of a generating kind), the input
image/video is read, the prompt pre-guard runs (a refused prompt raises :class:`Refused`
and nothing is generated or written), the kind's spec generates ``(T, H, W, 3)`` uint8
frames, the frame post-guard blurs faces and withholds NSFW frames, and ``OUT.mp4`` is
written with ``OUT.json`` beside it (prompt, settings, run, timings, the guardrails record
-- ``enabled: false`` when ``--no-guardrails`` turned them off) and ``OUT.png`` (a strip of
frames, what the Prefect artifact shows).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from worldmill.config import ConfigError, StrictModel
from worldmill.guardrails import Guardrails, Verdict, check_prompt, guard_frames, record


class GenerateRequest(StrictModel):
    """What to generate (the ``generate`` flow's form in the Prefect UI)."""

    prompt: str = ""  # caption / instruction; pre-guarded
    image: str = ""  # PNG/JPEG path: Video2World from one image
    video: str = ""  # MP4 path: Video2World from a clip ("" and no image: Text2World)
    frames: int = Field(2, ge=1, le=256)  # latent frames to generate (x temporal compression)
    seed: int = 0
    guidance: float = Field(0.0, ge=0)  # classifier-free guidance scale (diffusion); 0 = run's
    temperature: float = Field(1.0, ge=0)  # sampling temperature (AR); 0 = greedy
    top_k: int = Field(0, ge=0)  # AR: keep the k most likely tokens; 0 = all
    top_p: float = Field(1.0, gt=0, le=1)  # AR: nucleus sampling mass
    fps: float = Field(8.0, gt=0)  # frame rate of the written mp4


class Refused(Exception):
    """The prompt pre-guard refused the prompt (CLI exit 3)."""

    def __init__(self, verdict: Verdict):
        self.verdict = verdict
        super().__init__(f"prompt refused: {verdict.reason}")


def run_kind(model: str | Path) -> str:
    """The kind of a finished run (ConfigError naming ``model`` otherwise)."""
    from worldmill.training.registry import get_spec
    from worldmill.training.spec import check_run

    run = check_run(model, None, "model")
    kind = json.loads((run / "config.json").read_text()).get("kind", "tokenizer")
    if not get_spec(kind).generates:
        raise ConfigError(f"model: {run} is a {kind!r} run, which does not generate worlds")
    return kind


def read_input(req: GenerateRequest) -> np.ndarray | None:
    """The conditioning frames ``(T, H, W, 3)`` uint8 (an image is one frame), or None."""
    from worldmill.media import MediaError, decode_frames, probe

    if req.image and req.video:
        raise ConfigError("image/video: give one of them, not both")
    if req.image:
        from PIL import Image, UnidentifiedImageError

        if not Path(req.image).is_file():
            raise ConfigError(f"image: no such file {req.image}")
        try:
            with Image.open(req.image) as im:
                return np.asarray(im.convert("RGB"))[None]
        except UnidentifiedImageError as e:
            raise ConfigError(f"image: {req.image} is not an image") from e
    if req.video:
        if not Path(req.video).is_file():
            raise ConfigError(f"video: no such file {req.video}")
        try:
            info = probe(req.video)
            return decode_frames(req.video, info.width, info.height)
        except MediaError as e:
            raise ConfigError(f"video: {req.video}: {e}") from e
    return None


def frame_strip(frames: np.ndarray, n: int = 8) -> bytes:
    """PNG of ``n`` frames side by side (evenly spaced), for artifacts and OUT.png."""
    from PIL import Image

    idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    strip = np.concatenate([frames[i] for i in idx], axis=1)
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="PNG")
    return buf.getvalue()


def generate(
    model: str | Path, req: GenerateRequest, out: str | Path, guard: Guardrails | None = None
) -> dict[str, Any]:
    """Generate one sample into ``out`` (mp4) + ``out.json`` + ``out.png``; returns the
    record written to ``out.json``. Raises ConfigError (bad run/input), Refused (prompt)."""
    from worldmill.synth import write_video
    from worldmill.training.registry import get_spec

    guard = guard or Guardrails()
    kind = run_kind(model)
    context = read_input(req)
    verdict = check_prompt(req.prompt, guard)
    if not verdict.allowed:
        raise Refused(verdict)
    t0 = time.perf_counter()
    frames = get_spec(kind).generate(Path(model), req, context)
    seconds = time.perf_counter() - t0
    frames, report = guard_frames(frames, guard)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, frames, fps=req.fps)
    out.with_suffix(".png").write_bytes(frame_strip(frames))
    rec = {
        "model": str(Path(model).absolute()),
        "kind": kind,
        "prompt": req.prompt,
        "settings": req.model_dump(mode="json"),
        "mode": "video2world" if context is not None else "text2world",
        "frames": int(frames.shape[0]),
        "size": [int(frames.shape[2]), int(frames.shape[1])],  # width, height
        "generate_seconds": round(seconds, 3),
        "seconds_per_frame": round(seconds / max(1, frames.shape[0]), 4),
        "mp4": str(out.absolute()),
        **record(guard, verdict, report),
    }
    out.with_suffix(".json").write_text(json.dumps(rec, indent=2))
    return rec


def main(argv: list[str]) -> int:
    """``worldmill generate --model RUN --prompt "..." [--image PNG | --video MP4]
    [--frames N] [--seed S] [--guidance G] [--temperature T] [--top-k K] [--top-p P]
    --out OUT.mp4 [--no-guardrails] [--no-prefect]``.

    Exit codes: 0 written; 2 bad run / input / value (the message names it); 3 prompt
    refused by the guardrails (nothing written); 1 generation failed."""
    import argparse
    import sys

    from pydantic import ValidationError

    from worldmill.guardrails import EXIT_REFUSED, add_flag, from_args

    ap = argparse.ArgumentParser(prog="worldmill generate", description=main.__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, metavar="RUN", help="a finished run folder")
    ap.add_argument("--prompt", default="")
    ap.add_argument("--image", default="", metavar="PNG")
    ap.add_argument("--video", default="", metavar="MP4")
    ap.add_argument("--frames", type=int, default=2, help="latent frames to generate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=0.0)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--out", required=True, metavar="OUT.mp4")
    ap.add_argument("--no-prefect", action="store_true", help="no flow run, no artifacts")
    add_flag(ap)
    a = ap.parse_args(argv)
    fields = ("prompt", "image", "video", "frames", "seed", "guidance", "temperature")
    values = {k: getattr(a, k) for k in fields} | {"top_k": a.top_k, "top_p": a.top_p}
    try:
        req = GenerateRequest(**values, fps=a.fps)
        run_kind(a.model)  # fail before Prefect starts
    except ValidationError as e:
        err = e.errors()[0]
        print(f"error: {'.'.join(map(str, err['loc']))}: {err['msg']}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    guard = from_args(a)
    try:
        if a.no_prefect:
            rec = generate(a.model, req, a.out, guard)
        else:
            from worldmill.flows.generate import generate_flow

            rec = generate_flow(model=a.model, request=req, out=a.out, guardrails=guard.enabled)
    except Refused as e:
        print(f"refused: {e.verdict.reason}", file=sys.stderr)
        return EXIT_REFUSED
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 -- the CLI contract: exit 1 with the reason
        print(f"error: generation failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {rec['mp4']} and {Path(rec['mp4']).with_suffix('.json')}")
    return 0
