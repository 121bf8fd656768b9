"""worldmill.training.metrics: PSNR/SSIM on [-1, 1] videos, the equal-bytes bicubic baseline,
the log reader and the run plots."""

import math

import numpy as np
import pytest
import torch

from worldmill.training import metrics


def _video(seed: int = 0, shape=(2, 3, 4, 32, 48)) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_psnr_matches_its_definition():
    x = _video()
    y = (x + 0.1).clamp(-1, 1)
    mse = ((x - y) ** 2).flatten(1).mean(1)
    want = float((10 * torch.log10(4 / mse)).mean())  # peak-to-peak 2 -> peak^2 = 4
    assert metrics.psnr(x, y) == pytest.approx(want, rel=1e-6)
    assert metrics.psnr(x, x) == pytest.approx(10 * math.log10(4 / 1e-10))  # clamped, finite
    assert metrics.psnr(x, -x) < metrics.psnr(x, y)


def test_ssim_is_one_for_equal_videos_and_falls_with_noise():
    ramp = torch.linspace(-0.8, 0.8, 48)
    x = (ramp * torch.linspace(-1, 1, 32)[:, None]).expand(2, 3, 4, 32, 48).contiguous()
    noisy = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(
        -1, 1
    )
    assert metrics.ssim(x, x) == pytest.approx(1.0)
    assert metrics.ssim(x, noisy) < 0.8


def test_to_uint8_maps_the_range_and_the_layout():
    v = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 1, 1, 4).expand(1, 3, 1, 1, 4)
    u = metrics.to_uint8(v)
    assert u.shape == (1, 1, 1, 4, 3) and u.dtype == np.uint8
    assert u[0, 0, 0, :, 0].tolist() == [0, 128, 255, 255]


def test_bicubic_baseline_spends_at_least_the_budget_and_keeps_the_aspect():
    x = _video(shape=(1, 3, 4, 64, 128))
    budget = 3 * 4 * 8 * 16  # room for 8x16 frames exactly
    up, (h, w) = metrics.bicubic_baseline(x, budget)
    assert up.shape == x.shape
    assert (h, w) == (8, 16)
    # One byte more than 8x16 holds: the grid grows (never rounds down below the budget),
    # by as little as it can.
    _, (h, w) = metrics.bicubic_baseline(x, budget + 1)
    assert budget < 3 * 4 * h * w <= budget + 3 * 4 * 16
    # The DV default's 384 bytes on a 9-frame 64x64 clip: 4x4 (432 bytes), not 3x3 (243).
    assert metrics.bicubic_baseline(_video(shape=(1, 3, 9, 64, 64)), 384.0)[1] == (4, 4)
    smooth = torch.linspace(-1, 1, 128).expand(1, 3, 4, 64, 128).contiguous()
    assert metrics.psnr(metrics.bicubic_baseline(smooth, budget)[0], smooth) > 30
    assert metrics.psnr(up, x) < 15  # noise does not survive 8x downsampling


def test_read_log_skips_blank_lines_and_a_missing_file(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text('{"step": 1, "loss": 2.0}\n\n{"step": 2, "loss": 1.0}\n')
    assert metrics.read_log(p) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]
    assert metrics.read_log(tmp_path / "absent.jsonl") == []


def test_plots_are_real_pngs(tmp_path):
    from PIL import Image

    log = [{"step": s, "loss": 1.0 / s} for s in range(1, 20)]
    loss = metrics.plot_loss(log, tmp_path / "loss.png")
    grid = metrics.plot_recon({"input": _video()[0], "recon": _video(1)[0]}, tmp_path / "r.png")
    for p in (loss, grid):
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 150
