#!/usr/bin/env bash
# Create .venv and install lsr with the dev extra, honouring constraints.txt (torch==2.13.0 CPU).
# Uses uv when it is on PATH or can be installed into the venv; plain pip otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PIP_CONSTRAINT="$root/constraints.txt" UV_CONSTRAINT="$root/constraints.txt"
extra="${LSR_EXTRA:-dev}"

[ -x .venv/bin/python ] || python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
py=.venv/bin/python

# uv ignores pip.conf: hand it the local wheel folder (it holds the CPU torch wheel) when there is one.
find_links=()
wheel_dir=$("$py" -m pip config get global.find-links 2>/dev/null || true)
if [ -n "$wheel_dir" ] && [ -d "$wheel_dir" ]; then find_links=(--find-links "$wheel_dir"); fi

uv_bin=$(command -v uv || true)
if [ -z "$uv_bin" ] && "$py" -m pip install -q uv >/dev/null 2>&1; then uv_bin=.venv/bin/uv; fi

if [ -n "$uv_bin" ]; then
  echo "setup: installing -e .[$extra] with uv"
  "$uv_bin" pip install --python "$py" "${find_links[@]}" -e ".[$extra]"
else
  echo "setup: installing -e .[$extra] with pip"
  "$py" -m pip install -q -e ".[$extra]"
fi
echo "setup: done ($("$py" -c 'import torch, numba; print(f"torch {torch.__version__}, numba {numba.__version__}")'))"
