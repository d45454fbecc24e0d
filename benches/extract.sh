#!/usr/bin/env bash
# Times our .deb extraction (release-upgrader-publish deb extract, release build) against
# dpkg-deb -x on the real packages scripts/setup caches, and reports our peak RSS.
#
#   benches/extract.sh                 # 5 runs per package, in a tmpfs when there is one
#   RUNS=9 BENCH_DIR=/var/tmp benches/extract.sh
#
# Each figure is the median of RUNS wall-clock times, extracting into an empty directory
# that is removed between runs. The largest package is also repacked with gzip and zstd
# data members ("+gz", "+zst"). The ratio is ours / dpkg-deb (below 1: we are faster);
# the overall ratio is the sum of our medians over the sum of dpkg-deb's. Peak RSS is
# /usr/bin/time's maximum resident set size of our process. Not part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

runs=${RUNS:-5}
cache="${RELEASE_UPGRADER_TEST_CACHE:-$HOME/.cache/release-upgrader-tests}/debs"
if ! compgen -G "$cache/*.deb" >/dev/null; then
  echo "benches/extract.sh: no packages in $cache; run scripts/setup first" >&2
  exit 1
fi
command -v /usr/bin/time >/dev/null || { echo "benches/extract.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 1; }

cargo build --release --quiet --bin release-upgrader-publish
ours=target/release/release-upgrader-publish

base=${BENCH_DIR:-}
if [ -z "$base" ]; then
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then base=/dev/shm; else base=${TMPDIR:-/tmp}; fi
fi
work=$(mktemp -d "$base/release-upgrader-bench.XXXXXX")
trap 'safe_rm_tree "${work:?}"' EXIT

# Prints the wall-clock seconds of one run of "$@".
seconds() {
  local start end
  start=$(date +%s%N)
  "$@" >/dev/null
  end=$(date +%s%N)
  awk -v ns=$((end - start)) 'BEGIN { printf "%.4f\n", ns / 1e9 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# The largest package again with a gzip and a zstd data member, to show that memory
# stays flat with the streaming decoders (xz's parallel decoder holds whole blocks, up
# to a fixed limit) and to time the other decompressors.
largest=$(ls -S "$cache"/*.deb | head -n1)
(
  mkdir "$work/repack" && cd "$work/repack"
  ar x "$largest"
  data=$(ls data.tar.*)
  case "$data" in
    data.tar.xz) xz -dc "$data" >data.tar ;;
    data.tar.gz) gzip -dc "$data" >data.tar ;;
    data.tar.zst) zstd -qdc "$data" >data.tar ;;
    *) exit 0 ;;
  esac
  control=$(ls control.tar*)
  gzip -6 -c data.tar >data.tar.gz
  zstd -q -3 -T0 -c data.tar >data.tar.zst
  name=$(basename "$largest" .deb)
  ar rc "$work/$name+gz.deb" debian-binary "$control" data.tar.gz
  ar rc "$work/$name+zst.deb" debian-binary "$control" data.tar.zst
)
safe_rm_tree "${work:?}/repack"
repacked=()
for deb in "$work"/*+gz.deb "$work"/*+zst.deb; do
  if [ -e "$deb" ]; then repacked+=("$deb"); fi
done

printf '%-44s %9s %9s %7s %9s %10s\n' package MB ours_s dpkg_s ratio ours_RSS_KB
total_ours=0
total_dpkg=0
for deb in "$cache"/*.deb "${repacked[@]}"; do
  name=$(basename "$deb")
  size=$(stat -c %s "$deb")
  ours_times=()
  dpkg_times=()
  for _ in $(seq "$runs"); do
    safe_rm_tree "${work:?}/out"
    ours_times+=("$(seconds "$ours" deb extract "$deb" "$work/out")")
    safe_rm_tree "${work:?}/out"
    dpkg_times+=("$(seconds dpkg-deb -x "$deb" "$work/out")")
  done
  safe_rm_tree "${work:?}/out"
  rss=$( { /usr/bin/time -f '%M' "$ours" deb extract "$deb" "$work/out" >/dev/null; } 2>&1 | tail -n1)
  safe_rm_tree "${work:?}/out"
  o=$(printf '%s\n' "${ours_times[@]}" | median)
  d=$(printf '%s\n' "${dpkg_times[@]}" | median)
  total_ours=$(awk -v a="$total_ours" -v b="$o" 'BEGIN { print a + b }')
  total_dpkg=$(awk -v a="$total_dpkg" -v b="$d" 'BEGIN { print a + b }')
  awk -v n="$name" -v s="$size" -v o="$o" -v d="$d" -v r="$rss" \
    'BEGIN { printf "%-44s %9.1f %9.3f %9.3f %7.2f %10d\n", n, s / 1e6, o, d, o / d, r }'
done
awk -v o="$total_ours" -v d="$total_dpkg" -v r="$runs" -v w="$base" -v c="$(nproc)" \
  'BEGIN { printf "overall: ours %.3f s, dpkg-deb %.3f s, ratio %.2f (median of %d runs, in %s, %d cores)\n", o, d, o / d, r, w, c }'
