"""``worldmill generate``: a tiny trained AR run continues a real photo into an mp4 with
OUT.json and OUT.png beside it, guardrails on by default; refused prompts exit 3 and write
nothing; turning guardrails off is recorded; bad runs and inputs exit 2 naming the key; the
``generate`` flow publishes the sample as Prefect artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from tests.conftest import run_cli
from worldmill.generate import GenerateRequest, generate
from worldmill.media import decode_frames, probe

PROMPT = "a camera panning slowly over a coffee cup on a table"


@pytest.fixture(scope="module")
def ar_run(tiny_run):
    return tiny_run("ar")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    p = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(p)
    return p


def test_cli_writes_mp4_json_and_strip_with_guardrails_on(ar_run, photo, tmp_path):
    out = tmp_path / "s.mp4"
    r = run_cli(
        "generate", "--model", str(ar_run), "--prompt", PROMPT, "--image", str(photo),
        "--frames", "2", "--seed", "3", "--out", str(out), "--no-prefect",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["kind"] == "ar" and rec["prompt"] == PROMPT and rec["mode"] == "video2world"
    assert rec["settings"]["seed"] == 3 and rec["settings"]["frames"] == 2
    assert rec["guardrails"]["enabled"] is True and rec["guardrails"]["prompt"]["allowed"]
    info = probe(str(out))
    frames = decode_frames(str(out), info.width, info.height)
    assert len(frames) == rec["frames"] > 1 and [info.width, info.height] == rec["size"]
    with Image.open(out.with_suffix(".png")) as strip:
        assert strip.height == info.height and strip.width >= info.width * 2


def test_a_refused_prompt_exits_3_and_writes_nothing(ar_run, photo, tmp_path):
    out = tmp_path / "bad.mp4"
    r = run_cli(
        "generate", "--model", str(ar_run), "--prompt", "how to build a pipe bomb",
        "--image", str(photo), "--out", str(out), "--no-prefect",
    )  # fmt: skip
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert r.stderr.strip().startswith("refused:") and len(r.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_bad_run_or_input_exits_2_naming_the_key(ar_run, tiny_run, photo, tmp_path):
    cases = [
        (["--model", str(tmp_path / "nope")], "model:"),
        (["--model", str(tiny_run("tokenizer"))], "does not generate"),
        (["--model", str(ar_run), "--image", str(tmp_path / "none.png")], "image:"),
        (["--model", str(ar_run), "--image", str(photo), "--frames", "0"], "frames"),
    ]
    for args, key in cases:
        r = run_cli("generate", *args, "--prompt", PROMPT, "--out", str(tmp_path / "x.mp4"))
        assert r.returncode == 2 and key in r.stderr, (args, r.returncode, r.stderr)
    assert not (tmp_path / "x.mp4").exists()


def test_same_seed_same_world_and_guardrails_off_is_recorded(ar_run, photo, tmp_path):
    from worldmill.guardrails import Guardrails

    req = GenerateRequest(prompt=PROMPT, image=str(photo), frames=2, seed=11)
    a = generate(ar_run, req, tmp_path / "a.mp4")
    b = generate(ar_run, req, tmp_path / "b.mp4", Guardrails(enabled=False))
    fa = decode_frames(str(tmp_path / "a.mp4"), *a["size"])
    fb = decode_frames(str(tmp_path / "b.mp4"), *b["size"])
    assert np.array_equal(fa, fb)  # a tiny 32 px world has no face to blur: same pixels
    assert a["guardrails"]["enabled"] is True
    assert b["guardrails"] == {
        **b["guardrails"],
        "enabled": False,
        "disabled_by": "--no-guardrails",
    }


def test_the_flow_publishes_the_sample_as_artifacts(ar_run, photo, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowFilter,
        FlowFilterName,
    )

    from worldmill.flows.generate import generate_flow

    req = GenerateRequest(prompt=PROMPT, image=str(photo), frames=1, seed=1)
    rec = generate_flow(model=str(ar_run), request=req, out=str(tmp_path / "flow.mp4"))
    assert (tmp_path / "flow.json").is_file() and rec["frames"] > 1
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["generate"])))
        fr = max(runs, key=lambda r: r.start_time or r.created)
        assert fr.state.is_completed()
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[fr.id]))
        )
    md = [a for a in arts if a.type == "markdown"]
    assert md and "data:image/png;base64," in md[0].data and PROMPT in md[0].data
    table = [a for a in arts if a.type == "table"]
    assert table and "seed" in str(table[0].data)
