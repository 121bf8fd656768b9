#!/usr/bin/env bash
# One command: set up, generate a sample corpus, curate it, print a summary and the outputs.
#   bash scripts/demo.sh [DIR]        (default DIR: ./worldmill-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/worldmill demo "${1:-worldmill-demo}"
