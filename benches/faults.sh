#!/usr/bin/env bash
# The fault campaign: the client's three flows, each under faults, and what they left.
#
#   bootstrap   `bootstrap --no-reexec` of the demo's helpers, relabelled as a new set B,
#               into a root with no helpers or with the demo's set A installed
#   upgrade     `upgrade -y -f noninteractive` of the demo's Demo Linux 1 root to 2
#   image       `image apply` of build 1 -> 2 through a (z)delta, with and without the
#               files already downloaded
#   image-full  the same through a full image (a channel whose build 2 has no delta)
#
# Fixtures are what the repository makes: `release-upgrader demo --keep` (signed archive,
# helper pocket, meta-release; re-signed here for this run's server) and
# `release-upgrader-publish image …` (keyrings, builds, deltas, index). Everything is
# served by benches/faultserver.py on 127.0.0.1 and happens in a temporary directory
# (/dev/shm, or FAULTS_DIR) inside a private mount namespace; each trial runs in a PID
# and mount namespace of its own (whatever it leaves running dies with it), bounded in
# time. Needs root (mounts, chattr, dpkg into the demo root), strace, python3.
#
# Faults (KIND):
#   sigkill-tool  SIGKILL of the release-upgrader process alone at a random time
#   sigkill-tree  SIGKILL of it and every process below it at a random time
#   enospc        the root is a tmpfs of a random size between what it holds and what
#                 the flow needs
#   eio, eperm    strace injects the error into the N-th call of one syscall on one
#                 path the flow writes (taken from a traced clean run)
#   immutable     chattr +i on one file or directory the flow changes (a real EPERM)
#   drop, reset, stall, slow, status, redirect-loop
#                 the server misbehaves on one path the flow requests (once, twice or
#                 always): closes mid-body, closes before answering, stops sending,
#                 trickles, answers 500/503, redirects to itself forever
#
# Each trial: a fresh root (with user data planted: /userdata/x, /var/lib/demo-data,
# and for the apt flows /etc/demo.conf with the user's edit), the faulted run, the fault
# lifted (server fixed, chattr -i, tmpfs grown), then the same command again. The end
# state is then
#   recovered  fully old or fully new: bootstrap, usr/lib and the manifests equal one
#              helper set's exactly and agree with each other; image, the tree equals
#              build 1 or 2 (content, modes, owners, links, file mtimes) and channel.ini
#              says that build; upgrade, dpkg --audit clean, every package of one
#              release and every source on that release
#   mixed      anything else
#   lost       a planted user data file missing or changed, after either run
# and one line per flow and fault is printed:
#   <flow> <kind>: tried N recovered R mixed M lost L
# with, for the faults that do not kill the client, how many of those trials the faulted
# run itself (which failed or succeeded on its own) left neither old nor new.
# then the totals. A log (/tmp/release-upgrader-faults-SEED.log, or --log FILE) gets
# one line per trial: its parameters, both exit codes, the state after the faulted run
# (post) and after the second run (end). A trial whose fault never happened (the run
# ended before the kill, the injected call was never made, the tmpfs was large enough,
# the path was never requested) is logged but not counted; up to 3 tries a trial.
#
# Usage: benches/faults.sh [--smoke] [--flows "bootstrap upgrade image image-full"]
#            [--kinds "..."] [--kill-trials N] [--trials N] [--seed N] [--log FILE]
#            [--keep] [--strict]
#   --smoke          a handful of quick trials (one per fault that ends fast), < 2 min
#   --kill-trials N  trials per flow of each sigkill kind (default 100: 200 per flow)
#   --trials N       trials per flow of every other kind (default 10)
#   --keep           keep the work directory, with the trials that did not recover
#   --strict         exit 1 when any trial ended mixed or lost
set -euo pipefail
bench=$(cd "$(dirname "$0")" && pwd)
. "$bench/lib.sh"

py=/usr/bin/python3
[ -x "$py" ] || py=python3
state() { "$py" "$bench/faults_state.py" "$@"; }

# --- randomness (bash's RANDOM, seeded) -----------------------------------------------
rand() { echo $(((RANDOM << 15 | RANDOM) % $1)); }  # 0 <= n < $1
rand_ms() { echo $(((RANDOM << 15 | RANDOM) % ($1 + 1))); } # 0 <= n <= $1
pick() { # one line of a file, at random
  local n
  n=$(wc -l <"$1")
  [ "$n" -gt 0 ] || return 1
  sed -n "$(($(rand "$n") + 1))p" "$1"
}

