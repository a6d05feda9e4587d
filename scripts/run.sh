#!/usr/bin/env bash
# The main job: set up .venv, then run the offline demo into ./voltline.db and show what was stored.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python examples/plain_python/math_agent.py --store sqlite:///voltline.db "$@"
