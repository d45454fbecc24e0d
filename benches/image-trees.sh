#!/usr/bin/env bash
# Makes the Debian root trees benches/image.sh compares, once, into the test cache
# (the same tarballs tests/it/debian_root.rs makes):
#   debootstrap-bookworm-minbase.tar   Debian 12 minbase
#   debootstrap-trixie-minbase.tar     Debian 13 minbase
#   bookworm-minbase-updated.tar       12 minbase with every package that has a newer
#                                      version in the configured suites (updates, security)
#                                      unpacked over it (dpkg-deb -x): changes existing files
#   bookworm-minbase-plus.tar          12 minbase plus two small packages (add-only)
#
# The mirror is RELEASE_UPGRADER_DEBIAN_MIRROR or the first …/debian URI of this machine's
# apt sources. Needs root, debootstrap, apt-get and dpkg-deb.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
# debootstrap mounts /proc and /sys in the roots it makes: in a namespace of our own.
in_private_mount_ns "$@"

cache="${RELEASE_UPGRADER_TEST_CACHE:-$HOME/.cache/release-upgrader-tests}"
mkdir -p "$cache"

mirror=$(debian_mirror) || exit 1

minbase() {
  local suite=$1 tarball="$cache/debootstrap-$1-minbase.tar"
  [ -f "$tarball" ] && return 0
  local work
  work=$(mktemp -d "$cache/debootstrap.XXXXXX")
  debootstrap --variant=minbase "$suite" "$work/root" "$mirror" >"$work/log" 2>&1 ||
    { tail -20 "$work/log" >&2; exit 1; }
  tar -C "$work/root" --numeric-owner -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  safe_rm_tree "${work:?}"
}

# A copy of the bookworm tree with debs unpacked over it.
overlay() {
  local out=$1; shift
  [ -f "$out" ] && return 0
  local work
  work=$(mktemp -d "$cache/overlay.XXXXXX")
  mkdir "$work/root" "$work/debs"
  tar -C "$work/root" --numeric-owner -xpf "$cache/debootstrap-bookworm-minbase.tar"
  (cd "$work/debs" && apt-get download "$@" >/dev/null)
  for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
  tar -C "$work/root" --numeric-owner -cf "$out.partial" .
  mv "$out.partial" "$out"
  safe_rm_tree "${work:?}"
}

minbase bookworm &
minbase trixie &
wait

# Installed packages of the 12 tree whose candidate (host apt: bookworm, -updates,
# -security) is newer.
if [ ! -f "$cache/bookworm-minbase-updated.tar" ]; then
  status=$(mktemp)
  tar -xOf "$cache/debootstrap-bookworm-minbase.tar" ./var/lib/dpkg/status >"$status"
  newer=()
  while read -r pkg ver; do
    cand=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')
    if [ -n "$cand" ] && [ "$cand" != "(none)" ] && dpkg --compare-versions "$cand" gt "$ver"; then
      newer+=("$pkg=$cand")
    fi
  done < <(awk '/^Package:/ { p = $2 } /^Version:/ { print p, $2 }' "$status")
  rm -f -- "${status:?}"
  echo "updated packages: ${newer[*]:-none}" >&2
  [ ${#newer[@]} -gt 0 ] || { echo "image-trees.sh: no package of the 12 tree has an update" >&2; exit 1; }
  overlay "$cache/bookworm-minbase-updated.tar" "${newer[@]}"
fi
overlay "$cache/bookworm-minbase-plus.tar" hello less
ls -l "$cache"/*.tar
