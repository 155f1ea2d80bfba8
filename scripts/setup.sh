#!/usr/bin/env bash
# Create .venv and install qdeploy into it. torch==2.13.0 goes first: it is the CPU build on this
# machine's disk, and any other torch requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.qdeploy-installed
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -e ".[torch,app,test,models,image,openvino,serve,ray]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, onnxruntime, qdeploy" || { echo "setup: install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
# Browser tests drive Debian's chromium (downloading a browser is not possible here).
if [ "${QDEPLOY_BROWSER:-1}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
      || echo "setup: could not install chromium; browser tests will be skipped with that reason" >&2
  else
    echo "setup: chromium not installed and no root/apt-get; browser tests will be skipped" >&2
  fi
fi
