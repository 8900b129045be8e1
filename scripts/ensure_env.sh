#!/usr/bin/env bash
# Make `.venv` point at a virtual environment built from requirements.txt, reusing a cached one whose key is the
# file's hash, so a fresh clone pays for torch once per machine and a changed pin builds a new environment.
# Also installs the system tools the pipeline drives (tmux, tmuxinator) when they are missing and we can.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${FOLD0123_CACHE:-$HOME/.cache/fold0123}"
key=$( (cat requirements.txt; python3 --version; uname -m) | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
if [ ! -f "$venv/.complete" ]; then
  echo "[env] building $venv from requirements.txt (one time per requirements hash)"
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -m pip install -q -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -c "import torch, torchvision, lightgbm, gensim, watchdog, sklearn, libtmux" \
    || { echo "[env] install failed: see pip output above" >&2; exit 1; }
  touch "$venv/.complete"
fi
ln -sfn "$venv" .venv
missing=()
command -v tmux >/dev/null || missing+=(tmux)
command -v tmuxinator >/dev/null || missing+=(tmuxinator)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[env] installing ${missing[*]} from the distribution's packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
  else
    echo "[env] warning: ${missing[*]} missing; install them (e.g. sudo apt-get install ${missing[*]})" >&2
  fi
fi
