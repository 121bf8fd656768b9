"""Stage 10 — the curation report: counts per stage and reason, a contact sheet of kept and
rejected clips, score histograms and the dedup similarity curve, written under
``OUT/report/<run_id>/`` and published as Prefect artifacts."""

from __future__ import annotations

import base64
import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
from prefect import task

from worldmill.media import MediaError, decode_frames
from worldmill.store import Store

log = logging.getLogger(__name__)

THUMB_W, THUMB_H = 160, 90  # contact-sheet cell, pixels


def thumb_path(clip_dir: str | Path, clip_id: str) -> Path:
    """Where a clip's contact-sheet thumbnail is kept: next to its mp4 (it exists for
    every clip the stages saw, rejected ones included, which have no mp4)."""
    return Path(clip_dir) / f"{clip_id}.jpg"


def write_thumb(frames: np.ndarray, path: Path) -> None:
    """Save the middle of ``(T, H, W, 3)`` RGB frames as the clip's thumbnail (JPEG)."""
    img = cv2.resize(frames[len(frames) // 2], (THUMB_W, THUMB_H), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])


def _thumb(uri: str, duration_s: float, thumb: str = "") -> np.ndarray | None:
    """Middle frame of a clip as a (THUMB_H, THUMB_W, 3) uint8 RGB image: its saved
    thumbnail when there is one, else one seek into the clip and a few frames decoded."""
    if thumb and (img := cv2.imread(thumb)) is not None:
        return cv2.cvtColor(cv2.resize(img, (THUMB_W, THUMB_H)), cv2.COLOR_BGR2RGB)
    if not uri:
        return None
    try:
        frames = decode_frames(uri, THUMB_W, THUMB_H, start_s=duration_s / 2, duration_s=0.25)
    except (MediaError, OSError):
        return None
    return frames[0]


def contact_sheet(rows: list[dict], path: Path, cols: int = 6, max_cells: int = 36) -> int:
    """Grid of clip thumbnails, green border = kept, red = rejected (reason written on it)."""
    rows = [r for r in rows if r.get("clip_uri") or r.get("thumb")][:max_cells]
    if not rows:
        return 0
    n_rows = math.ceil(len(rows) / cols)
    pad = 4
    sheet = np.full((n_rows * (THUMB_H + pad) + pad, cols * (THUMB_W + pad) + pad, 3), 24, np.uint8)
    for i, r in enumerate(rows):
        img = _thumb(r["clip_uri"], r["end_s"] - r["start_s"], r.get("thumb", ""))
        if img is None:
            continue
        img = np.array(img, copy=True)  # decoded frames are read-only views
        color = (40, 200, 60) if r["kept"] else (220, 50, 40)
        cv2.rectangle(img, (0, 0), (THUMB_W - 1, THUMB_H - 1), color, 3)
        label = "kept" if r["kept"] else r["reject_reason"]
        cv2.putText(img, label, (5, THUMB_H - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
        cv2.putText(img, label, (5, THUMB_H - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1)
        y, x = pad + (i // cols) * (THUMB_H + pad), pad + (i % cols) * (THUMB_W + pad)
        sheet[y : y + THUMB_H, x : x + THUMB_W] = img
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return len(rows)


def score_histograms(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["motion_score", "quality_score", "text_score"]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3))
    for ax, name in zip(axes, names, strict=True):
        kept = [r[name] for r in rows if r["kept"] and _finite(r.get(name))]
        rej = [r[name] for r in rows if not r["kept"] and _finite(r.get(name))]
        ax.hist(
            [kept, rej],
            bins=20,
            stacked=True,
            label=["kept", "rejected"],
            color=["tab:green", "tab:red"],
        )
        ax.set_title(name)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _finite(v) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def build_report(out: str, run_id: str, summary: dict, dedup_info: dict | None) -> dict:
    """Write the report files; returns their paths and the markdown text."""
    store = Store(out)
    d = Path(out) / "report" / run_id
    d.mkdir(parents=True, exist_ok=True)
    cols = [
        "clip_id",
        "video_id",
        "clip_uri",
        "start_s",
        "end_s",
        "kept",
        "reject_reason",
        "motion_score",
        "quality_score",
        "text_score",
        "run_id",
    ]
    rows = [r for r in store.clip_rows(cols) if r["run_id"] == run_id]
    files = {}
    kept = [r for r in rows if r["kept"]]
    rejected = [r for r in rows if not r["kept"]]
    if rows:
        sheet_rows = kept[:18] + rejected[:18]
        for r in sheet_rows:  # saved thumbnails (the one-decode path writes them)
            t = thumb_path(Path(out) / "clips" / r["video_id"], r["clip_id"])
            r["thumb"] = str(t) if t.is_file() else ""
        if contact_sheet(sheet_rows, d / "contact_sheet.png"):
            files["contact_sheet"] = str(d / "contact_sheet.png")
        score_histograms(rows, d / "score_histograms.png")
        files["score_histograms"] = str(d / "score_histograms.png")
    if dedup_info and dedup_info.get("plot"):
        files["dedup_similarity"] = dedup_info["plot"]
    md = markdown(summary, dedup_info, files)
    (d / "report.md").write_text(md)
    (d / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    files["markdown"] = str(d / "report.md")
    return {"dir": str(d), "files": files, "markdown": md}


def markdown(summary: dict, dedup_info: dict | None, files: dict) -> str:
    lines = [f"# Curation report — run {summary.get('run_id', '')}", ""]
    lines += ["| what | count |", "|---|---|"]
    for k in (
        "videos_new",
        "videos_skipped",
        "run_clips",
        "run_kept",
        "total_clips",
        "total_kept",
        "shards_written",
    ):
        lines.append(f"| {k} | {summary.get(k, 0)} |")
    for status, n in sorted(summary.get("videos_recorded", {}).items()):
        lines.append(f"| videos {status} | {n} |")
    lines += _files_not_curated(summary)
    lines += ["", "## Clips rejected this run, by stage", "", "| reason | clips |", "|---|---|"]
    for reason, n in sorted(summary.get("run_reject_reasons", {}).items(), key=lambda kv: -kv[1]):
        lines.append(f"| {reason} | {n} |")
    if dedup_info and dedup_info.get("report"):
        rep = dedup_info["report"]
        removed = rep.get("fraction_removed") or rep.get("fraction_with_neighbour") or []
        lines += ["", f"## Dedup: share of clips removed vs eps (current eps {rep.get('eps')})", ""]
        lines += ["| eps | removed |", "|---|---|"]
        for eps, frac in zip(rep.get("eps_grid", []), removed, strict=False):
            lines.append(f"| {eps:.3f} | {frac:.3f} |")
    if files:
        lines += ["", "## Files", ""]
        lines += [f"- {k}: `{v}`" for k, v in files.items()]
    return "\n".join(lines) + "\n"


def _files_not_curated(summary: dict, limit: int = 200) -> list[str]:
    """Skipped and failed input files of this run, each with why (nothing skips silently)."""
    entries = [("skipped", f) for f in summary.get("files_skipped", [])]
    entries += [("failed", f) for f in summary.get("files_failed", [])]
    if not entries:
        return []
    lines = ["", "## Input files not curated this run", "", "| file | verdict | why |"]
    lines.append("|---|---|---|")
    for verdict, f in entries[:limit]:
        name = str(f["path"]).replace("|", "\\|")
        why = str(f["reason"]).replace("|", "\\|")
        lines.append(f"| `{name}` | {verdict} | {why} |")
    if len(entries) > limit:
        lines.append(f"| ... | {len(entries) - limit} more | see summary.json |")
    return lines


def _data_uri(path: str, max_width: int = 1000) -> str:
    """A PNG on disk as a compact JPEG data URI, so the Prefect UI shows it inline."""
    img = cv2.imread(path)
    if img is None:
        return ""
    if img.shape[1] > max_width:
        img = cv2.resize(
            img,
            (max_width, int(img.shape[0] * max_width / img.shape[1])),
            interpolation=cv2.INTER_AREA,
        )
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode() if ok else ""


def artifact_markdown(rep: dict) -> str:
    """The report's markdown with its figures inlined."""
    md = rep["markdown"]
    for key, title in [
        ("contact_sheet", "Contact sheet (green: kept, red: rejected)"),
        ("score_histograms", "Score histograms"),
        ("dedup_similarity", "Dedup similarity"),
    ]:
        path = rep["files"].get(key)
        uri = _data_uri(path) if path else ""
        if uri:
            md += f"\n## {title}\n\n![{key}]({uri})\n"
    return md


@task(name="report", retries=1)
def report_task(out: str, run_id: str, summary: dict, dedup_info: dict | None) -> dict:
    """Prefect task: write the report and publish it as artifacts (markdown + table)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rep = build_report(out, run_id, summary, dedup_info)
    create_markdown_artifact(
        key="curation-report", markdown=artifact_markdown(rep), description="worldmill curate"
    )
    table = [{"reason": k, "clips": v} for k, v in summary.get("run_reject_reasons", {}).items()]
    table.append({"reason": "kept", "clips": summary.get("run_kept", 0)})
    create_table_artifact(
        key="curation-counts", table=table, description="clips per verdict, this run"
    )
    log.info("report written to %s", rep["dir"])
    return {"dir": rep["dir"], "files": rep["files"]}
