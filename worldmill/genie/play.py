"""``worldmill play --model RUN --image PNG [--port P] [--seed S]``: play a trained Genie world
in the browser.

A local page (standard-library HTTP server, bound to 127.0.0.1 only; default port
``DEFAULT_PORT`` = 8765, ``--port 0`` picks a free one) shows the start image and the current
frame. Keys ``1``-``8`` pick latent action ``0``-``7`` (only codes below the run's
``num_actions``); the arrow keys are shortcuts for codes: Left = 0, Right = 1, Up = 2,
Down = 3 (``ARROWS``). Each press generates the next frame from the whole history
(``GenieWorld.step``); presses made while a frame is generating queue up in order. A reset
button (or ``r``) starts again from the image with the seed in the page's seed box. The
page shows frames per second over the last presses and each frame's generation time.

Frames travel as PNG (lossless): what the page shows is bit for bit what
``worldmill.genie.world.play_frames(run, image, actions, seed)`` returns.

HTTP API (JSON unless noted; one world per server, requests serialized by a lock):

    GET  /                  the page
    GET  /api/state         {size, num_actions, seed, actions, step, arrows}
    POST /api/reset         body {"seed": S}    -> a frame record (step 0)
    POST /api/step          body {"action": A}  -> a frame record (step = len(actions))
    GET  /frame/<i>.png     frame i of the current history (image/png)
    GET  /image.png         the start image (image/png, as read: RGB)

A frame record is ``{"step", "action", "actions", "seed", "ms", "png"}``: ``ms`` is the
generation time on the server, ``png`` the frame as a ``data:image/png;base64`` URI.
Exit codes of the command: 0 stopped with Ctrl-C, 2 missing/unfinished run or unreadable image.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_PORT = 8765
HOST = "127.0.0.1"  # never reachable from other machines
ARROWS = {"ArrowLeft": 0, "ArrowRight": 1, "ArrowUp": 2, "ArrowDown": 3}  # key -> code


class PlayError(Exception):
    """A bad ``--model`` or ``--image`` (the command exits 2 with this message)."""


def load_image(path: str | Path) -> np.ndarray:
    """An image file (PNG, JPEG, ... anything Pillow reads) as ``(H, W, 3)`` uint8 RGB; the
    same array the server and a direct ``play_frames`` call start from."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise PlayError(f"image: no such file {p}")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise PlayError(f"image: cannot read {p} as an image ({e})") from e


def load_world(run: str | Path) -> Any:
    """``GenieWorld.load(run)``, with a missing or unfinished run as a ``PlayError``."""
    from worldmill.config import ConfigError

    p = Path(run)
    if not p.is_dir():
        raise PlayError(f"model: no such run folder {p}")
    from worldmill.genie.world import GenieWorld

    try:
        return GenieWorld.load(p)
    except (ConfigError, FileNotFoundError, KeyError, ValueError) as e:
        raise PlayError(f"model: {p} is not a finished genie dynamics run ({e})") from e


def png_bytes(frame: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 -> PNG bytes (lossless)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes | str) -> np.ndarray:
    """PNG bytes, or a ``data:image/png;base64,`` URI -> ``(H, W, 3)`` uint8."""
    from PIL import Image

    if isinstance(data, str):
        data = base64.b64decode(data.split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).copy()


