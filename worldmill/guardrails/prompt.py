"""Prompt pre-guard: a blocklist on normalised words plus a small classifier over MiniLM
sentence embeddings.

Blocklist (``data/blocklist.txt``)
    Prompts and entries go through the same :func:`words` normaliser (NFKC, case fold,
    accents stripped, runs of single letters such as ``p o r n`` or ``p.o.r.n`` joined);
    the prompt is read twice, the second time with common digit/symbol substitutions
    (``p0rn``, ``$ex``, ``r@pe``) undone in words that mix letters and symbols. An entry
    matches whole consecutive words, with ``s``/``es`` plural endings folded: "rape" fires
    on "rapes" but never on "grape", "drapery" or "scraped". ``[allow]`` phrases
    ("oilseed rape") mask their words before matching.

Classifier (``data/classifier.npz``)
    ``sklearn.linear_model.LogisticRegression`` (lbfgs, ``C`` = :data:`C`, balanced class
    weights -- deterministic) over the 384-d unit-norm embeddings of the shipped
    all-MiniLM-L6-v2 (loaded through :func:`worldmill.tasks.embed.text_embedder`, offline),
    trained on the ``train`` split of ``data/prompts.jsonl``. The weights are shipped as a
    small ``.npz`` holding the sha256 of the prompt set it was trained on; when the set has
    changed since (the hash differs) they are retrained at first use and cached in
    ``~/.cache/worldmill/guardrails/``. Regenerate the shipped file with
    ``python -m worldmill.guardrails train``. The ``test`` split (same categories) and the
    ``hard`` split (written separately: borderline benign prompts, blocked ones phrased
    unlike the training set) are held out for ``bench/guardrails.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from worldmill.guardrails.config import Guardrails

DATA = Path(__file__).parent / "data"
BLOCKLIST = DATA / "blocklist.txt"
PROMPTS = DATA / "prompts.jsonl"
WEIGHTS = DATA / "classifier.npz"
C = 4.0  # inverse L2 strength; embeddings are unit norm, so weights stay small


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`check_prompt`. ``score`` = classifier P(blocked) in [0, 1]
    (1.0 for a blocklist hit, which skips the classifier; 0.0 when guardrails are off)."""

    allowed: bool
    reason: str
    score: float

    def as_dict(self) -> dict:
        return {"allowed": self.allowed, "reason": self.reason, "score": round(self.score, 4)}


# --------------------------------------------------------------------------- blocklist

# Undone only inside words that mix letters with these characters ("p0rn", "$ex", "r@pe"),
# and only in a second reading of the prompt: "1080p" stays "1080p" in the first.
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
_LEET_CHARS = set("013457@$")


def words(text: str, leet: bool = False) -> list[str]:
    """Normalised words of ``text``: ``"Nüde p.o.r.n!"`` -> ``["nude", "porn"]``;
    with ``leet``, ``"P0RN r@pe 1080p"`` -> ``["porn", "rape", "io8op"]``."""
    t = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    t = "".join(ch for ch in t if not unicodedata.combining(ch))
    chunks = []
    for chunk in t.split():
        if leet and any(c.isalpha() for c in chunk) and any(c in _LEET_CHARS for c in chunk):
            chunk = chunk.translate(_LEET)
        chunks.extend(re.findall(r"[^\W_]+", chunk))
    # Join runs of >= 3 single letters ("p o r n", "p.o.r.n", "p-o-r-n") into one word.
    out: list[str] = []
    run: list[str] = []
    for w in chunks + [""]:
        if len(w) == 1 and w.isalpha():
            run.append(w)
            continue
        out.extend(["".join(run)] if len(run) >= 3 else run)
        run = []
        if w:
            out.append(w)
    return out


def _forms(word: str) -> set[str]:
    """The word and its singular candidates (plural folding)."""
    f = {word}
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        f.add(word[:-1])
        if len(word) > 4 and word.endswith("es"):
            f.add(word[:-2])
    return f