# --- processes ------------------------------------------------------------------------
# SIGKILL of PID and everything below it: each is stopped first, so none forks away.
kill_tree() {
  local top=$1 changed=1 d p line rest ppid
  local -A tree=([$top]=1)
  kill -STOP "$top" 2>/dev/null || true
  while ((changed)); do
    changed=0
    for d in /proc/[0-9]*; do
      p=${d#/proc/}
      [ -n "${tree[$p]:-}" ] && continue
      { read -r line <"$d/stat"; } 2>/dev/null || continue
      rest=${line##*) }
      read -r _ ppid _ <<<"$rest"
      if [ -n "${tree[$ppid]:-}" ]; then
        tree[$p]=1
        kill -STOP "$p" 2>/dev/null || true
        changed=1
      fi
    done
  done
  kill -KILL "${!tree[@]}" 2>/dev/null || true
}

# The command of a flow against ROOT, in the array `cmd`.
flow_cmd() { # FLOW ROOT
  local common=(--root "$2" --retries 2 --timeout 5)
  case $1 in
  bootstrap)
    cmd=("$BIN" "${common[@]}" --keyring "$FX/demo/key/keyring.gpg" --meta-release-uri "$URL/b/meta-release"
      --arch amd64 bootstrap --no-reexec) ;;
  upgrade)
    cmd=("$BIN" "${common[@]}" --keyring "$FX/demo/key/keyring.gpg" --meta-release-uri "$URL/meta-release"
      --arch amd64 upgrade -y -f noninteractive --lock-timeout 10) ;;
  image) cmd=("$BIN" "${common[@]}" image apply) ;;
  image-full) cmd=("$BIN" "${common[@]}" image apply --channel full) ;;
  esac
}
variants() {
  if [ "$smoke" = 1 ]; then
    case $1 in bootstrap) echo a ;; upgrade) echo alpha ;; *) echo fresh ;; esac
  else
    case $1 in bootstrap) echo "none a" ;; upgrade) echo alpha ;; *) echo "fresh cached" ;; esac
  fi
}
wants() { [[ " $flows " == *" $1 "* ]]; } # FLOW: is it in this run?
classifier() { case $1 in image*) echo image ;; *) echo "$1" ;; esac; }
run_timeout() { case $1 in upgrade) echo 120 ;; *) echo 60 ;; esac; }

export LC_ALL=C.UTF-8 SERVER_LOG RELEASE_UPGRADER_RETRY_DELAY_MS=100
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY

