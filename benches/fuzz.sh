#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of untrusted input (fuzz/, cargo-fuzz on the
# stable toolchain with RUSTC_BOOTSTRAP=1): builds the targets, runs each in turn (one
# fuzzing process at a time, nice 19), and prints a table: target, execs, exec/s,
# coverage (edges, features), corpus size, crashes.
#
#   benches/fuzz.sh                   # the campaign: each target up to 10M execs or 600 s
#   benches/fuzz.sh 120               # each target up to 10M execs or 120 s
#   benches/fuzz.sh 120 ini deb       # only these targets
#   benches/fuzz.sh --smoke           # each target ~10 s from its seeds; exit 1 on a crash
#   RUNS=50000000 benches/fuzz.sh 3600 zdelta
#   FUZZ_LOGS=/tmp/logs benches/fuzz.sh   # keep each target's libFuzzer log
#
# Corpora: each run starts from fuzz/seeds/<target> (committed, made by fuzz/seed.sh) and
# fuzz/corpus/<target> (grown by earlier runs, never committed; --smoke uses a temporary
# one). Crashes, OOMs and timeouts are written to fuzz/artifacts/<target>/; reproduce one
# with `fuzz/target/x86_64-unknown-linux-gnu/release/<target> <file>`, minimise it with
# `... -minimize_crash=1 -runs=100000 <file>`.
#
# Build: release with debug assertions and overflow checks (-O -a: an overflow on hostile
# input is a finding even where release builds would wrap), no sanitizer (-s none: the
# crate forbids unsafe code and the C decoders are not instrumented by cargo-fuzz's ASan
# anyway, which would halve the exec rate). Installs cargo-fuzz if it is missing.
# Not part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

smoke=0
seconds=600
case "${1:-}" in
  --smoke) smoke=1; seconds=${SMOKE_SECONDS:-10}; shift ;;
  '' ) ;;
  *[!0-9]*) echo "usage: benches/fuzz.sh [SECONDS_PER_TARGET|--smoke] [TARGET...]" >&2; exit 2 ;;
  *) seconds=$1; shift ;;
esac
runs=${RUNS:-10000000}
[ "$smoke" = 1 ] && runs=${RUNS:--1}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

start=$(date +%s)
(cd fuzz && RUSTC_BOOTSTRAP=1 nice cargo fuzz build -O -a -s none)
built=$(date +%s)
bin_dir=$repo/fuzz/target/x86_64-unknown-linux-gnu/release

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(ls fuzz/fuzz_targets | sed -n 's/\.rs$//p')
fi

# Inputs larger than this are never generated: archives and patches need room, text
# and JSON documents do not.
max_len() {
  case "$1" in
    deb|deb_tar|compress|image_tar|zdelta|keyring|gztokens) echo 65536 ;;
    openpgp_*) echo 16384 ;;
    *) echo 8192 ;;
  esac
}

tmp=$(mktemp -d)
trap 'rm -rf "${tmp:?}"' EXIT
mkdir -p fuzz/artifacts
failed=0
rows=()
for t in "${targets[@]}"; do
  [ -x "$bin_dir/$t" ] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
  if [ "$smoke" = 1 ]; then
    corpus=$tmp/corpus-$t
  else
    corpus=fuzz/corpus/$t
  fi
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  args=(
    "-max_total_time=$seconds" "-runs=$runs" "-max_len=$(max_len "$t")"
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
    "-artifact_prefix=fuzz/artifacts/$t/"
  )
  [ -f "fuzz/dict/$t.dict" ] && args+=("-dict=fuzz/dict/$t.dict")
  log=$tmp/$t.log
  echo "fuzz.sh: $t (${seconds} s, up to $runs runs)" >&2
  set +e
  nice -n 19 "$bin_dir/$t" "${args[@]}" "$corpus" "fuzz/seeds/$t" >"$log" 2>&1
  status=$?
  set -e
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n1; }
  execs=$(stat number_of_executed_units)
  rate=$(stat average_exec_per_sec)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  [ -n "${FUZZ_LOGS:-}" ] && mkdir -p "$FUZZ_LOGS" && cp "$log" "$FUZZ_LOGS/$t.log"
  after=$(find "fuzz/artifacts/$t" -type f | wc -l)
  crashes=$((after - before))
  if [ "$status" != 0 ] && [ "$crashes" = 0 ]; then crashes=1; fi
  if [ "$crashes" != 0 ]; then
    failed=1
    cp "$log" "fuzz/artifacts/$t/last-run.log"
    echo "fuzz.sh: $t: crash (exit $status), see fuzz/artifacts/$t/" >&2
    grep -m3 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" >&2 || true
  fi
  rows+=("$(printf '%-20s %12s %9s %7s %8s %7s %8s' "$t" "${execs:-?}" "${rate:-?}" \
    "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes")")
done
end=$(date +%s)

printf '%-20s %12s %9s %7s %8s %7s %8s\n' target execs exec/s cov ft corpus crashes
printf '%s\n' "${rows[@]}"
echo "build $((built - start)) s, fuzzing $((end - built)) s, total $((end - start)) s"
exit "$failed"