class PlaySession:
    """One world played from one image: the frames so far and the actions that made them.
    Thread-safe (one generation at a time)."""

    def __init__(self, world: Any, image: np.ndarray, seed: int = 0):
        self.world, self.image = world, image
        self.lock = threading.Lock()
        self.frames: list[bytes] = []  # PNG of frame i (0 = the reset frame)
        self.actions: list[int] = []
        self.seed = seed
        self.reset(seed)

    def _record(self, frame: np.ndarray, t0: float, action: int | None) -> dict:
        png = png_bytes(frame)
        self.frames.append(png)
        return {
            "step": len(self.frames) - 1,
            "action": action,
            "actions": list(self.actions),
            "seed": self.seed,
            "ms": round((time.perf_counter() - t0) * 1000, 1),
            "png": "data:image/png;base64," + base64.b64encode(png).decode(),
        }

    def reset(self, seed: int | None = None) -> dict:
        with self.lock:
            self.seed = self.seed if seed is None else int(seed)
            t0 = time.perf_counter()
            frame = self.world.reset(self.image, seed=self.seed)
            self.frames, self.actions = [], []
            return self._record(frame, t0, None)

    def step(self, action: int) -> dict:
        n = int(self.world.num_actions)
        if not 0 <= action < n:
            raise ValueError(f"action {action} out of range: this world has codes 0..{n - 1}")
        with self.lock:
            t0 = time.perf_counter()
            frame = self.world.step(action)
            self.actions.append(action)
            return self._record(frame, t0, action)

    def state(self) -> dict:
        with self.lock:
            return {
                "size": int(self.world.size),
                "num_actions": int(self.world.num_actions),
                "seed": self.seed,
                "actions": list(self.actions),
                "step": len(self.frames) - 1,
                "arrows": ARROWS,
            }


def page_html() -> bytes:
    return resources.files("worldmill.genie").joinpath("play.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    session: PlaySession  # set on the subclass made by make_server
    quiet = True

    def log_message(self, fmt: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(fmt, *args)

    def _send(self, body: bytes, ctype: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json.dumps(obj).encode(), "application/json", status)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(page_html(), "text/html; charset=utf-8")
        elif path == "/api/state":
            self._json(self.session.state())
        elif path == "/image.png":
            self._send(png_bytes(self.session.image), "image/png")
        elif path.startswith("/frame/") and path.endswith(".png"):
            try:
                png = self.session.frames[int(path[len("/frame/") : -len(".png")])]
            except (ValueError, IndexError):
                self._json({"error": f"no frame {path}"}, HTTPStatus.NOT_FOUND)
                return
            self._send(png, "image/png")
        else:
            self._json({"error": f"no such page {path}"}, HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:  # noqa: N802
        try:
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n) or b"{}")
            if self.path == "/api/reset":
                self._json(self.session.reset(body.get("seed")))
            elif self.path == "/api/step":
                self._json(self.session.step(int(body["action"])))
            else:
                self._json({"error": f"no such endpoint {self.path}"}, HTTPStatus.NOT_FOUND)
        except (ValueError, KeyError, TypeError) as e:
            self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)


def make_server(session: PlaySession, port: int = DEFAULT_PORT) -> ThreadingHTTPServer:
    """A ``ThreadingHTTPServer`` on ``127.0.0.1:port`` serving ``session`` (not started)."""
    handler = type("PlayHandler", (_Handler,), {"session": session})
    server = ThreadingHTTPServer((HOST, port), handler)
    server.daemon_threads = True
    return server


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="worldmill play",
        description="play a trained genie world in the browser (a local page on 127.0.0.1)",
    )
    ap.add_argument("--model", required=True, help="genie run folder (RUN or RUN/dynamics)")
    ap.add_argument("--image", required=True, help="start image: a photo, a frame, a drawing")
    ap.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"local port (default {DEFAULT_PORT}; 0 = any free port)",
    )
    ap.add_argument("--seed", type=int, default=0, help="sampling seed of the first reset")
    ap.add_argument("--verbose", action="store_true", help="log every HTTP request")
    return ap


def main(argv: list[str]) -> int:
    a = build_parser().parse_args(argv)
    try:
        image = load_image(a.image)
        world = load_world(a.model)
        session = PlaySession(world, image, seed=a.seed)
        server = make_server(session, a.port)
    except PlayError as e:
        print(f"worldmill play: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the port is taken
        print(f"worldmill play: cannot listen on {HOST}:{a.port}: {e}", file=sys.stderr)
        return 2
    server.RequestHandlerClass.quiet = not a.verbose
    port = server.server_address[1]
    print(
        f"worldmill play: {world.num_actions} actions, {world.size}px frames, seed {a.seed}\n"
        f"serving on http://{HOST}:{port}/  (keys 1-{min(8, world.num_actions)}, arrows, "
        "r = reset; Ctrl-C stops)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