# ======================================================================================
# One trial, inside its own PID and mount namespace (this shell is PID 1 there):
#   faults.sh __trial FLOW VARIANT KIND DIR PARAM...
# writes DIR/result: "CLASS post=STATE end=STATE rc=A/B ..." and DIR/*.log.
# ======================================================================================
trial() {
  local flow=$1 variant=$2 kind=$3 dir=$4
  shift 4
  local root=$dir/root template=$FX/templates/$flow-$variant refs=$FX/refs/$flow-$variant
  local timeout_s note="" rc1 rc2 post end ud1 ud2 class
  timeout_s=$(run_timeout "$flow")
  mkdir -p "$root"
  case $kind in
  enospc)
    note="size=${1}k"
    mount -t tmpfs -o "size=${1}k,mode=755" tmpfs "$root" ;;
  esac
  cp -a "$template/root/." "$root/" 2>"$dir/copy.log" || { echo "setup-failed $(head -c 200 "$dir/copy.log")" >"$dir/result"; return; }
  flow_cmd "$flow" "$root"
  local run=("${cmd[@]}")
  case $kind in
  immutable)
    note="chattr +i $1"
    chattr +i "$root/$1" ;;
  eio | eperm)
    local err=EIO target=$root/$1
    [ "$kind" = eperm ] && err=EPERM
    [ "$1" = . ] && target=$root
    note="inject $2 $err when=$3 on $1"
    run=(strace -f -qq -e signal=none -y -o "$dir/strace.log" --seccomp-bpf -P "$target"
      -e "trace=$2" -e "inject=$2:error=$err:when=$3" -- "${cmd[@]}") ;;
  drop | reset | stall | slow | status | redirect-loop)
    note="server $kind on ${1} times=$2"
    local extra=""
    case $kind in
    drop) extra=", \"after\": $3" ;;
    stall) extra=", \"after\": $3, \"seconds\": 30" ;;
    slow) extra=", \"chunk\": 65536, \"delay\": 0.05" ;;
    status) extra=", \"code\": $3" ;;
    esac
    printf '[{"match": "%s", "kind": "%s", "times": %s%s}]\n' "$1" "$kind" "$2" "$extra" >"$FAULTS.tmp"
    mv "$FAULTS.tmp" "$FAULTS" ;;
  sigkill-*) note="at ${1}ms" ;;
  esac

  # The faulted run.
  local served_before
  served_before=$(wc -l <"$SERVER_LOG")
  "${run[@]}" >"$dir/run1.log" 2>&1 </dev/null &
  local pid=$! wd
  (
    sleep "$timeout_s"
    echo timeout >"$dir/timeout1"
    kill_tree "$pid"
  ) &
  wd=$!
  case $kind in
  sigkill-tool | sigkill-tree)
    sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"
    if kill -0 "$pid" 2>/dev/null; then
      if [ "$kind" = sigkill-tool ]; then kill -KILL "$pid"; else kill_tree "$pid"; fi
      note="$note killed"
    else
      note="$note (already done)"
    fi ;;
  esac
  rc1=0
  wait "$pid" || rc1=$?
  kill_tree "$wd"
  [ -e "$dir/timeout1" ] && note="$note run1-timeout"
  # Whether the fault happened at all (a trial where it did not is not counted).
  local skip=""
  case $kind in
  sigkill-*) [[ $note == *"already done"* ]] && skip="the run ended before the kill" ;;
  eio | eperm) grep -q INJECTED "$dir/strace.log" 2>/dev/null || skip="the call was never made" ;;
  enospc) [ "$rc1" = 0 ] && skip="the file system was large enough" ;;
  drop | reset | stall | slow | status | redirect-loop)
    tail -n "+$((served_before + 1))" "$SERVER_LOG" | awk -v k="$kind" '$4 == k { found = 1 } END { exit !found }' ||
      skip="the path was never requested" ;;
  esac

  # The fault lifted.
  case $kind in
  enospc) mount -o remount,size=4g "$root" ;;
  immutable) chattr -i "$root/$1" ;;
  drop | reset | stall | slow | status | redirect-loop)
    echo '[]' >"$FAULTS.tmp" && mv "$FAULTS.tmp" "$FAULTS" ;;
  esac
  post=$(state classify "$(classifier "$flow")" "$root" "$refs")
  ud1=$(state userdata "$root" "$template/userdata.json")

  # The same command again.
  flow_cmd "$flow" "$root"
  "${cmd[@]}" >"$dir/run2.log" 2>&1 </dev/null &
  pid=$!
  (
    sleep "$timeout_s"
    echo timeout >"$dir/timeout2"
    kill_tree "$pid"
  ) &
  wd=$!
  rc2=0
  wait "$pid" || rc2=$?
  kill_tree "$wd"
  [ -e "$dir/timeout2" ] && note="$note run2-timeout"
  end=$(state classify "$(classifier "$flow")" "$root" "$refs")
  ud2=$(state userdata "$root" "$template/userdata.json")

  # Whatever is still running here (an orphan of the killed run, say).
  local p comm left=""
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = 1 ] && continue
    { read -r comm <"/proc/$p/comm"; } 2>/dev/null || continue
    left="$left,$comm"
  done
  [ -n "$left" ] && note="$note left-running=${left#,}"

  if [ "$ud1" != ok ] || [ "$ud2" != ok ]; then
    class=lost
  elif [ -n "$skip" ]; then
    class="skipped($skip)"
  elif [ "${end%% *}" = mixed ]; then
    class=mixed
  else
    class=recovered
  fi
  printf '%s rc=%s/%s post=[%s] end=[%s] userdata=[%s/%s] %s\n' \
    "$class" "$rc1" "$rc2" "$post" "$end" "$ud1" "$ud2" "$note" >"$dir/result"
}

if [ "${1:-}" = __trial ]; then
  shift
  trial "$@"
  exit 0
fi

# ======================================================================================
# The campaign.
# ======================================================================================
args=("$@")
smoke=0 keep=0 strict=0 seed=${SEED:-$(date +%s)} kill_trials=100 trials=10 log=
flows="bootstrap upgrade image image-full"
kinds="sigkill-tool sigkill-tree enospc eio eperm immutable drop reset stall slow status redirect-loop"
kinds_set=0
while [ $# -gt 0 ]; do
  case $1 in
  --smoke) smoke=1 ;;
  --flows) flows=$2; shift ;;
  --kinds) kinds=$2; kinds_set=1; shift ;;
  --kill-trials) kill_trials=$2; shift ;;
  --trials) trials=$2; shift ;;
  --seed) seed=$2; shift ;;
  --log) log=$2; shift ;;
  --keep) keep=1 ;;
  --strict) strict=1 ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "faults.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$smoke" = 1 ]; then
  kill_trials=1 trials=1
  # The faults that end quickly (stall and slow wait for timeouts).
  [ "$kinds_set" = 1 ] || kinds="sigkill-tool sigkill-tree enospc eio immutable status drop"
fi
for tool in strace chattr unshare python3 dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "faults.sh: needs $tool" >&2; exit 2; }
done
in_private_mount_ns "${args[@]}"
cd "$bench/.."
RANDOM=$seed
[ -n "$log" ] || log=${TMPDIR:-/tmp}/release-upgrader-faults-$seed.log
started=$(date +%s)

