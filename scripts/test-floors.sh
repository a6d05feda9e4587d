#!/usr/bin/env bash
# Run each plugin's tests against the lowest framework versions its pyproject.toml declares, each
# in a venv of its own under .venv-floors/ (the main .venv holds the newest releases, which the
# README's test command tests). CI runs both. Usage: scripts/test-floors.sh [plugin ...]
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}

# plugin | its test file | the floor: pins at each declared lower bound, plus any pin the floor
# needs to import at all (noted) | other workspace distributions its tests use. Every lower bound a
# plugin's pyproject.toml declares (dependencies and the examples extra) must be pinned here, at
# that version: tests/test_plugins.py checks it.
floors=(
  # langgraph-prebuilt 1.0.10 declares langgraph 1.1 compatible but imports names langgraph 1.1.1
  # lacks: pip would pick it and create_agent would not import.
  "langchain|tests/test_plugin_langchain.py|langchain-core==1.2.10 langchain==1.2.13 langgraph==1.1.1 langgraph-prebuilt==1.0.8"
  # The OpenAI client tests need autogen-ext's openai extra (requirements-dev.txt has it too).
  "autogen|tests/test_plugin_autogen.py|autogen-agentchat==0.7.0 autogen-core==0.7.0 autogen-ext[openai]==0.7.0"
  "llamaindex|tests/test_plugin_llamaindex.py|llama-index-core==0.14.25 llama-index-instrumentation==0.4.3"
  "crewai|tests/test_plugin_crewai.py|crewai==1.15.17"
  # One test instruments ag2 and AutoGen (both ship an `autogen` namespace) in one process.
  "ag2|tests/test_plugin_ag2.py|ag2==0.9.8.post1 openai==1.99.3|plugins/autogen"
)

wanted=("$@")
status=0
for entry in "${floors[@]}"; do
  IFS='|' read -r plugin tests pins also <<<"$entry"
  if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " == *" $plugin "* ]]; then
    continue
  fi
  venv=.venv-floors/$plugin
  echo "==> $plugin at its floor: $pins"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  extra=""
  if grep -q '^examples *=' "plugins/$plugin/pyproject.toml"; then extra="[examples]"; fi
  editable=(-e core -e "plugins/$plugin$extra")
  for dist in $also; do editable+=(-e "$dist"); done
  # shellcheck disable=SC2086  # $pins is a list of requirement specifiers
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "${editable[@]}" $pins "pytest>=8" "pytest-timeout>=2.3"
  names=$(for pin in $pins; do echo "${pin%%[[=<>]*}"; done | paste -sd'|')
  "$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -iE "^($names) " \
    | sed 's/^/    /' || true
  # stdin closed: CrewAI may otherwise wait for an answer about its trace viewer. Its app data
  # (kept per working-directory name, so shared with the main test run) goes beside the venv: an
  # older CrewAI cannot read the task outputs a newer one stored there.
  if ! CREWAI_STORAGE_DIR="$PWD/$venv/crewai-storage" \
      "$venv/bin/python" -m pytest -q -p no:cacheprovider "$tests" </dev/null; then
    echo "==> $plugin FAILED at its floor" >&2
    status=1
  fi
done
exit $status
