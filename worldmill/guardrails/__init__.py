"""Guardrails for generation: a prompt pre-guard and a frame post-guard, on by default.

    from worldmill.guardrails import EXIT_REFUSED, Guardrails, check_prompt, guard_frames, record

    v = check_prompt(prompt, cfg)          # Verdict(allowed, reason, score)
    if not v.allowed:                      # print v.reason on stderr, generate nothing
        return EXIT_REFUSED
    frames, report = guard_frames(frames, cfg)  # faces blurred, NSFW frames withheld
    out_json.update(record(cfg, v, report))     # always: says whether guardrails were on

Turning guardrails off is ``Guardrails(enabled=False)``, to be set only from an explicit
``--no-guardrails`` flag (:func:`add_flag` / :func:`from_args`); :func:`record` then marks the
sample as unguarded.
"""

from __future__ import annotations

import argparse
from typing import Any

from worldmill.guardrails.config import Guardrails
from worldmill.guardrails.frames import guard_frames, guard_video
from worldmill.guardrails.prompt import Verdict, check_prompt

EXIT_REFUSED = 3  # exit code of a command whose prompt the pre-guard refused

__all__ = [
    "EXIT_REFUSED",
    "Guardrails",
    "Verdict",
    "add_flag",
    "check_prompt",
    "from_args",
    "guard_frames",
    "guard_video",
    "record",
]


def add_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-guardrails`` (the only way to turn them off) to a command's parser."""
    parser.add_argument(
        "--no-guardrails",
        action="store_true",
        help="turn off the prompt and frame guardrails (recorded in OUT.json)",
    )


def from_args(args: argparse.Namespace, cfg: Guardrails | None = None) -> Guardrails:
    """``cfg`` (default: on) with ``enabled`` False iff ``--no-guardrails`` was given."""
    cfg = (cfg or Guardrails()).model_copy()
    if getattr(args, "no_guardrails", False):
        cfg.enabled = False
    return cfg


def record(
    cfg: Guardrails, verdict: Verdict | None = None, frames_report: dict | None = None
) -> dict[str, Any]:
    """The ``{"guardrails": {...}}`` entry for a sample's ``OUT.json``: whether guardrails
    were on (``enabled: false`` + ``disabled_by: "--no-guardrails"`` when off), the settings,
    the prompt verdict and a summary of the frame report."""
    g: dict[str, Any] = {"enabled": cfg.enabled}
    if not cfg.enabled:
        g["disabled_by"] = "--no-guardrails"
    g["settings"] = cfg.model_dump(mode="json", exclude={"enabled"})
    if verdict is not None:
        g["prompt"] = verdict.as_dict()
    if frames_report is not None:
        keys = ("frames", "faces_detected", "frames_with_faces", "faces_blurred")
        g["frames"] = {k: frames_report[k] for k in keys if k in frames_report}
        g["frames"]["frames_withheld"] = frames_report.get("frames_withheld", 0)
        g["frames"]["withheld"] = frames_report.get("withheld", [])
    return {"guardrails": g}
