#!/usr/bin/env bash
# The main job: set up .venv, then train a LangChain agent with GRPO, offline on the CPU
# (tiny local model, built and cached on the first run; LLM proxy in-process; store ./voltline.db).
# It prints reward per step and held-out accuracy before and after, and writes
# voltline-demo/reward_curve.png. Extra args go to the demo (e.g. --steps 300, --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python examples/demo/train_demo.py --store sqlite:///voltline.db "$@"
