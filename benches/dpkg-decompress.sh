#!/usr/bin/env bash
# What would taking decompression off dpkg's path save in a whole upgrade? To be asked
# before the upgrade rewrites archives (issue 18): dpkg unpacks every package through
# `dpkg-deb --fsys-tarfile`, which decodes data.tar.xz while dpkg writes the files, and
# an upgrade is one serial chain of dpkg runs, so at most one core works at a time.
#
# Times `apt-get full-upgrade` to Debian 13 of copies of a Debian 12 root (the upgrade
# bench's cached `server` root by default) from the same downloaded archives, twice per
# round in alternating order:
#   shipped  the archives as the mirror serves them (data.tar.xz)
#   raw      the same archives with data.tar decoded beforehand: a wrapper set as
#            apt's Dir::Bin::dpkg (on both sides) swaps each archive's path, or the
#            link to it in apt's --recursive directory, for its decoded copy; nothing
#            else differs, and the run fails unless dpkg read every copy
# and prints the medians, the ratio raw/shipped, the CPU time and how much of the two
# cores stayed idle (from /proc/stat): a bound on what decoding ahead of dpkg, on the
# idle core, could gain.
#
#   benches/dpkg-decompress.sh [RUNS] [minbase|server|desktop]   # default 3, server
#
# The archives are downloaded once per call from the Debian mirror of this machine's apt
# sources (or RELEASE_UPGRADER_DEBIAN_MIRROR). Needs root (chroot, mounts); runs in a
# private mount namespace, and a root is deleted only once nothing is mounted below it.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "benches/dpkg-decompress.sh needs root" >&2; exit 2; }
. "$(dirname "$0")/lib.sh"
in_private_mount_ns "$@"
cd "$(dirname "$0")/.."
runs=${1:-3}
kind=${2:-server}
cache=${RELEASE_UPGRADER_TEST_CACHE:-$HOME/.cache/release-upgrader-tests}
tarball=$cache/debootstrap-bookworm-$kind.tar
[ -f "$tarball" ] || { echo "no $tarball: run benches/upgrade.sh 1 $kind first" >&2; exit 2; }
mirror=$(debian_mirror) || exit 2

work=$(mktemp -d /var/tmp/release-upgrader-dpkg-decompress.XXXXXX)
mounted=()
unmount_all() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[i]}" || umount -l "${mounted[i]}"; done
  mounted=()
}
trap 'unmount_all; safe_rm_tree "${work:?}"' EXIT

