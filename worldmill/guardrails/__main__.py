"""``python -m worldmill.guardrails train``: retrain the prompt classifier on the ``train``
split of ``data/prompts.jsonl`` and rewrite the shipped ``data/classifier.npz``."""

from __future__ import annotations

import os
import sys

import numpy as np


def main(argv: list[str]) -> int:
    if argv != ["train"]:
        print("usage: python -m worldmill.guardrails train", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from worldmill.guardrails.prompt import WEIGHTS, train

    w = train()
    np.savez(WEIGHTS, **w)
    print(f"wrote {WEIGHTS} ({int(w['n_train'])} training prompts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
