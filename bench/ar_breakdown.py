"""Where an ``ar`` run wins or loses against copy-last-latent-frame: per video, per camera
motion, per scene type, on its validation and held-out videos.

    python bench/ar_breakdown.py RUN --data SHARDS [--step N] [--bias B] [--truth JSON]

Loads the run's checkpoint (the latest, or ``--step``), cuts the evaluation windows exactly
as ``worldmill train ar``'s evaluation does (``ar_eval``) and scores ``sample.predict``
(with the run's validation-chosen copy bias, or ``--bias``) against the copy baseline per
window. Groups: the camera motion named in the caption, and the content from
``world_truth.json`` of ``worldmill sample-data --world`` (photo name or ``shapes``; found
through each clip's ``source_path``, or ``--truth``). Prints one table per split and a
JSON line ``{"val": {...}, "held_out": {...}}`` of the group means (dB); nothing is written.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import torch

MOTION = re.compile(r"(pan to the left|pan to the right|tilt up|tilt down|zoom in|zoom out)")


def per_window(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per window of videos ``(N, 3, T, H, W)`` in [-1, 1] (``metrics.psnr``'s
    terms, before its mean)."""
    mse = ((x.clamp(-1, 1) - y.clamp(-1, 1)) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(4.0 / mse)


def content_of(ref, truth: dict | None) -> str:
    if truth is None or ref.source is None:
        return "?"
    name = Path(ref.source.meta.get("source_path", "")).name
    c = truth.get("videos", {}).get(name, {}).get("content", "?")
    return "shapes" if c == "shapes" else "photo"


def main() -> None:
    from worldmill.models.ar import ARWorldModel
    from worldmill.training import checkpoint
    from worldmill.training import megatron as mc
    from worldmill.training.kinds import ar_eval
    from worldmill.training.kinds.ar import TokenData, model_config, tokenizer_levels
    from worldmill.training.registry import load_run_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True, help="the shards the run trained on")
    ap.add_argument("--step", type=int, default=0, help="checkpoint step (0 = latest)")
    ap.add_argument("--bias", type=float, default=None, help="copy bias (default: the run's)")
    ap.add_argument("--truth", default="", help="world_truth.json (default: by source_path)")
    ap.add_argument("--blend", default="", help="also score a*model + (1-a)*copy, a in A,B,..")
    a = ap.parse_args()

    run = Path(a.run)
    cfg = load_run_config(run)
    m = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    bias = a.bias if a.bias is not None else (m.get("calibration") or {}).get("copy_bias", 0.0)
    ck = (run / "checkpoints" / f"step_{a.step:08d}", None) if a.step else checkpoint.latest(run)
    torch.set_grad_enabled(False)
    with mc.single_process(cfg.run.seed):
        ctx = SimpleNamespace(
            run=run, data_root=a.data, upstream={"tokenizer": Path(cfg.tokenizer)},
            is_main=True, log=lambda s: None, rank=0, world=1,
        )  # fmt: skip
        data_ = TokenData(cfg, ctx)
        model = ARWorldModel(model_config(cfg, tokenizer_levels(cfg.tokenizer)))
        checkpoint.load_model(ck[0], model)
        model.eval()
        tok = data_.tokenizer
        tc = tok.cfg.temporal_compression
        truth = None
        refs = data_.held_out + data_.val_refs
        tp = Path(a.truth) if a.truth else None
        if tp is None and refs and refs[0].source is not None:
            sp = refs[0].source.meta.get("source_path")
            tp = Path(sp).parent / "world_truth.json" if sp else None
        if tp is not None and tp.is_file():
            truth = json.loads(tp.read_text())
        out, blends = {}, defaultdict(list)
        for split, rs in (("val", data_.val_refs), ("held_out", data_.held_out)):
            rows = []
            for r in rs:
                w = ar_eval._clip_windows(r, data_, cfg.data, tok, "cpu")
                got = ar_eval._predict_rows(
                    model, tok, [w], cfg.sample, (cfg.sample.predict,), (bias, 1.0)
                )
                real = got["real"][:, :, -tc:]
                pm = per_window(got[cfg.sample.predict][:, :, -tc:], real)
                pb = per_window(got["base"][:, :, -tc:], real)
                for al in [float(x) for x in a.blend.split(",") if x]:
                    mix = al * got[cfg.sample.predict] + (1 - al) * got["base"]
                    blends[split, al].append(per_window(mix[:, :, -tc:], real) - pb)
                cap = data_.text[r.clip_id][0]
                mo = MOTION.search(cap)
                rows.append((r.clip_id, mo.group(1) if mo else "?", content_of(r, truth), pm, pb))
            print(f"\n{split}: {len(rows)} videos (copy bias {bias}, step {ck[0].name})")
            print(
                f"{'clip':24s} {'motion':16s} {'content':8s} {'model':>7s} {'copy':>7s} {'gain':>7s}"
            )
            groups: dict[str, list[torch.Tensor]] = defaultdict(list)
            for cid, mo, co, pm, pb in rows:
                g = pm - pb
                print(
                    f"{cid:24s} {mo:16s} {co:8s} {pm.mean():7.2f} {pb.mean():7.2f} {g.mean():+7.3f}"
                )
                for key in ("all", f"motion: {mo}", f"content: {co}"):
                    groups[key].append(g)
            summary = {}
            for key, gs in sorted(groups.items()):
                g = torch.cat(gs)
                se = float(g.std() / len(g) ** 0.5) if len(g) > 1 else 0.0
                summary[key] = {"gain_db": round(float(g.mean()), 4), "se": round(se, 4),
                                "windows": len(g), "videos": len(gs)}  # fmt: skip
                print(f"  {key:26s} gain {float(g.mean()):+.3f} dB ± {se:.3f} ({len(gs)} videos)")
            out[split] = summary
            for (sp, al), gs in sorted(blends.items()):
                if sp == split:
                    g = torch.cat(gs)
                    summary[f"blend {al}"] = {"gain_db": round(float(g.mean()), 4)}
                    print(f"  blend {al:.2f} model + copy    gain {float(g.mean()):+.3f} dB")
        print(json.dumps(out))


if __name__ == "__main__":
    main()
