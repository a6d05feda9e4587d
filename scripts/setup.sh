#!/usr/bin/env bash
# Sets up ./.venv on a fresh machine: torch 2.13.0 (CPU) first, so nothing later pulls a
# multi-GB CUDA build, then every workspace distribution in editable mode. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

if ! .venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  echo "==> installing torch 2.13.0 (CPU)"
  "${pip[@]}" torch==2.13.0
fi

# Every distribution in the workspace, resolved together: core (with the proxy's local model
# backend and OTLP/protobuf ingest), each plugin with its `examples` extra where it has one (what
# its example drives beyond the framework itself), each algorithm package.
dists=("core[local,otlp]")
for d in plugins/*/; do
  [ -f "$d/pyproject.toml" ] || continue
  if grep -q '^examples *=' "$d/pyproject.toml"; then dists+=("${d%/}[examples]"); else dists+=("${d%/}"); fi
done
for d in algorithms/*/; do
  [ -f "$d/pyproject.toml" ] && dists+=("${d%/}")
done
echo "==> installing ${dists[*]} (editable)"
editable=()
for d in "${dists[@]}"; do editable+=(-e "$d"); done
"${pip[@]}" "${editable[@]}"

if [ "${1:-}" = "--dev" ]; then
  echo "==> installing test tools, and the test fixture distribution into .venv/test-plugins"
  "${pip[@]}" -r requirements-dev.txt
  # The fixture's plugins (one broken on purpose) go beside the venv, not into it: only test runs
  # put .venv/test-plugins on their path (pyproject.toml), so `voltline` itself never loads them.
  # Earlier setups installed it into the venv; take it out of there.
  .venv/bin/python -m pip uninstall --quiet --yes voltline-testdist >/dev/null 2>&1 || true
  # setuptools builds in the fixture's build/ and keeps what it finds there: a module deleted
  # from the fixture would still be installed from an earlier build.
  rm -rf tests/fixtures/voltline-testdist/build
  "${pip[@]}" --no-deps --upgrade --target .venv/test-plugins tests/fixtures/voltline-testdist
fi