profile=release
[ "$smoke" = 1 ] && profile=${FAULTS_PROFILE:-dev} || profile=${FAULTS_PROFILE:-release}
if [ "$profile" = release ]; then
  cargo build --release --bins -q
  export BIN=$PWD/target/release/release-upgrader PUB=$PWD/target/release/release-upgrader-publish
else
  cargo build --bins -q
  export BIN=$PWD/target/debug/release-upgrader PUB=$PWD/target/debug/release-upgrader-publish
fi

work=$(mktemp -d "${FAULTS_DIR:-/dev/shm}/release-upgrader-faults.XXXXXX")
export FX=$work/fixtures FAULTS=$work/faults.json SERVER_LOG=$work/server.log
mkdir -p "$FX"
echo '[]' >"$FAULTS"
srv_pid=
cleanup() {
  [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null
  if [ "$keep" = 1 ]; then echo "kept $work" >&2; else safe_rm_tree "${work:?}"; fi
}
trap cleanup EXIT
echo "faults.sh: seed $seed, work in $work, $profile binaries" >&2
pub() { "$PUB" -q "$@" >/dev/null; }

# --- the server -----------------------------------------------------------------------
SRV=$FX/srv
mkdir -p "$SRV"
"$py" "$bench/faultserver.py" "$SRV" --port-file "$work/port" --faults "$FAULTS" --log "$SERVER_LOG" 2>"$work/server.err" &
srv_pid=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
PORT=$(cat "$work/port")
export URL=http://127.0.0.1:$PORT

# --- fixtures -------------------------------------------------------------------------
stage() { echo "faults.sh: $* ($(($(date +%s) - started)) s)" >&2; }

plant_userdata() { # ROOT: the user's files the flows must never lose
  mkdir -p "$1/userdata" "$1/var/lib/demo-data"
  head -c 4096 /dev/urandom >"$1/userdata/x"
  printf 'rows the user cares about\n' >"$1/var/lib/demo-data/notes.txt"
  head -c 65536 /dev/urandom >"$1/var/lib/demo-data/db.bin"
}

# The apt flows: the demo's archive, helpers (set A) and pocket, re-signed for this
# server; helper set B; a Demo Linux 1 root; bootstrap roots with no helpers and with A.
apt_fixtures() {
  local key old_url deb x name t v
  "$BIN" -q demo --keep --dir "$FX/demo" >"$work/demo.log" 2>&1 || { cat "$work/demo.log" >&2; exit 1; }
  stage "demo built"
  cp -a "$FX/demo/srv/." "$SRV/"
  old_url=$(sed -n 's/^URIs: *//p' "$FX/demo/root/etc/apt/sources.list.d/demo.sources" | head -n1)
  old_url=${old_url%/archive}
  key=$FX/demo/key/secret.asc
  printf '[[release]]\ndist = "%s"\nname = "%s"\nversion = "%s"\ndate = "%s"\nsupported = true\n\n' \
    alpha Alpha 1 "Mon, 01 Jan 2024 00:00:00 UTC" beta Beta 2 "Wed, 01 Jan 2025 00:00:00 UTC" \
    >"$FX/demo-meta-release.toml"
  pub meta-release build "$FX/demo-meta-release.toml" --out "$SRV/meta-release" --key "$key" \
    --base-uri "$URL/dists/{dist}/main/"

  # Helper set B: set A with new versions and one more file each.
  mkdir -p "$FX/helpers-b"
  for deb in "$FX"/demo/helpers/*.deb; do
    x=$FX/repack/$(basename "$deb" .deb)
    mkdir -p "$x"
    dpkg-deb -R "$deb" "$x"
    name=$(dpkg-deb -f "$deb" Package)
    mkdir -p "$x/usr/lib/release-upgrader/root/usr/share/doc/$name"
    echo "set B of $name" >"$x/usr/lib/release-upgrader/root/usr/share/doc/$name/faults-set-b"
    # Every version, and every "(= version)" in Depends, gets +b1.
    sed -i -E 's/^(Version: .*)$/\1+b1/; /^Depends:/ s/\(= ([^)]*)\)/(= \1+b1)/g' "$x/DEBIAN/control"
    dpkg-deb --root-owner-group -Zgzip -z1 -b "$x" "$FX/helpers-b/" >/dev/null
  done
  "$PUB" -q deb check --arch amd64 "$FX"/helpers-b/*.deb >/dev/null
  sleep 1 # the pocket's Date must be newer than set A's (rolled-back dates are refused)
  pub pocket build --codename beta --arch amd64 --valid-days 2 --out "$SRV/b/dists/beta/main" --key "$key" "$FX/helpers-b"
  pub meta-release build "$FX/demo-meta-release.toml" --out "$SRV/b/meta-release" --key "$key" \
    --base-uri "$URL/b/dists/{dist}/main/"
  stage "helper set B published"

  # upgrade: Demo Linux 1 installed with dpkg as the demo does, sources at this server.
  t=$FX/templates/upgrade-alpha/root
  mkdir -p "$t"/{var/lib/dpkg/updates,var/lib/dpkg/info,var/log,tmp,etc/apt/apt.conf.d,var/lib/apt/lists/partial,var/cache/apt/archives/partial,usr/lib,run}
  : >"$t/var/lib/dpkg/status"
  : >"$t/var/lib/dpkg/available"
  dpkg --root="$t" --log="$t/var/log/dpkg.log" --force-depends -i "$FX"/demo/work/debs-alpha/demo-sh_*.deb >/dev/null
  # shellcheck disable=SC2046 # file names without spaces
  dpkg --root="$t" --log="$t/var/log/dpkg.log" --force-depends -i \
    $(ls "$FX"/demo/work/debs-alpha/*.deb | grep -v /demo-sh_) >/dev/null
  sed -i "s|$old_url|$URL|" "$t/etc/apt/sources.list.d/demo.sources"
  printf 'colour = red # the user'"'"'s choice\n' >>"$t/etc/demo.conf"
  plant_userdata "$t"
  state plant "$t" "$FX/templates/upgrade-alpha/userdata.json"
  mkdir -p "$FX/refs/upgrade-alpha"
  state dpkg-state "$t" >"$FX/refs/upgrade-alpha/old.pkgs"
  echo alpha >"$FX/refs/upgrade-alpha/old.suite"
  echo beta >"$FX/refs/upgrade-alpha/new.suite"

  # bootstrap: a Demo Linux 1 root without helpers, and one with set A installed.
  t=$FX/templates/bootstrap-none/root
  mkdir -p "$t/etc" "$t/usr/lib"
  cp "$FX/templates/upgrade-alpha/root/etc/os-release" "$t/etc/os-release"
  cp -a "$FX/templates/upgrade-alpha/root/etc/demo.conf" "$t/etc/demo.conf"
  plant_userdata "$t"
  state plant "$t" "$FX/templates/bootstrap-none/userdata.json"
  mkdir -p "$FX/templates/bootstrap-a"
  cp -a "$t" "$FX/templates/bootstrap-a/root"
  cp "$FX/templates/bootstrap-none/userdata.json" "$FX/templates/bootstrap-a/"
  "$BIN" -q --root "$FX/templates/bootstrap-a/root" --keyring "$FX/demo/key/keyring.gpg" \
    --meta-release-uri "$URL/meta-release" --arch amd64 bootstrap --no-reexec >/dev/null
  for v in none a; do
    mkdir -p "$FX/refs/bootstrap-$v"
    echo "$v" >"$FX/refs/bootstrap-$v/old.name"
    state bootstrap-state "$FX/templates/bootstrap-$v/root" >"$FX/refs/bootstrap-$v/$v.state"
  done
  cp "$FX/refs/bootstrap-a/a.state" "$FX/refs/bootstrap-none/a.state"
  cp "$FX/refs/bootstrap-none/none.state" "$FX/refs/bootstrap-a/none.state"
}

make_tree() { # BUILD DIR: the system tree of an image build (no var/lib: the device's own)
  local b=$1 d=$2 i
  mkdir -p "$d"/{etc/system-image/config.d,usr/bin,usr/lib,usr/share/system-image,usr/share/doc/pkg,usr/share/many,var/cache/demo}
  # system-image 3.x's layout, as every version tarball (ours, the real server's) writes
  # it: the defaults in client.ini, config.d (0775) linking to it and to channel.ini.
  chmod 775 "$d/etc/system-image/config.d"
  printf '[service]\nbase: 127.0.0.1\nhttp_port: %s\nhttps_port: disabled\nchannel: stable\ndevice: fauxdev\nbuild_number: 0\n' \
    "$PORT" >"$d/etc/system-image/client.ini"
  ln -s ../client.ini "$d/etc/system-image/config.d/00_default.ini"
  ln -s ../channel.ini "$d/etc/system-image/config.d/01_channel.ini"
  printf '[service]\nbuild_number: %s\nchannel: stable\n' "$b" >"$d/etc/system-image/channel.ini"
  printf 'ID=demo\nVERSION_CODENAME=image\n' >"$d/etc/os-release"
  cp "$img/gpg/archive-master.tar.xz" "$img/gpg/archive-master.tar.xz.asc" "$d/usr/share/system-image/"
  printf '#!/bin/sh\necho build %s\n' "$b" >"$d/usr/bin/tool"
  chmod 755 "$d/usr/bin/tool"
  ln -s tool "$d/usr/bin/sh"
  ln "$d/usr/bin/tool" "$d/usr/bin/tool-hardlink"
  # A large file that changes a little, one renamed with the build, a growing changelog.
  { cat "$img/big"; echo "build $b"; } >"$d/usr/lib/libbig.so"
  { head -c 200000 "$img/big"; echo "$b"; } >"$d/usr/lib/libver.so.$b"
  for i in $(seq $((b * 400))); do echo "build $b: change $i"; done | gzip -9n >"$d/usr/share/doc/pkg/changelog.gz"
  # Many small files: a third change in build 2, a seventh go, 40 are new.
  for i in $(seq 300); do
    if [ $((i % 7)) = 0 ] && [ "$b" = 2 ]; then continue; fi
    if [ $((i % 3)) = 0 ]; then echo "file $i of build $b" >"$d/usr/share/many/f$i"; else echo "file $i" >"$d/usr/share/many/f$i"; fi
  done
  if [ "$b" = 2 ]; then for i in $(seq 301 340); do echo "new file $i" >"$d/usr/share/many/f$i"; done; fi
  # A directory only in 1, one only in 2, a file that becomes a symlink.
  if [ "$b" = 1 ]; then
    mkdir -p "$d/usr/share/old-dir/sub"
    echo a >"$d/usr/share/old-dir/sub/a"
    echo "a file" >"$d/usr/share/typechange"
  else
    mkdir -p "$d/usr/share/new-dir"
    echo c >"$d/usr/share/new-dir/c"
    ln -s many "$d/usr/share/typechange"
  fi
  echo "cache of build $b" >"$d/var/cache/demo/data"
  find "$d" -exec touch -h -d @1700000000 {} +
}

# The image flows: keys, keyrings, builds 1 and 2 published on channel "stable" (with
# deltas and zdeltas) and "full" (full images only); device roots at build 1.
image_fixtures() {
  local k kr b flow v t channel build_levels=() levels=()
  img=$FX/image
  mkdir -p "$img"
  for k in archive-master image-master image-signing; do pub key generate --out "$img/keys/$k" --uid "$k"; done
  for kr in archive-master:archive-master image-master:archive-master image-signing:image-master; do
    pub image keyring --type "${kr%%:*}" --key "$img/keys/${kr%%:*}/secret.asc" \
      --signed-by "$img/keys/${kr#*:}/secret.asc" --out "$img/gpg/${kr%%:*}.tar.xz"
  done
  head -c $((3 << 20)) /dev/urandom >"$img/big"
  if [ "$smoke" = 1 ]; then # quicker compression
    build_levels=(--xz-level 1)
    levels=(--xz-level 1 --zstd-level 3)
  fi
  for b in 1 2; do
    make_tree "$b" "$img/tree-$b"
    pub image build --root "$img/tree-$b" --out "$img/build-$b" ${build_levels[0]+"${build_levels[@]}"}
    pub image publish "$img/build-$b/rootfs.tar.xz" --out "$SRV" --key "$img/keys/image-signing/secret.asc" \
      --channel stable --device fauxdev --version "$b" --keyrings "$img/gpg" --zdelta \
      --server 127.0.0.1 --http-port "$PORT" --https-port disabled ${levels[0]+"${levels[@]}"}
    pub image publish "$img/build-$b/rootfs.tar.xz" --out "$SRV" --key "$img/keys/image-signing/secret.asc" \
      --channel full --device fauxdev --version "$b" --keyrings "$img/gpg" --no-delta \
      --server 127.0.0.1 --http-port "$PORT" --https-port disabled ${levels[0]+"${levels[@]}"}
  done
  stage "images published"
  for flow in image image-full; do
    wants "$flow" || continue
    for v in $(variants "$flow"); do
      t=$FX/templates/$flow-$v
      mkdir -p "$t"
      cp -a "$img/tree-1" "$t/root"
      plant_userdata "$t/root"
      state plant "$t/root" "$t/userdata.json"
      mkdir -p "$FX/refs/$flow-$v"
      state image-listing "$img/tree-1" >"$FX/refs/$flow-$v/old.list"
      state image-listing "$img/tree-2" >"$FX/refs/$flow-$v/new.list"
      echo 1 >"$FX/refs/$flow-$v/old.build"
      echo 2 >"$FX/refs/$flow-$v/new.build"
    done
    channel=stable
    [ "$flow" = image-full ] && channel=full
    if [ -d "$FX/templates/$flow-cached" ]; then
      "$BIN" -q --root "$FX/templates/$flow-cached/root" image download --channel "$channel" >/dev/null
    fi
  done
}

if wants bootstrap || wants upgrade; then apt_fixtures; fi
if wants image || wants image-full; then image_fixtures; fi
stage "fixtures ready"

# --- reconnaissance: clean runs of each flow and variant ------------------------------
recon=$work/recon
mkdir -p "$recon"
# Runs "$@" in a PID and mount namespace of its own, killed after SECONDS.
in_ns() { # SECONDS CMD...
  local s=$1
  shift
  timeout -s KILL "$s" unshare --pid --fork --kill-child --mount-proc -- "$@"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
declare -A warned=()
for flow in $flows; do
  for v in $(variants "$flow"); do
    r=$recon/$flow-$v
    refs=$FX/refs/$flow-$v
    mkdir -p "$r"
    dur=0
    runs="1 2 3 4" # two timed, two traced (targets named alike in both)
    [ "$smoke" = 1 ] && runs="1 3"
    for i in $runs; do
      safe_rm_tree "${r:?}/root"
      cp -a "$FX/templates/$flow-$v/root" "$r/root"
      flow_cmd "$flow" "$r/root"
      : >"$work/server.log"
      if [ "$i" -ge 3 ]; then
        # Traced, for the paths the flow writes (the fault targets).
        in_ns 300 strace -f -qq -e signal=none -y -o "$r/strace.log" \
          -e trace=openat,open,creat,write,pwrite64,writev,fsync,fdatasync,ftruncate,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat,rmdir,linkat,symlinkat,fchmodat,fchownat \
          -- "${cmd[@]}" >"$r/run$i.log" 2>&1 || true
        state targets "$r/strace.log" "$r/root" | sed "s|$r/root/||; s| $r/root\$| .|" >"$r/targets.$i"
        rm -f -- "${r:?}/strace.log"
      else
        t0=$(now_ms)
        in_ns 300 "${cmd[@]}" >"$r/run$i.log" 2>&1 ||
          [ -n "${warned[$flow-$v]:-}" ] || { echo "faults.sh: clean run of $flow ($v) failed:" >&2; tail -n 3 "$r/run$i.log" >&2; }
        t1=$(now_ms)
        [ $((t1 - t0)) -gt "$dur" ] && dur=$((t1 - t0))
        awk '{ print $2 }' "$work/server.log" | sort -u >"$r/paths.$i"
      fi
      if [ "$i" = 1 ]; then
        case $flow in
        bootstrap) state bootstrap-state "$r/root" >"$refs/new.state" ;;
        upgrade) state dpkg-state "$r/root" >"$refs/new.pkgs" ;;
        esac
        cp -a "$r/root" "$r/new-root"
      fi
      got=$(state classify "$(classifier "$flow")" "$r/root" "$refs")
      if [ "${got%% *}" != new ] && [ -z "${warned[$flow-$v]:-}" ]; then
        echo "faults.sh: WARNING: a clean run of $flow ($v) ends $got" >&2
        warned[$flow-$v]=1
      fi
    done
    echo "$dur" >"$r/duration_ms"
    # Stable targets only (names that are the same in every run), as "call count path".
    awk '{ print $1, $3 }' "$r/targets.3" | sort -u >"$r/targets"
    if [ -f "$r/targets.4" ]; then
      awk '{ print $1, $3 }' "$r/targets.4" | sort -u | comm -12 - "$r/targets" >"$r/t4"
      mv "$r/t4" "$r/targets"
    fi
    cat "$r"/paths.* | sort -u | grep -v '^/$' >"$r/paths" || true
    # Paths of the template the flow changes, for chattr +i (files and directories).
    awk '{ print $2 }' "$r/targets" | sort -u | while read -r p; do
      [ "$p" = . ] && continue
      [ -e "$FX/templates/$flow-$v/root/$p" ] && [ ! -L "$FX/templates/$flow-$v/root/$p" ] && echo "$p"
    done >"$r/immutable" || true
    # Space: what the template takes on a tmpfs, and what the finished root takes.
    du_k() { du -sk "$1" | cut -f1; } # blocks: on a tmpfs, the pages it takes
    echo "$(du_k "$FX/templates/$flow-$v/root") $(du_k "$r/new-root")" >"$r/space"
    safe_rm_tree "${r:?}/root" "${r:?}/new-root"
    echo "faults.sh: $flow ($v): clean run ${dur} ms, $(wc -l <"$r/targets") write targets, $(wc -l <"$r/paths") server paths" >&2
  done
done
# The bootstrap's new state must be the same from either start.
if [ -f "$FX/refs/bootstrap-a/new.state" ] && [ -f "$FX/refs/bootstrap-none/new.state" ] && ! cmp -s "$FX/refs/bootstrap-a/new.state" "$FX/refs/bootstrap-none/new.state"; then
  echo "faults.sh: WARNING: set B installed over set A differs from set B installed alone" >&2
fi
stage "reconnaissance done"

# --- the trials -----------------------------------------------------------------------
: >"$log"
echo "# faults.sh seed $seed $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || true)" >>"$log"
declare -A tried recovered mixed lost left_mixed
params() { # FLOW VARIANT KIND -> the trial's parameters on stdout (empty: not applicable)
  local r=$recon/$1-$2 line
  case $3 in
  sigkill-*) rand_ms $(($(cat "$r/duration_ms") * 115 / 100)) ;;
  enospc)
    read -r used need <"$r/space"
    # Up to what the old and the new state take together (staging beside the old).
    local lo=$((used + 64)) hi=$((need + (need > used ? need - used : 0) + 512))
    echo $((lo + $(rand $((hi - lo + 1)))))
    ;;
  eio | eperm)
    line=$(pick "$r/targets") || return 0
    local call=${line%% *} path=${line#* }
    local n
    n=$(awk -v c="$call" -v p="$path" '$1 == c && $3 == p { print $2 }' "$recon/$1-$2/targets.3" | head -n1)
    [ -n "$n" ] || n=1
    [ "$n" -gt 4 ] && n=4
    echo "$path $call $(($(rand "$n") + 1))"
    ;;
  immutable) pick "$r/immutable" || true ;;
  drop | reset | stall | slow | status | redirect-loop)
    local p times
    p=$(pick "$r/paths") || return 0
    case $(rand 3) in 0) times=1 ;; 1) times=2 ;; *) times=-1 ;; esac
    case $3 in
    drop | stall) echo "$p $times $(rand 2000)" ;;
    status) if [ "$(rand 2)" = 0 ]; then echo "$p $times 500"; else echo "$p $times 503"; fi ;;
    *) echo "$p $times" ;;
    esac
    ;;
  esac
}
n=0
for flow in $flows; do
  for kind in $kinds; do
    count=$trials
    case $kind in sigkill-*) count=$kill_trials ;; esac
    key="$flow $kind"
    tried[$key]=0 recovered[$key]=0 mixed[$key]=0 lost[$key]=0 left_mixed[$key]=0
    vs=($(variants "$flow"))
    i=0
    # Trials in which the fault did not happen are not counted: up to 3 tries a trial.
    while [ "${tried[$key]}" -lt "$count" ] && [ "$i" -lt $((3 * count)) ]; do
      i=$((i + 1))
      v=${vs[$((i % ${#vs[@]}))]}
      p=$(params "$flow" "$v" "$kind")
      if [ -z "$p" ]; then
        echo "$flow $kind #$i ($v): no target for this fault" >>"$log"
        continue
      fi
      n=$((n + 1))
      dir=$work/trials/$n
      mkdir -p "$dir"
      limit=$((2 * $(run_timeout "$flow") + 60))
      # shellcheck disable=SC2086 # the parameters are words
      in_ns "$limit" bash "$bench/faults.sh" __trial "$flow" "$v" "$kind" "$dir" $p >"$dir/trial.log" 2>&1 || true
      echo '[]' >"$FAULTS.tmp" && mv "$FAULTS.tmp" "$FAULTS"
      result=$(cat "$dir/result" 2>/dev/null || echo "mixed trial-died $(tail -c 300 "$dir/trial.log" | tr '\n' ' ')")
      class=${result%% *}
      case $class in
      setup-failed | skipped*) # the fault left no room for the fixture, or never happened
        echo "$flow $kind #$i ($v) $p: not counted: $result" >>"$log"
        safe_rm_tree "${dir:?}"
        continue ;;
      esac
      case $class in recovered | mixed | lost) ;; *) class=mixed ;; esac
      tried[$key]=$((tried[$key] + 1))
      case $class in
      recovered) recovered[$key]=$((recovered[$key] + 1)) ;;
      mixed) mixed[$key]=$((mixed[$key] + 1)) ;;
      lost) lost[$key]=$((lost[$key] + 1)) ;;
      esac
      # A run that failed without being killed had the chance to leave old or new itself.
      case $kind:$result in
      sigkill-*) ;;
      *"post=[mixed"*) left_mixed[$key]=$((left_mixed[$key] + 1)) ;;
      esac
      echo "$flow $kind #$i ($v) $p: $result" >>"$log"
      if [ "$class" != recovered ] && [ "$keep" = 1 ]; then
        : # kept with the work directory, for a look
      else
        safe_rm_tree "${dir:?}"
      fi
    done
    extra=""
    case $kind in sigkill-*) ;; *) extra=" (left mixed by the faulted run itself: ${left_mixed[$key]})" ;; esac
    printf '%s %s: tried %d recovered %d mixed %d lost %d%s\n' "$flow" "$kind" \
      "${tried[$key]}" "${recovered[$key]}" "${mixed[$key]}" "${lost[$key]}" "$extra"
  done
done
T=0 R=0 M=0 L=0
for key in "${!tried[@]}"; do
  T=$((T + tried[$key])) R=$((R + recovered[$key])) M=$((M + mixed[$key])) L=$((L + lost[$key]))
done
printf 'total: tried %d recovered %d mixed %d lost %d (%d s, seed %s; per trial: %s)\n' \
  "$T" "$R" "$M" "$L" "$(($(date +%s) - started))" "$seed" "$log"
if [ "$strict" = 1 ] && [ $((M + L)) -gt 0 ]; then exit 1; fi
