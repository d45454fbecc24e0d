#!/usr/bin/env bash
# Whole Debian 12 → 13 upgrade of a bookworm root against stock apt, in one run.
#
#   ours: release-upgrader --root R upgrade -y -f noninteractive
#         (helper bootstrap from a local pocket of trixie's apt and dpkg included)
#   peer: in a chroot of an identical copy: sources to trixie, then
#         apt-get update && apt-get -y full-upgrade (confdef/confold, noninteractive)
#
# Both download from the Debian mirror of this machine's apt sources (or
# RELEASE_UPGRADER_DEBIAN_MIRROR), after one unmeasured warm-up run, in alternating order,
# RUNS times each (default 3); prints the medians and the ratio ours/peer, then where the
# time went: for ours the phases main.log times, for the peer `update` and `full-upgrade`
# (run one after the other, timed apart), and for both the dpkg runs of dpkg.log
# (benches/upgrade-phases.awk), each run's line and the medians. Needs root (chroot,
# mounts).
#
# ROOT (or RELEASE_UPGRADER_BENCH_ROOT) chooses the bookworm root, debootstrapped once and
# cached as a tarball beside the end-to-end tests' minbase one:
#   minbase  --variant=minbase (the default, the tests' tarball)
#   server   the standard base with openssh-server, nginx, postgresql, locales, man-db,
#            python3, perl, cron, logrotate, rsyslog, less, vim-tiny (~240 packages)
#   desktop  the server set with xserver-xorg-core, network-manager, firefox-esr, GTK 3
#            and 4, fonts and icons (~500 packages, ~1 GB downloaded a run)
# The whole script runs in a private mount namespace (the chroots' /proc, /sys and /dev
# never show on the host and go with it), and a root is deleted only once nothing is
# mounted below it. With RELEASE_UPGRADER_BENCH_LOGS=DIR, each run leaves its logs there:
# ours-N/ (our /var/log/dist-upgrade; main.log has the time of every step) and peer-N/
# (apt's output, /var/log/apt), each with the run's new dpkg.log lines.
# RELEASE_UPGRADER_BENCH_OURS_APT_CONF=TEXT puts TEXT into our side's
# /etc/apt/apt.conf.d/99bench-ours (apt options to measure before coding them).
# Usage: benches/upgrade.sh [RUNS] [minbase|server|desktop]
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "benches/upgrade.sh needs root" >&2; exit 2; }
. "$(dirname "$0")/lib.sh"
in_private_mount_ns "$@"
cd "$(dirname "$0")/.."
runs=${1:-3}
kind=${2:-${RELEASE_UPGRADER_BENCH_ROOT:-minbase}}
server_set=openssh-server,nginx,postgresql,locales,man-db,python3,perl,cron,logrotate,rsyslog,less,vim-tiny
desktop_set=$server_set,xserver-xorg-core,xserver-xorg-input-libinput,xinit,network-manager,firefox-esr,libgtk-3-0,libgtk-4-1,libgtk-3-bin,adwaita-icon-theme,gnome-themes-extra,fonts-dejavu,fonts-liberation2,fonts-noto-core,dbus-user-session,pulseaudio,gvfs,policykit-1
case $kind in
  minbase) debootstrap_args=(--variant=minbase) ;;
  server) debootstrap_args=(--include="$server_set") ;;
  desktop) debootstrap_args=(--include="$desktop_set") ;;
  *) echo "unknown root $kind (minbase, server or desktop)" >&2; exit 2 ;;
esac