# A bookworm root pointed at trixie, with its package lists, /proc, /sys and /dev.
fresh() { # DIR
  mkdir -p "$1"
  tar -C "$1" --numeric-owner -xpf "$tarball"
  # The minbase tarball keeps debootstrap's archives: only the upgrade's are measured.
  rm -f -- "${1:?}"/var/cache/apt/archives/*.deb "${1:?}"/etc/apt/sources.list.d/*
  echo "deb $mirror trixie main" >"$1/etc/apt/sources.list"
  printf '#!/bin/sh\nexit 101\n' >"$1/usr/sbin/policy-rc.d"
  chmod 755 "$1/usr/sbin/policy-rc.d"
  mount -t proc proc "$1/proc"; mounted+=("$1/proc")
  mount -t sysfs sysfs "$1/sys"; mounted+=("$1/sys")
  mount --bind /dev "$1/dev"; mounted+=("$1/dev")
  mount --bind /dev/pts "$1/dev/pts"; mounted+=("$1/dev/pts")
  chroot "$1" apt-get -q=2 update >/dev/null
}
release() { # DIR
  unmount_all
  safe_rm_tree "${1:?}"
}

# The archives, once, and their decoded copies.
fresh "$work/root"
chroot "$work/root" apt-get -q=2 -y -d full-upgrade >/dev/null
mkdir -p "$work/shipped" "$work/raw" "$work/x"
cp "$work/root"/var/cache/apt/archives/*.deb "$work/shipped/"
release "$work/root"
for deb in "$work"/shipped/*.deb; do
  rm -f -- "${work:?}"/x/*
  (cd "$work/x" && ar x "$deb")
  data=$(cd "$work/x" && ls data.tar*)
  case $data in
    data.tar.xz) xz -d "$work/x/$data" ;;
    data.tar.zst) zstd -q -d --rm "$work/x/$data" ;;
    data.tar.gz) gzip -d "$work/x/$data" ;;
    data.tar) ;;
    *) echo "$deb: unexpected member $data" >&2; exit 1 ;;
  esac
  (cd "$work/x" && ar rc "$work/raw/$(basename "$deb")" debian-binary control.tar.* data.tar)
done
n=$(compgen -G "$work/shipped/*.deb" | wc -l)
echo "$n archives: $(du -sm "$work/shipped" | cut -f1) MB shipped, $(du -sm "$work/raw" | cut -f1) MB with data.tar decoded"

# CPU jiffies (user+nice+system+irq+softirq, then idle+iowait) from /proc/stat.
cpu() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; }

run() { # shipped|raw
  local d=$work/root-$1 t0 t1 c0 c1
  fresh "$d"
  cp "$work"/shipped/*.deb "$d/var/cache/apt/archives/"
  if [ "$1" = raw ]; then
    mkdir -p "$d/var/tmp/raw"
    cp "$work"/raw/*.deb "$d/var/tmp/raw/"
  fi
  # Both sides run dpkg through the wrapper, so both pay for its start; it swaps paths
  # only when the decoded copies are there.
  cat >"$d/usr/local/sbin/dpkg-raw" <<'EOF'
#!/bin/bash
[ -d /var/tmp/raw ] || exec /usr/bin/dpkg "$@"
args=()
for a in "$@"; do
  case $a in
    /var/cache/apt/archives/*.deb)
      args+=("/var/tmp/raw/${a#/var/cache/apt/archives/}")
      echo "$a" >>/var/tmp/raw/swapped ;;
    /tmp/apt-dpkg-install-*)
      # apt's --recursive directory, when the archives would not fit a command line:
      # symbolic links to them, pointed at the decoded copies instead.
      for link in "$a"/*; do
        target=$(readlink "$link")
        case $target in
          /var/cache/apt/archives/*.deb)
            ln -sfn "/var/tmp/raw/${target#/var/cache/apt/archives/}" "$link"
            echo "$target" >>/var/tmp/raw/swapped ;;
        esac
      done
      args+=("$a") ;;
    *) args+=("$a") ;;
  esac
done
exec /usr/bin/dpkg "${args[@]}"
EOF
  chmod 755 "$d/usr/local/sbin/dpkg-raw"
  sync
  c0=$(cpu); t0=$(date +%s.%N)
  chroot "$d" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 apt-get -q=2 -y \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o Dir::Bin::dpkg=/usr/local/sbin/dpkg-raw full-upgrade \
    >"$work/$1.log" 2>&1 || { tail "$work/$1.log" >&2; exit 1; }
  t1=$(date +%s.%N); c1=$(cpu)
  grep -q '^13\.' "$d/etc/debian_version" || { echo "$1: not upgraded" >&2; exit 1; }
  if [ "$1" = raw ]; then
    # Every archive dpkg unpacked came from the decoded copies, or the run measured nothing.
    local swapped
    swapped=$(sort -u "$d/var/tmp/raw/swapped" 2>/dev/null | wc -l)
    [ "$swapped" -eq "$n" ] || { echo "raw: dpkg read $swapped of the $n decoded archives" >&2; exit 1; }
  fi
  echo "$t0 $t1 $c0 $c1" | awk -v hz="$(getconf CLK_TCK)" '{busy = $5 - $3; idle = $6 - $4
    printf "%.2f %.2f %.3f\n", $2 - $1, busy / hz, idle / (busy + idle)}' >>"$work/$1.t"
  release "$d"
}
: >"$work/shipped.t"; : >"$work/raw.t"
for i in $(seq "$runs"); do
  if ((i % 2)); then run shipped; run raw; else run raw; run shipped; fi
done
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for v in shipped raw; do
  printf '%-8s' "$v"
  awk '{printf " %s s (cpu %s s, idle %.0f %%)", $1, $2, $3 * 100} END {print ""}' "$work/$v.t"
done
s=$(cut -d' ' -f1 "$work/shipped.t" | median); r=$(cut -d' ' -f1 "$work/raw.t" | median)
printf 'full-upgrade of %s from the same %d archives (median of %d): shipped %.2f s, decoded %.2f s, ratio %.3f\n' \
  "$kind" "$n" "$runs" "$s" "$r" "$(echo "$r $s" | awk '{print $1 / $2}')"
