#!/usr/bin/env bash
# Whole Debian 12 → 13 upgrade of a minbase root against stock apt, in one run.
#
#   ours: release-upgrader --root R upgrade -y -f noninteractive
#         (helper bootstrap from a local pocket of trixie's apt and dpkg included)
#   peer: in a chroot of an identical copy: sources to trixie, then
#         apt-get update && apt-get -y full-upgrade (confdef/confold, noninteractive)
#
# Both download from the Debian mirror of this machine's apt sources (or
# RELEASE_UPGRADER_DEBIAN_MIRROR), after one unmeasured warm-up run, in alternating order,
# RUNS times each (default 3); prints the medians and the ratio ours/peer. Needs root
# (chroot, mounts). The bookworm minbase tarball is the end-to-end tests' cache
# (debootstrapped once if missing). The whole script runs in a private mount namespace
# (the chroots' /proc, /sys and /dev never show on the host and go with it), and a root
# is deleted only once nothing is mounted below it. With RELEASE_UPGRADER_BENCH_LOGS=DIR,
# each of our runs leaves its /var/log/dist-upgrade there (main.log has the time of every
# step).
# Usage: benches/upgrade.sh [RUNS]
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "benches/upgrade.sh needs root" >&2; exit 2; }
. "$(dirname "$0")/lib.sh"
in_private_mount_ns "$@"
cd "$(dirname "$0")/.."
runs=${1:-3}

mirror=${RELEASE_UPGRADER_DEBIAN_MIRROR:-$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true) |
  grep -oE 'https?://[^ ]*/debian/?( |$)' | head -1 | tr -d ' ' || true)}
[ -n "$mirror" ] || { echo "no Debian mirror in the apt sources; set RELEASE_UPGRADER_DEBIAN_MIRROR" >&2; exit 2; }
cache=${RELEASE_UPGRADER_TEST_CACHE:-$HOME/.cache/release-upgrader-tests}
mkdir -p "$cache"
tarball=$cache/debootstrap-bookworm-minbase.tar
if [ ! -f "$tarball" ]; then
  tmp=$(mktemp -d -p "$cache")
  debootstrap --variant=minbase bookworm "$tmp/root" "$mirror" >/dev/null
  tar -C "$tmp/root" --numeric-owner -cf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
  safe_rm_tree "${tmp:?}"
fi

cargo build --release --bins -q
bin=$PWD/target/release
work=$(mktemp -d)
srv_pid=
mounted=()
# Unmounts, innermost first, what was mounted below DIR (a busy mount is detached with -l).
unmount_below() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    case ${mounted[i]} in "${1:?}"/*) umount "${mounted[i]}" || umount -l "${mounted[i]}"; unset 'mounted[i]' ;; esac
  done
  mounted=("${mounted[@]}")
}
cleanup() {
  unmount_below "${work:?}" || true
  [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null
  safe_rm_tree "${work:?}"
}
trap cleanup EXIT

pub() { "$bin/release-upgrader-publish" -q "$@" >/dev/null; }
pub key generate --out "$work/key"
pub helper build helpers/debian.toml --release trixie --archive "$mirror" --arch amd64 \
  --keyring /usr/share/keyrings/debian-archive-keyring.gpg --cache "$cache/upstream-debs" --out "$work/helpers"
pub pocket build --codename trixie --arch amd64 --valid-days 2 --out "$work/srv/dists/trixie" \
  --key "$work/key/secret.asc" "$work/helpers"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/srv" "$port" >/dev/null 2>&1 &
srv_pid=$!
url="http://127.0.0.1:$port"
pub meta-release build pockets/debian-meta-release.toml --out "$work/srv/meta-release" \
  --key "$work/key/secret.asc" --base-uri "$url/dists/{dist}/"

fresh() { # DIR: a bookworm root with /proc, /sys, /dev mounted
  mkdir -p "$1"
  tar -C "$1" --numeric-owner -xpf "$tarball"
  printf '#!/bin/sh\nexit 101\n' >"$1/usr/sbin/policy-rc.d"
  chmod 755 "$1/usr/sbin/policy-rc.d"
  # A mount that fails stops the script (set -e); the trap unmounts the ones before it.
  mount -t proc proc "$1/proc"; mounted+=("$1/proc")
  mount -t sysfs sysfs "$1/sys"; mounted+=("$1/sys")
  mount --bind /dev "$1/dev"; mounted+=("$1/dev")
  mount --bind /dev/pts "$1/dev/pts"; mounted+=("$1/dev/pts")
}
release() { # DIR: unmount and remove (refused while anything is still mounted below it)
  unmount_below "${1:?}"
  safe_rm_tree "${1:?}"
}
check() { # DIR LABEL
  grep -q '^13\.' "$1/etc/debian_version" || { echo "$2: not upgraded: $(cat "$1/etc/debian_version")" >&2; exit 1; }
}

ours() {
  fresh "$work/ours"
  local t0 t1
  t0=$(date +%s.%N)
  "$bin/release-upgrader" -q --root "$work/ours" --keyring "$work/key/keyring.gpg" \
    --meta-release-uri "$url/meta-release" upgrade -y -f noninteractive >"$work/ours.log" 2>&1 ||
    { cat "$work/ours.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  check "$work/ours" ours
  echo "$t1 $t0" | awk '{print $1 - $2}' >>"$work/ours.t"
  if [ -n "${RELEASE_UPGRADER_BENCH_LOGS:-}" ]; then
    mkdir -p "$RELEASE_UPGRADER_BENCH_LOGS"
    cp -r "$work/ours/var/log/dist-upgrade" "$RELEASE_UPGRADER_BENCH_LOGS/run-$(wc -l <"$work/ours.t")"
  fi
  release "$work/ours"
}
peer() {
  fresh "$work/peer"
  local t0 t1
  t0=$(date +%s.%N)
  sed -i 's/\bbookworm\b/trixie/g' "$work/peer/etc/apt/sources.list"
  chroot "$work/peer" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 sh -c \
    'apt-get -q=2 update && apt-get -q=2 -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold full-upgrade' \
    >"$work/peer.log" 2>&1 || { cat "$work/peer.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  check "$work/peer" peer
  echo "$t1 $t0" | awk '{print $1 - $2}' >>"$work/peer.t"
  release "$work/peer"
}

: >"$work/ours.t"; : >"$work/peer.t"
# The mirror may be a caching proxy: one unmeasured run fills its cache, so neither side
# pays for a cold one. Then the order alternates.
peer; : >"$work/peer.t"
for i in $(seq "$runs"); do
  if ((i % 2)); then ours; peer; else peer; ours; fi
done
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
o=$(median <"$work/ours.t"); p=$(median <"$work/peer.t")
printf 'upgrade 12 -> 13 (median of %d): release-upgrader %.1f s, apt-get update+full-upgrade %.1f s, ratio %.2f\n' \
  "$runs" "$o" "$p" "$(echo "$o $p" | awk '{print $1 / $2}')"
