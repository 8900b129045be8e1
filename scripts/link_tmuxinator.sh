#!/usr/bin/env bash
# Make `tmuxinator start fold0123 conf=...` (the design card's command) work by name: link this checkout's
# tmuxinator/fold0123.yml into the folder tmuxinator keeps its projects in. scripts/ensure_env.sh calls this.
#
# The folder is the one tmuxinator 3 (lib/tmuxinator/config.rb, Config.directory) stores projects in:
# $TMUXINATOR_CONFIG when set, else ${XDG_CONFIG_HOME:-~/.config}/tmuxinator when it exists, else ~/.tmuxinator
# when it exists, else ~/.config/tmuxinator (created). It is also the first folder it looks a name up in.
#
# Several clones of the project on one machine share that folder: the link points at the checkout set up last
# (the latest set-up wins) and says so when it moves. The YAML follows its own symlink to find the repository,
# so the link is all it needs. Never replaced: a fold0123.yml of the user's own (a plain file, or a link to
# something that is not a fold0123 checkout), nor one elsewhere in tmuxinator's folders that the link would hide;
# this then warns and leaves everything as it is (`tmuxinator start -p tmuxinator/fold0123.yml ...` still works).
# Exits 0 after a warning: the environment is usable without the link.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd -P)
ours="$here/tmuxinator/fold0123.yml"
xdg="${XDG_CONFIG_HOME:-$HOME/.config}/tmuxinator"
home="$HOME/.tmuxinator"
if [ -n "${TMUXINATOR_CONFIG:-}" ]; then dir=$TMUXINATOR_CONFIG
elif [ -d "$xdg" ]; then dir=$xdg
elif [ -d "$home" ]; then dir=$home
else dir=$xdg
fi
dir=${dir%/}
link="$dir/fold0123.yml"
instead="this checkout without the link: cd $here && tmuxinator start -p tmuxinator/fold0123.yml conf=..."

warn() { echo "[env] warning: $*; $instead" >&2; }

# a link to some clone's tmuxinator/fold0123.yml (a clone may since have moved or gone: the path's shape counts)
clone_link() {
  local target
  [ -L "$1" ] || return 1
  target=$(readlink -m "$1")
  case "$target" in */tmuxinator/fold0123.yml) ;; *) return 1 ;; esac
  [ ! -e "$target" ] || [ -f "${target%/tmuxinator/fold0123.yml}/fold0123/launcher/layout.py" ]
}

if [ -e "$link" ] && [ ! -L "$link" ]; then
  warn "$link is your own file, left as it is (tmuxinator start fold0123 runs it)"
  exit 0
fi
if [ -L "$link" ] && ! clone_link "$link"; then
  warn "$link links to $(readlink "$link"), not to a fold0123 checkout: left as it is"
  exit 0
fi
# tmuxinator finds a name anywhere under its folders (sub-folders too, .yml or .yaml): another fold0123 project
# there would be hidden by the link, or hide it
others=()
for d in "${TMUXINATOR_CONFIG:-}" "$xdg" "$home"; do
  [ -n "$d" ] && [ -d "$d" ] || continue
  while IFS= read -r -d '' found; do
    [ "$found" = "$link" ] || clone_link "$found" || others+=("$found")
  done < <(find "${d%/}" \( -name fold0123.yml -o -name fold0123.yaml \) -print0 2>/dev/null)
done
if [ ${#others[@]} -gt 0 ]; then
  warn "another tmuxinator project named fold0123 exists (${others[*]}): not linking $link over it"
  exit 0
fi
if [ -L "$link" ]; then
  was=$(readlink "$link")
  [ "$(readlink -m "$link")" = "$ours" ] && exit 0
  ln -sfn "$ours" "$link"
  echo "[env] tmuxinator project fold0123 now starts this checkout ($here), no longer $was (the latest set-up wins)"
else
  mkdir -p "$dir"
  ln -s "$ours" "$link"
  echo "[env] linked $link -> $ours: tmuxinator start fold0123 conf=... starts this checkout"
fi
