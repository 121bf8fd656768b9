"""worldmill.training.launch: torchrun as a subprocess, its lines streamed as printed, a
failure raised with the tail, and nothing of a launch left running after it."""

from __future__ import annotations

import json
import os
import textwrap

import psutil
import pytest

from worldmill.training import launch
from worldmill.training.registry import resolve_config


def _module(tmp_path, name: str, body: str) -> dict[str, str]:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    return {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_lines_of_every_rank_are_streamed_in_order(tmp_path):
    env = _module(
        tmp_path,
        "say",
        """
        import os, sys
        r = os.environ["RANK"]
        for i in range(3):  # one write per line: ranks share the pipe
            sys.stdout.write(f"rank {r} line {i} {sys.argv[1]}\\n")
            sys.stdout.flush()
        """,
    )
    lines: list[str] = []
    assert launch.run_torchrun("say", ["hello"], nproc=2, log=lines.append, env=env) == 0
    for r in ("0", "1"):
        mine = [x for x in lines if x.startswith(f"rank {r} ")]
        assert mine == [f"rank {r} line {i} hello" for i in range(3)]


def test_a_failing_rank_raises_with_its_exit_code_and_last_lines(tmp_path):
    env = _module(tmp_path, "fail", 'print("about to fail", flush=True)\nraise SystemExit(3)\n')
    with pytest.raises(launch.TrainerFailed) as e:
        launch.run_torchrun("fail", [], nproc=1, log=lambda _: None, env=env)
    assert e.value.returncode != 0
    assert any("about to fail" in x for x in e.value.tail)


def test_nothing_of_a_failed_launch_outlives_it(tmp_path):
    pid_file = tmp_path / "child.pid"
    env = _module(
        tmp_path,
        "orphan",
        f"""
        import subprocess, sys
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(p.pid))
        raise SystemExit(1)  # leaves its child behind, as a killed rank's helpers would be
        """,
    )
    with pytest.raises(launch.TrainerFailed):
        launch.run_torchrun("orphan", [], nproc=1, log=lambda _: None, env=env)
    pid = int(pid_file.read_text())
    gone = not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert gone, f"child {pid} of the launch still runs"


def test_write_run_config_round_trips_the_validated_config(tmp_path):
    cfg = resolve_config("tokenizer", None, ["run.steps=7", "optim.lr=0.002"])
    path = launch.write_run_config(tmp_path / "run", cfg)
    assert path == tmp_path / "run" / "config.json"
    got = json.loads(path.read_text())
    assert got["kind"] == "tokenizer" and got["run"]["steps"] == 7 and got["optim"]["lr"] == 0.002
    assert type(cfg).model_validate(got) == cfg