mirror=$(debian_mirror) || exit 2
cache=${RELEASE_UPGRADER_TEST_CACHE:-$HOME/.cache/release-upgrader-tests}
mkdir -p "$cache"
tarball=$cache/debootstrap-bookworm-$kind.tar
if [ ! -f "$tarball" ]; then
  tmp=$(mktemp -d -p "$cache")
  debootstrap "${debootstrap_args[@]}" bookworm "$tmp/root" "$mirror" >/dev/null
  # The bigger roots without debootstrap's archives (the tests' minbase one keeps them).
  [ "$kind" = minbase ] || rm -f -- "${tmp:?}"/root/var/cache/apt/archives/*.deb
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

# The dpkg.log lines the root starts with (debootstrap's), left out of each run's.
dpkg_log_lines=$(tar -xOf "$tarball" ./var/log/dpkg.log | wc -l)
keep_logs() { # DIR: into RELEASE_UPGRADER_BENCH_LOGS when set
  if [ -n "${RELEASE_UPGRADER_BENCH_LOGS:-}" ]; then
    mkdir -p "$RELEASE_UPGRADER_BENCH_LOGS"
    cp -r "$1" "$RELEASE_UPGRADER_BENCH_LOGS/"
  fi
}

ours() {
  fresh "$work/ours"
  # An idea to measure before it is coded: apt options for our side only.
  if [ -n "${RELEASE_UPGRADER_BENCH_OURS_APT_CONF:-}" ]; then
    printf '%s\n' "$RELEASE_UPGRADER_BENCH_OURS_APT_CONF" >"$work/ours/etc/apt/apt.conf.d/99bench-ours"
  fi
  if [ "$kind" != minbase ]; then
    install -m 755 "$bin/release-upgrader" "$work/ours/usr/local/sbin/release-upgrader"
    install -m 644 "$work/key/keyring.gpg" "$work/ours/root/bench-keyring.gpg"
  fi
  local t0 t1
  t0=$(date +%s.%N)
  if [ "$kind" = minbase ]; then
    "$bin/release-upgrader" -q --root "$work/ours" --keyring "$work/key/keyring.gpg" \
      --meta-release-uri "$url/meta-release" upgrade -y -f noninteractive >"$work/ours.log" 2>&1 ||
      { cat "$work/ours.log" >&2; exit 1; }
  else
    # The bigger roots have statoverrides naming their own groups, which a --root run
    # refuses (dpkg would look them up on this machine): the tool runs inside, as it
    # says to.
    chroot "$work/ours" /usr/local/sbin/release-upgrader -q --keyring /root/bench-keyring.gpg \
      --meta-release-uri "$url/meta-release" upgrade -y -f noninteractive >"$work/ours.log" 2>&1 ||
      { cat "$work/ours.log" >&2; exit 1; }
  fi
  t1=$(date +%s.%N)
  check "$work/ours" ours
  echo "$t1 $t0" | awk '{print $1 - $2}' >>"$work/ours.t"
  local n logs
  n=$(wc -l <"$work/ours.t")
  logs=$work/logs/ours-$n
  mkdir -p "$logs"
  cp -r "$work/ours/var/log/dist-upgrade/." "$logs/"
  tail -n +$((dpkg_log_lines + 1)) "$work/ours/var/log/dpkg.log" >"$logs/dpkg.log.new"
  echo "total=$(tail -1 "$work/ours.t") $(awk -v side=ours -f benches/upgrade-phases.awk "$logs/main.log" "$logs/dpkg.log.new")" \
    >>"$work/ours.phases"
  keep_logs "$logs"
  release "$work/ours"
}
peer() {
  fresh "$work/peer"
  local t0 t1
  t0=$(date +%s.%N)
  sed -i 's/\bbookworm\b/trixie/g' "$work/peer/etc/apt/sources.list"
  # apt-get update && apt-get full-upgrade, as two chroots to time them apart.
  chroot "$work/peer" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 \
    apt-get -q=2 update >"$work/peer.log" 2>&1 || { cat "$work/peer.log" >&2; exit 1; }
  tu=$(date +%s.%N)
  chroot "$work/peer" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 \
    apt-get -q=2 -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold full-upgrade \
    >>"$work/peer.log" 2>&1 || { cat "$work/peer.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  check "$work/peer" peer
  echo "$t1 $t0" | awk '{print $1 - $2}' >>"$work/peer.t"
  local n logs
  n=$(wc -l <"$work/peer.t")
  [ -n "${warm_up:-}" ] && n=warm-up
  logs=$work/logs/peer-$n
  mkdir -p "$logs"
  cp "$work/peer.log" "$logs/apt-get.log"
  cp -r "$work/peer/var/log/apt/." "$logs/"
  tail -n +$((dpkg_log_lines + 1)) "$work/peer/var/log/dpkg.log" >"$logs/dpkg.log.new"
  echo "total=$(tail -1 "$work/peer.t") $(awk -v side=peer -v update="$(echo "$tu $t0" | awk '{print $1 - $2}')" \
    -v full="$(echo "$t1 $tu" | awk '{print $1 - $2}')" -f benches/upgrade-phases.awk "$logs/dpkg.log.new")" \
    >>"$work/peer.phases"
  keep_logs "$logs"
  release "$work/peer"
}

: >"$work/ours.t"; : >"$work/peer.t"; : >"$work/ours.phases"; : >"$work/peer.phases"
# The mirror may be a caching proxy: one unmeasured run fills its cache, so neither side
# pays for a cold one. Then the order alternates.
# RELEASE_UPGRADER_BENCH_WARM_UP=0 skips it (a run just before filled the cache).
if [ "${RELEASE_UPGRADER_BENCH_WARM_UP:-1}" != 0 ]; then
  warm_up=1 peer; : >"$work/peer.t"; : >"$work/peer.phases"
fi
for i in $(seq "$runs"); do
  if ((i % 2)); then ours; peer; else peer; ours; fi
done
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
o=$(median <"$work/ours.t"); p=$(median <"$work/peer.t")
printf 'upgrade 12 -> 13 (median of %d): release-upgrader %.1f s, apt-get update+full-upgrade %.1f s, ratio %.2f\n' \
  "$runs" "$o" "$p" "$(echo "$o $p" | awk '{print $1 / $2}')"
# Each run's NAME=SECONDS line, then the median of each name.
for side in ours peer; do
  echo "$kind $side:"
  awk '{print "  run " NR ": " $0}' "$work/$side.phases"
  awk '{for (i = 1; i <= NF; i++) { split($i, kv, "="); if (!(kv[1] in n)) order[++k] = kv[1]; v[kv[1], ++n[kv[1]]] = kv[2] } }
    END { line = "  median:"
      for (j = 1; j <= k; j++) { name = order[j]; c = n[name]
        for (a = 1; a <= c; a++) for (b = a + 1; b <= c; b++) if (v[name, b] + 0 < v[name, a] + 0) { t = v[name, a]; v[name, a] = v[name, b]; v[name, b] = t }
        line = line " " name "=" v[name, int((c + 1) / 2)] }
      print line }' "$work/$side.phases"
done
