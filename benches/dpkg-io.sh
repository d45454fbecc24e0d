#!/usr/bin/env bash
# Does dpkg's safe I/O cost anything on this machine? To be asked before an upgrade that
# unpacks with --force-unsafe-io and syncs once per dpkg run is worth building (issue 18):
# dpkg syncs every file it unpacks (one filesystem journal commit each), and that is the
# whole of what --force-unsafe-io saves; dpkg starts each file's writeback as it writes it
# either way.
#
# Times `dpkg --unpack` of the same packages into fresh copies of the Debian 12 minbase
# root, safe and with --force-unsafe-io followed by one `sync -f` of the root (what an
# unsafe upgrade needs at least), alternating which goes first; prints the medians, the
# ratio unsafe/safe and what each unpacked file's sync cost, next to the raw cost of one
# write + fsync + rename of a 16 KiB file here.
#
#   benches/dpkg-io.sh [RUNS]            # default 5 pairs
#   DEBS=DIR benches/dpkg-io.sh          # other packages (default: the cached trixie
#                                        # debs the helper tests fetch, ~30)
#   BENCH_DIR=/mnt/slow benches/dpkg-io.sh   # on another filesystem (default /var/tmp:
#                                        # a tmpfs would measure nothing)
#
# Dependencies, conflicts and breaks are forced: only the unpacking is measured.
# Needs root (dpkg --root with owners; maintainer scripts run in the copy), the tests'
# minbase tarball (tests/it/debian_root.rs or benches/image-trees.sh make it) and the debs.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

runs=${1:-5}
cache=${RELEASE_UPGRADER_TEST_CACHE:-$HOME/.cache/release-upgrader-tests}
tarball=$cache/debootstrap-bookworm-minbase.tar
debs=${DEBS:-$cache/upstream-debs}
[ -f "$tarball" ] || { echo "no $tarball: run benches/image-trees.sh first" >&2; exit 2; }
compgen -G "$debs/*.deb" >/dev/null || { echo "no .deb in $debs (set DEBS)" >&2; exit 2; }

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/release-upgrader-dpkg-io.XXXXXX")
trap 'safe_rm_tree "${work:?}"' EXIT

files=0
for deb in "$debs"/*.deb; do
  files=$((files + $(dpkg-deb -c "$deb" | grep -c '^-' || true)))
done
packages=$(compgen -G "$debs/*.deb" | wc -l)

# One file as dpkg's safe I/O writes it: written, fsynced, renamed into place.
fsync_ms=$(python3 - "$work" <<'EOF'
import os, sys, time
d = sys.argv[1]
n = 300
start = time.monotonic()
for i in range(n):
    tmp = f"{d}/probe{i}.dpkg-new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"x" * 16384)
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, f"{d}/probe{i}")
print(f"{(time.monotonic() - start) / n * 1000:.2f}")
for i in range(n):
    os.unlink(f"{d}/probe{i}")
EOF
)

unpack() { # MODE -> seconds (a fresh root each time, made and synced untimed)
  local root=$work/root options=()
  if [ -e "$root" ]; then safe_rm_tree "${root:?}"; fi
  mkdir -p "$root"
  tar -C "$root" --numeric-owner -xpf "$tarball"
  sync -f "$root"
  [ "$1" = unsafe ] && options=(--force-unsafe-io)
  local start end before
  before=$(wc -l <"$root/var/log/dpkg.log")
  start=$(date +%s%N)
  dpkg --root="$root" --log="$root/var/log/dpkg.log" --force-depends --force-conflicts \
    --force-breaks --force-confold --force-overwrite --no-triggers \
    "${options[@]}" --unpack "$debs"/*.deb >"$work/dpkg-$1.log" 2>&1 || true
  [ "$1" = unsafe ] && sync -f "$root"
  end=$(date +%s%N)
  # A package whose preinst refuses this forced mix fails the same way in both modes;
  # they must have unpacked the same packages.
  tail -n +$((before + 1)) "$root/var/log/dpkg.log" | grep ' status unpacked ' |
    awk '{ print $5 }' | sort -u >"$work/unpacked-$1"
  awk -v ns=$((end - start)) 'BEGIN { printf "%.3f\n", ns / 1e9 }'
}

safe=() unsafe=()
for ((i = 1; i <= runs; i++)); do
  if ((i % 2)); then
    safe+=("$(unpack safe)"); unsafe+=("$(unpack unsafe)")
  else
    unsafe+=("$(unpack unsafe)"); safe+=("$(unpack safe)")
  fi
  echo "pair $i: safe ${safe[-1]} s, unsafe+sync ${unsafe[-1]} s" >&2
done
cmp -s "$work/unpacked-safe" "$work/unpacked-unsafe" ||
  { echo "the two modes unpacked different packages" >&2; exit 1; }
unpacked=$(wc -l <"$work/unpacked-safe")

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ms=$(median "${safe[@]}") mu=$(median "${unsafe[@]}")
awk -v s="$ms" -v u="$mu" -v f="$files" -v p="$packages" -v done="$unpacked" -v probe="$fsync_ms" -v runs="$runs" 'BEGIN {
  printf "dpkg --unpack of %d packages (%d files; %d unpacked), median of %d pairs: safe %.2f s, --force-unsafe-io + sync %.2f s, ratio %.2f\n", p, f, done, runs, s, u, u / s
  printf "sync cost per unpacked file: %.2f ms (one write+fsync+rename of 16 KiB here: %.2f ms)\n", (s - u) * 1000 / f, probe
}'
