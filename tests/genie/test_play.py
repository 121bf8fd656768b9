"""``worldmill play``: the real command serves a page on 127.0.0.1 that headless Chromium
(Debian's ``chromium``, driven by playwright) plays with keys; what it shows equals what a
direct ``play_frames`` call returns; a photo, a clip frame and a drawing all start a world;
a missing run or an unreadable image exits 2."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image, ImageDraw

from worldmill.genie import play

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def clip_frame(shards, tmp_path_factory):
    """A PNG of a middle frame of a training clip (a frame of a rollout)."""
    from worldmill.training import data

    ref = data.index_shards(shards)[0]
    frames = data.ClipCache(64, 0.0).get(ref)
    path = tmp_path_factory.mktemp("play") / "frame.png"
    Image.fromarray(frames[len(frames) // 2]).save(path)
    return path


def drawing(path):
    """A child's drawing: sky, sun, a house, a path."""
    im = Image.new("RGB", (160, 120), (120, 180, 255))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 80, 160, 120], fill=(60, 160, 60))
    d.ellipse([120, 10, 150, 40], fill=(255, 220, 0))
    d.rectangle([40, 50, 90, 90], fill=(200, 80, 60))
    d.polygon([(35, 50), (65, 25), (95, 50)], fill=(120, 40, 30))
    d.line([(65, 90), (80, 120)], fill=(230, 200, 150), width=6)
    im.save(path)
    return path


def test_bad_run_or_image_exits_2(genie_run, clip_frame, tmp_path, capsys):
    assert play.main(["--model", str(tmp_path / "nope"), "--image", str(clip_frame)]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert play.main(["--model", str(tmp_path), "--image", str(clip_frame)]) == 2
    assert "not a finished genie dynamics run" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert play.main(["--model", str(genie_run), "--image", str(bad)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert play.main(["--model", str(genie_run), "--image", str(tmp_path / "x.png")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_photo_frame_and_drawing_all_play(genie_run, clip_frame, tmp_path):
    """Any RGB image starts a world (a JPEG photo, a clip frame, a drawing); the HTTP API
    serves the frames as the session made them."""
    from skimage.data import astronaut

    from worldmill.genie.world import GenieWorld

    photo = tmp_path / "photo.jpg"
    Image.fromarray(astronaut()).save(photo, quality=90)
    world = GenieWorld.load(genie_run)
    for path in (photo, clip_frame, drawing(tmp_path / "drawing.png")):
        s = play.PlaySession(world, play.load_image(path), seed=3)
        rec = s.step(world.num_actions - 1)
        frame = play.decode_png(rec["png"])
        assert frame.shape == (world.size, world.size, 3) and frame.dtype == np.uint8
        assert rec["step"] == 1 and rec["actions"] == [world.num_actions - 1]
        assert play.decode_png(s.frames[1]).tolist() == frame.tolist()
    with pytest.raises(ValueError, match="out of range"):
        s.step(world.num_actions)


@pytest.fixture
def served(genie_run, clip_frame):
    """``worldmill play --model RUN --image PNG --port 0`` as a user runs it; its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "worldmill.cli", "play", "--model", str(genie_run)]
        + ["--image", str(clip_frame), "--port", "0", "--seed", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url, lines, deadline = None, [], time.time() + 180
    while url is None and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := re.search(r"serving on (http://127\.0\.0\.1:\d+/)", line):
            url = m.group(1)
    try:
        assert url, "".join(lines)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_page_in_chromium_plays_like_play_frames(served, genie_run, clip_frame):
    from playwright.sync_api import expect, sync_playwright

    from worldmill.genie.world import play_frames

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: run scripts/bootstrap.sh"
    with urllib.request.urlopen(served + "api/state", timeout=10) as r:
        state = json.loads(r.read())
    assert state["step"] == 0 and state["seed"] == 5 and state["num_actions"] >= 2
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        page.goto(served)
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        expect(page.locator("#image")).to_have_js_property("naturalWidth", 64)

        def shown(step: int) -> np.ndarray:
            page.wait_for_function(
                f"() => document.getElementById('frame').dataset.step === '{step}' "
                "&& document.body.dataset.pending === '0'",
                timeout=60_000,
            )
            return play.decode_png(page.locator("#frame").get_attribute("src"))

        # From the same start, key 1 and key 2 give different frames.
        page.keyboard.press("1")
        after_1 = shown(1)
        page.click("#reset")
        shown(0)
        page.keyboard.press("2")
        after_2 = shown(1)
        assert not np.array_equal(after_1, after_2)
        # A longer game with number and arrow keys: every frame the page showed is what
        # play_frames returns for the same image, seed and actions.
        page.keyboard.press("ArrowUp")  # code 2
        page.keyboard.press("1")
        page.keyboard.press("ArrowLeft")  # code 0
        last = shown(4)
        assert page.locator("#frame").get_attribute("data-actions") == "1,2,0,0"
        assert re.fullmatch(r"\d+(\.\d+)?", page.locator("#fps").inner_text())
        strip = [play.decode_png(s) for s in page.locator("#strip img").evaluate_all(
            "els => els.map(e => e.src)")]  # fmt: skip
        browser.close()
    want = play_frames(genie_run, play.load_image(clip_frame), [1, 2, 0, 0], seed=5)
    assert np.array_equal(last, want[-1])
    assert len(strip) == 5 and all(np.array_equal(a, b) for a, b in zip(strip, want, strict=True))
    want_1 = play_frames(genie_run, play.load_image(clip_frame), [0], seed=5)[-1]
    assert np.array_equal(after_1, want_1)
