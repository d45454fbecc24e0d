#!/usr/bin/env bash
# Image deltas on real Debian root trees (benches/image-trees.sh makes them, once):
#
#   add-only   12 minbase -> 12 minbase + hello + less
#   updates    12 minbase -> 12 minbase with its updated packages unpacked over it
#              (changes existing files only)
#   12-13      12 minbase -> 13 minbase
#
# For each pair, in one run: the size of the `delta` (system-
# image's file-level delta, xz -9) and of the `zdelta` (ours: zstd -19 --long, changed
# files as --patch-from frames); generation wall time and peak RSS (/usr/bin/time -v) of
# both; and the apply time of the anchor's method (delete `removed` with one rm, then
# tar -xJf as root) against the device's own apply (the code `image apply` runs, through
# benches/image_apply.rs --apply: digest re-check, staged overlay beside the tree,
# patches and `.gz` rebuilds on worker threads, verification, sync, commit by renames)
# of the zdelta (apply-z) and of the delta itself (dev-d, the compatible type), with the
# larger peak RSS of the two (rss-dev, MB). Every
# result is checked against the target tree. Ratios: zdelta / delta (size, apply time),
# the device's delta apply / the anchor's, delta / full (size).
# KEEP=1 keeps the work directory.
#
#   benches/image.sh                 # all pairs
#   PAIRS="add-only updates" benches/image.sh
#   BENCH_DIR=/var/tmp benches/image.sh
#
# Not part of `cargo test`. Needs root (owners, devices), GNU tar, xz, zstd.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

cache="${RELEASE_UPGRADER_TEST_CACHE:-$HOME/.cache/release-upgrader-tests}"
benches/image-trees.sh >/dev/null
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }

cargo build --release --quiet --bin release-upgrader-publish
ours=$PWD/target/release/release-upgrader-publish
client=$(cargo bench --quiet --bench image_apply --no-run --message-format=json 2>/dev/null |
  grep '"kind":\["bench"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
[ -x "$client" ] || { echo "could not build benches/image_apply.rs" >&2; exit 1; }
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

# In memory by default (about 1 GB for 12 -> 13): on ext4, creating thousands of files
# right after the previous run's copy was deleted makes inode allocation search past
# recently deleted inodes (60 s and more), which weighs on whichever side creates more.
work=$(mktemp -d "${BENCH_DIR:-/dev/shm}/release-upgrader-image-bench.XXXXXX")
# KEEP=1 keeps the trees and deltas (named on stderr) for a closer look.
trap '[ "${KEEP:-0}" = 1 ] && echo "kept $work" >&2 || safe_rm_tree "${work:?}"' EXIT
declare -A base target
base[add-only]=$cache/debootstrap-bookworm-minbase.tar
target[add-only]=$cache/bookworm-minbase-plus.tar
base[updates]=$cache/debootstrap-bookworm-minbase.tar
target[updates]=$cache/bookworm-minbase-updated.tar
base[12-13]=$cache/debootstrap-bookworm-minbase.tar
target[12-13]=$cache/debootstrap-trixie-minbase.tar
pairs=${PAIRS:-"add-only updates 12-13"}

# The trees, unpacked once per run; deltas are made from the directories (the same
# delta as from their full images: both are read in image order). FULL=1 also builds the
# target's full image (xz -9, slow) for the delta/full ratio.
root() { # TARBALL -> directory (the `system` directory of a tree, for `image expand --base`)
  local dir
  dir="$work/roots/$(basename "$1" .tar)/system"
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    # What an image holds: no apt lists, no cached .debs (as `apt-get clean` and an
    # image build leave it). LISTS=1 keeps them.
    if [ "${LISTS:-0}" = 1 ]; then
      tar -C "$dir" --numeric-owner -xpf "$1"
    else
      tar -C "$dir" --numeric-owner -xpf "$1" --wildcards \
        --exclude='./var/lib/apt/lists/*_*' --exclude='./var/cache/apt/archives/*.deb' \
        --exclude='./var/cache/apt/*.bin'
    fi
  fi
  echo "$dir"
}

# Runs "$@" under /usr/bin/time; prints "<seconds> <peak RSS KiB>".
measure() {
  local log="$work/time.log"
  /usr/bin/time -v -o "$log" "$@" >/dev/null
  awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i] }
              /Maximum resident set size/ { rss = $2 } END { printf "%.2f %d\n", s, rss }' "$log"
}

# Seconds of wall clock of "$@".
seconds() {
  local start end
  start=$(date +%s%N)
  "$@" >/dev/null || { echo "failed: $*" >&2; kill $$; exit 1; }
  end=$(date +%s%N)
  awk -v ns=$((end - start)) 'BEGIN { printf "%.3f\n", ns / 1e9 }'
}