@dataclass(frozen=True)
class Blocklist:
    """Phrases (tuples of normalised words) by category, plus allow-listed phrases."""

    phrases: dict[tuple[str, ...], str]  # phrase -> category
    allow: tuple[tuple[str, ...], ...]

    @classmethod
    def load(cls, path: Path = BLOCKLIST) -> Blocklist:
        phrases: dict[tuple[str, ...], str] = {}
        allow: list[tuple[str, ...]] = []
        cat = ""
        for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("[") and line.endswith("]"):
                cat = line[1:-1].strip()
                continue
            if not cat:
                raise ValueError(f"{path}:{n}: entry before any [category] header")
            ws = tuple(words(line))
            if not ws:
                raise ValueError(f"{path}:{n}: entry has no words: {raw!r}")
            if cat == "allow":
                allow.append(ws)
            else:
                phrases[ws] = cat
        return cls(phrases, tuple(allow))

    def match(self, text: str) -> tuple[str, str] | None:
        """First ``(phrase, category)`` found in ``text`` (read plainly, then with digit and
        symbol substitutions undone), or None."""
        plain = words(text)
        for ws in (plain, words(text, leet=True)):
            hit = self._match(ws)
            if hit:
                return hit
        return None

    def _match(self, ws: list[str]) -> tuple[str, str] | None:
        forms = [_forms(w) for w in ws]
        masked = [False] * len(ws)
        for ph in self.allow:
            for i in range(len(ws) - len(ph) + 1):
                if all(ph[j] in forms[i + j] for j in range(len(ph))):
                    masked[i : i + len(ph)] = [True] * len(ph)
        for i in range(len(ws)):
            for ph, cat in self.phrases.items():
                k = len(ph)
                if i + k <= len(ws) and not any(masked[i : i + k]):
                    if all(ph[j] in forms[i + j] for j in range(k)):
                        return " ".join(ph), cat
        return None


@lru_cache(maxsize=1)
def blocklist() -> Blocklist:
    return Blocklist.load()


# --------------------------------------------------------------------------- classifier


def load_prompts(split: str | None = None) -> list[dict]:
    """Records ``{text, label: benign|blocked, category, split: train|test|hard}``."""
    rows = [json.loads(line) for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if split is None or r["split"] == split]


def _data_hash() -> str:
    return hashlib.sha256(PROMPTS.read_bytes()).hexdigest()


def embed(texts: list[str]) -> np.ndarray:
    """``(N, 384)`` float32 unit-norm MiniLM embeddings (the curate embed stage's loader)."""
    from worldmill.config import EmbedConfig
    from worldmill.tasks.embed import embed_texts

    return embed_texts(list(texts), EmbedConfig())


def train() -> dict[str, np.ndarray]:
    """Fit the classifier on the ``train`` split; returns the arrays of ``classifier.npz``."""
    from sklearn.linear_model import LogisticRegression

    rows = load_prompts("train")
    x = embed([r["text"] for r in rows]).astype(np.float64)  # (N, 384)
    y = np.array([r["label"] == "blocked" for r in rows], dtype=np.int64)  # (N,)
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
    clf.fit(x, y)
    return {
        "coef": clf.coef_[0].astype(np.float32),  # (384,)
        "intercept": np.float32(clf.intercept_[0]),
        "data_sha256": np.array(_data_hash()),
        "n_train": np.int64(len(rows)),
    }


def _cache_path() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "worldmill" / "guardrails" / f"classifier-{_data_hash()[:16]}.npz"


_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _weights() -> tuple[np.ndarray, float]:
    want = _data_hash()
    for path in (WEIGHTS, _cache_path()):
        if path.is_file():
            with np.load(path) as z:
                if str(z["data_sha256"]) == want:
                    return z["coef"].astype(np.float32), float(z["intercept"])
    # The prompt set changed since the shipped weights were made: retrain and cache.
    w = train()
    cache = _cache_path()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **w)
        os.replace(tmp, cache)
    except OSError as e:  # a read-only home still works, it just retrains next time
        print(f"worldmill.guardrails: cannot cache classifier ({e})", file=sys.stderr)
    return w["coef"], float(w["intercept"])


def scores(texts: list[str]) -> np.ndarray:
    """Classifier P(blocked) for each text, ``(N,)`` float64."""
    with _LOCK:
        coef, b = _weights()
    logits = embed(texts).astype(np.float64) @ coef.astype(np.float64) + b  # (N,)
    return 1.0 / (1.0 + np.exp(-logits))


# --------------------------------------------------------------------------- API


def check_prompt(text: str, cfg: Guardrails | None = None) -> Verdict:
    """Pre-guard one prompt: blocklist first (no model needed), then the classifier."""
    cfg = cfg or Guardrails()
    if not cfg.enabled:
        return Verdict(True, "guardrails disabled", 0.0)
    if not text or not text.strip():
        return Verdict(False, "empty prompt", 1.0)
    if cfg.blocklist:
        hit = blocklist().match(text)
        if hit:
            return Verdict(False, f"blocklist: {hit[0]!r} ({hit[1]})", 1.0)
    if not cfg.classifier:
        return Verdict(True, "blocklist: no match (classifier off)", 0.0)
    p = float(scores([text])[0])
    if p >= cfg.threshold:
        return Verdict(False, f"classifier: P(blocked) {p:.2f} >= {cfg.threshold:.2f}", p)
    return Verdict(True, f"classifier: P(blocked) {p:.2f} < {cfg.threshold:.2f}", p)
