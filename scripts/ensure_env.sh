#!/usr/bin/env bash
# Make `.venv` point at a virtual environment built from requirements.txt, reusing a cached one whose key is the
# file's hash, so a fresh clone pays for torch once per machine and a changed pin builds a new environment.
# Also installs the system tools the pipeline drives (tmux, tmuxinator) and the browser the HTML report's test
# renders it with (Debian's chromium, headless; about 150 MB, 1.5 min) when they are missing and we can, and
# links the tmuxinator project so `tmuxinator start fold0123` works by name (scripts/link_tmuxinator.sh).
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
  "$venv/bin/python" -c "import torch, torchvision, lightgbm, gensim, watchdog, sklearn, libtmux, lmdb, tokenizers, optuna" \
    || { echo "[env] install failed: see pip output above" >&2; exit 1; }
  touch "$venv/.complete"
fi
ln -sfn "$venv" .venv
# the project itself, editable, so `import fold0123` works from any directory (notebooks, the tmux panes); the
# cached environment is shared by clones, so point it at this checkout whenever it points elsewhere
here=$(pwd -P)
installed=$(cd / && "$venv/bin/python" -c "import fold0123, pathlib; print(pathlib.Path(fold0123.__file__).resolve().parents[1])" 2>/dev/null || true)
if [ "$installed" != "$here" ]; then
  log=$(mktemp)
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >"$log" 2>&1 \
    || { cat "$log" >&2; echo "[env] editable install of the project failed" >&2; exit 1; }
  rm -f "$log"
fi
missing=()
command -v tmux >/dev/null || missing+=(tmux)
command -v tmuxinator >/dev/null || missing+=(tmuxinator)
command -v chromium >/dev/null || missing+=(chromium)  # tests/test_html_report.py screenshots the reports with it
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[env] installing ${missing[*]} from the distribution's packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
  else
    echo "[env] warning: ${missing[*]} missing; install them (e.g. sudo apt-get install ${missing[*]})" >&2
  fi
fi
# `tmuxinator start fold0123 conf=...` by name: link tmuxinator/fold0123.yml into tmuxinator's config folder
# (the clone set up last wins; a user's own fold0123.yml is left alone with a warning)
if command -v tmuxinator >/dev/null; then
  bash scripts/link_tmuxinator.sh || echo "[env] warning: could not link the tmuxinator project; use" \
    "tmuxinator start -p tmuxinator/fold0123.yml conf=..." >&2
fi