remove_listed() { # DECOMPRESSOR DELTA DEST
  # tar stops after the first member; the decompressor then gets SIGPIPE. One rm for all
  # (one per path would cost the anchor seconds: 1,598 paths on 12 -> 13).
  { "$1" -dc "$2" || true; } | tar -xO --occurrence=1 removed | grep -v '^$' |
    sed "s|^|${3:?}/|" | xargs -r -d '\n' rm -rf --
}
apply_anchor() { # DELTA DEST
  remove_listed xz "$1" "$2"
  tar -x --same-owner --numeric-owner -p --anchored --exclude=removed -Jf "$1" -C "$2"
}
apply_device() { # DELTA|ZDELTA DEST: the device's own apply (benches/image_apply.rs --apply:
  # digest re-check, staged overlay, patches on worker threads, verification, sync, commit)
  # and its peak RSS (KiB) in $work/apply.rss
  /usr/bin/time -f %M -o "$work/apply.rss" "$client" --apply "$2/system" "$2/.staging" 2 "$1"
}
fresh() { # TREE DEST: DEST/system is a copy of TREE
  safe_rm_tree "${2:?}"; mkdir -p "$2"
  cp -a "$1" "$2/system"
  # The anchor's apply deletes the delta's `removed` paths below it with a plain rm.
  assert_no_mounts_below "$2"
}
tree_digest() { # DIR: content, modes, owners, links, mtimes of every path below it (not
  # the size of directories: the file system's, it stays large after entries are deleted;
  # not DIR's own metadata, nor the paths the device's apply never touches, its
  # PRESERVED list in src/image/overlay.rs: mount points and state)
  local skip=(\( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run -o -path ./userdata
    -o -path ./cache -o -path ./lost+found -o -path ./var/lib/release-upgrader \) -prune -o)
  (cd "$1" && find . -mindepth 1 "${skip[@]}" \( -type d -printf '%p %y %m %U:%G %T@\n' \) -o -printf '%p %y %m %U:%G %T@ %l %s %n\n' |
    LC_ALL=C sort &&
    find . -mindepth 1 "${skip[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}

printf '%-9s %10s %10s %10s %7s %7s | %7s %7s %8s %8s | %7s %7s %6s %7s %6s %7s\n' \
  pair full delta zdelta d/full z/d "gen-d s" "gen-z s" "rss-d MB" "rss-z MB" "apply-d" "apply-z" "z/d" "dev-d" "dev/d" "rss-dev"
for pair in $pairs; do
  b=$(root "${base[$pair]}")
  t=$(root "${target[$pair]}")
  d="$work/$pair.delta.tar.xz"
  z="$work/$pair.zdelta.tar.zst"
  read -r gen_d rss_d < <(measure "$ours" -q image delta "$b" "$t" --out "$d")
  read -r gen_z rss_z < <(measure "$ours" -q image delta --zdelta "$b" "$t" --out "$z")
  ds=$(stat -c %s "$d"); zs=$(stat -c %s "$z")
  full=0
  if [ "${FULL:-0}" = 1 ]; then
    "$ours" -q image build --root "$t" --out "$work/full-$pair" >/dev/null
    full=$(stat -c %s "$work/full-$pair/rootfs.tar.xz")
  fi

  # Apply times: the median of RUNS (default 5) runs each, alternating, from a fresh
  # copy of the base tree (the machine is shared: single runs are noisy).
  ta=(); tz=(); tc=(); rss_apply=0
  for _ in $(seq "${RUNS:-5}"); do
    fresh "$b" "$work/apply-d"; sync
    ta+=("$(seconds apply_anchor "$d" "$work/apply-d")")
    # The device's apply of the zdelta, then of the delta (the compatible type).
    for kind in z c; do
      [ "$kind" = z ] && file=$z || file=$d
      fresh "$b" "$work/apply-$kind"
      # What the device's apply checks the result against; removed again before
      # comparing, with /etc's mtime as it was (before: the base's; after: what the
      # apply made it).
      etc=$work/apply-$kind/system/etc
      mkdir "$etc/system-image"
      printf '[service]\nbuild_number: 2\n' >"$etc/system-image/channel.ini"
      touch -r "$b/etc" "$etc"
      sync
      secs=$(seconds apply_device "$file" "$work/apply-$kind")
      [ "$kind" = z ] && tz+=("$secs") || tc+=("$secs")
      rss=$(tail -n1 "$work/apply.rss")
      [ "$rss" -gt "$rss_apply" ] && rss_apply=$rss
      touch -r "$etc" "$work/etc.mtime"
      rm -r -- "${etc:?}/system-image"
      touch -r "$work/etc.mtime" "$etc"
    done
  done
  apply_d=$(printf '%s\n' "${ta[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  apply_z=$(printf '%s\n' "${tz[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  apply_c=$(printf '%s\n' "${tc[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  want=$(tree_digest "$t")
  ok="same tree"
  [ "$(tree_digest "$work/apply-d/system")" = "$want" ] || ok="DELTA TREE DIFFERS"
  [ "$(tree_digest "$work/apply-z/system")" = "$want" ] || ok="$ok; ZDELTA TREE DIFFERS"
  [ "$(tree_digest "$work/apply-c/system")" = "$want" ] || ok="$ok; DEVICE DELTA TREE DIFFERS"
  [ "${KEEP:-0}" = 1 ] || safe_rm_tree "${work:?}/apply-d" "${work:?}/apply-z" "${work:?}/apply-c" "${work:?}/full-$pair"

  printf '%-9s %10d %10d %10d %7.3f %7.3f | %7.2f %7.2f %8.0f %8.0f | %7.2f %7.2f %6.3f %7.2f %6.3f %7.0f  %s\n' \
    "$pair" "$full" "$ds" "$zs" "$(echo "if ($full > 0) $ds / $full else 0" | bc -l)" "$(echo "$zs / $ds" | bc -l)" \
    "$gen_d" "$gen_z" "$(echo "$rss_d / 1024" | bc -l)" "$(echo "$rss_z / 1024" | bc -l)" \
    "$apply_d" "$apply_z" "$(echo "$apply_z / $apply_d" | bc -l)" \
    "$apply_c" "$(echo "$apply_c / $apply_d" | bc -l)" "$(echo "$rss_apply / 1024" | bc -l)" "$ok"
done
