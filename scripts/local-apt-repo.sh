#!/usr/bin/env bash
# Build a flat local apt repository holding PACKAGES and everything they depend on, from the
# distribution's mirror, for guests that cannot reach a mirror themselves (offline labs, this
# project's own tests). Serve DIR over HTTP and point guests at it with
#   vagabond up BOX -e '{"vagabond_apt_sources": ["deb [trusted=yes] http://HOST:PORT/ ./"]}'
#
#   scripts/local-apt-repo.sh DIR SUITE PACKAGE...
set -euo pipefail
[[ $# -ge 3 ]] || { echo "usage: $0 DIR SUITE PACKAGE..." >&2; exit 2; }
dir=$1 suite=$2
shift 2
want="$suite $*"
if [[ -f "$dir/Packages" && "$(cat "$dir/.request" 2>/dev/null)" == "$want" ]]; then
  echo "local-apt-repo: $dir is up to date" >&2
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
include=$(IFS=,; echo "$*")
mkdir -p "$tmp/debs"
# --skip=download/empty keeps every .deb that the packages and their dependencies needed; the
# hook copies them out before the throw-away root file system goes.
mmdebstrap --quiet --variant=apt --mode=root --format=null --skip=download/empty \
  --include="$include" --customize-hook="sync-out /var/cache/apt/archives $tmp/debs" \
  "$suite" /dev/null
rm -rf "$dir" && mkdir -p "$dir"
mv "$tmp"/debs/*.deb "$dir/"
(cd "$dir" && dpkg-scanpackages --multiversion . 2>/dev/null > Packages)
echo "$want" > "$dir/.request"
echo "local-apt-repo: $(ls "$dir"/*.deb | wc -l) packages in $dir" >&2
