"""What one synthetic shot looks like (``worldmill/sample_shots.py``): the Ken-Burns camera
films its crop window where the path says, and ``compose`` puts each boundary where the
ground-truth conventions of ``worldmill/sample_data.py`` say it is."""

from __future__ import annotations

import numpy as np

from worldmill.sample_shots import FPS, H, Shot, W, compose, kenburns


def _noise(h: int = 400, w: int = 700) -> np.ndarray:
    """A textured float32 RGB source image, so every shift of the window shows."""
    return np.random.default_rng(0).uniform(0, 255, (h, w, 3)).astype(np.float32)


def test_kenburns_films_the_window_along_the_camera_path():
    img = _noise()
    # Window as wide as the frame (1 source pixel per output pixel) panning 40 px right
    # over 5 frames: 10 px per frame, whole pixels, so bilinear sampling is exact.
    a, b = np.array([200.0, 150.0, W]), np.array([240.0, 150.0, W])
    f = kenburns(img, 5, a, b)
    assert f.shape == (5, H, W, 3) and f.dtype == np.uint8
    x0, y0 = int(a[0] - W / 2), int(a[1] - H / 2)
    expected0 = np.clip(img[y0 : y0 + H, x0 : x0 + W], 0, 255).astype(np.uint8)
    assert np.abs(f[0].astype(int) - expected0).max() <= 1
    for i in range(1, 5):  # frame i is frame 0 moved 10*i px left (the window went right)
        assert np.abs(f[i, :, : -10 * i].astype(int) - f[0, :, 10 * i :]).max() <= 1
        assert np.abs(f[i].astype(int) - f[0]).mean() > 20  # and it did move
    # A zoom in: from a window twice the frame's width (the source at half scale) to the
    # frame's width around the same centre (the source at full scale, pixel for pixel).
    z = kenburns(img, 3, np.array([350.0, 200.0, 2 * W]), np.array([350.0, 200.0, W]))
    assert z.shape == (3, H, W, 3)
    crop = np.clip(img[110 : 110 + H, 190 : 190 + W], 0, 255).astype(np.uint8)
    assert np.abs(z[-1].astype(int) - crop).max() <= 1
    assert np.abs(z[0].astype(int) - crop).mean() > 20


def test_compose_places_cuts_dissolves_and_fades():
    def flat(value: int, n: int) -> Shot:
        return Shot("moving", n, f"c{value}", lambda m: np.full((m, H, W, 3), value, np.uint8))

    shots = [flat(40, 20), flat(200, 20), flat(120, 20), flat(80, 20)]
    frames, bounds = compose(shots, [("hard", 0), ("dissolve", 6), ("fade", 4)])
    # A dissolve renders d extra frames of the next shot, so no shot gets shorter.
    assert frames.shape == (4 * 20, H, W, 3) and frames.dtype == np.uint8
    assert [b["type"] for b in bounds] == ["hard", "dissolve", "fade"]
    hard, diss, fade = bounds
    assert hard["time_s"] == hard["start_s"] == hard["end_s"] == 20 / FPS
    assert (frames[19, 0, 0, 0], frames[20, 0, 0, 0]) == (40, 200)
    # Dissolve over frames [34, 40): midpoint at 37, a blend of both shots inside.
    assert (diss["start_s"], diss["time_s"], diss["end_s"]) == (34 / FPS, 37 / FPS, 40 / FPS)
    assert frames[33, 0, 0, 0] == 200 and 120 < frames[37, 0, 0, 0] < 200
    # Fade: 4 frames out to black ending at frame 60, 4 in from black.
    assert (fade["start_s"], fade["time_s"], fade["end_s"]) == (56 / FPS, 60 / FPS, 64 / FPS)
    assert frames[59].max() == 0 and frames[60].max() == 0 and frames[64, 0, 0, 0] == 80
