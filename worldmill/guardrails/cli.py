"""``worldmill guard``: the guardrails on their own.

worldmill guard prompt "TEXT" [--config F] [--set k=v]   # exit 0 allowed, 3 refused
worldmill guard video IN.mp4 --out OUT.mp4 [--report R.json] [--config F] [--set k=v]

Exit codes: 0 ok; 3 (``EXIT_REFUSED``) prompt refused, the one-line reason on stderr;
2 invalid config value (the message names the key) or usage; 1 unreadable input video;
4 (``EXIT_OUTPUT``) the guarded video could not be written (no partial file is left).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from worldmill.config import ConfigError, load_config

EXIT_OUTPUT = 4  # guard video: the output could not be written


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="worldmill guard", description="Run the guardrails alone.")
    sub = p.add_subparsers(dest="what", required=True)
    pp = sub.add_parser("prompt", help="pre-guard a prompt: exit 0 allowed, 3 refused")
    pp.add_argument("text")
    pv = sub.add_parser("video", help="post-guard a video: blur faces, withhold NSFW frames")
    pv.add_argument("input")
    pv.add_argument("--out", required=True, help="guarded mp4 (H.264)")
    pv.add_argument("--report", help="also write the report JSON here")
    for s in (pp, pv):
        s.add_argument("--config", help="YAML file with Guardrails settings")
        s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


def main(argv: list[str]) -> int:
    from worldmill.guardrails import EXIT_REFUSED, Guardrails

    args = _parser().parse_args(argv)
    try:
        cfg = load_config(Guardrails, args.config, args.overrides)
    except ConfigError as e:
        print(f"worldmill guard: {e}", file=sys.stderr)
        return 2

    if args.what == "prompt":
        from worldmill.guardrails.prompt import check_prompt

        v = check_prompt(args.text, cfg)
        if not v.allowed:
            print(f"worldmill guard: prompt refused: {v.reason}", file=sys.stderr)
            return EXIT_REFUSED
        print(f"allowed ({v.reason})")
        return 0

    from worldmill.guardrails.frames import OutputError, guard_video
    from worldmill.media import MediaError

    try:
        report = guard_video(args.input, args.out, cfg)
    except MediaError as e:
        print(f"worldmill guard: cannot read {args.input}: {e}", file=sys.stderr)
        return 1
    except OutputError as e:  # guard_video has removed any partial output
        print(f"worldmill guard: cannot write {args.out}: {e}", file=sys.stderr)
        return EXIT_OUTPUT
    text = json.dumps(report, indent=2)
    if args.report:
        Path(args.report).write_text(text + "\n")
    print(text)
    return 0
