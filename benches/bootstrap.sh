#!/usr/bin/env bash
# Whole helper bootstrap against the stock tools, in one run.
#
#   ours: release-upgrader --root R bootstrap --no-reexec
#         (meta-release, InRelease, Packages, parallel downloads, checks, journaled install)
#   peer: apt-get update && apt-get download <the helpers> && dpkg-deb -x each
#         (an isolated apt configuration reading the same pocket from the same server)
#
# The helper set is the real one: trixie's apt and dpkg relocated by
# `release-upgrader-publish helper build helpers/debian.toml` (its default compression, zstd)
# from the Debian mirror of this machine's apt sources (or RELEASE_UPGRADER_DEBIAN_MIRROR);
# upstream debs are cached.
# Served by python3's http.server on 127.0.0.1. Prints medians of RUNS runs, the ratio
# ours/peer, and our peak RSS. Usage: benches/bootstrap.sh [RUNS [STATIC]]
#
# STATIC, a release-upgrader_*.deb (scripts/package) or a binary, is the packaged static
# (musl) client: timed too, in the same runs, against this glibc build — the cost of the
# static build that lets one package start on Debian 11 — with both sizes, stripped.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
runs=${1:-7}
static=${2:-}

mirror=$(debian_mirror) || exit 2
cache=${RELEASE_UPGRADER_TEST_CACHE:-$HOME/.cache/release-upgrader-tests}/upstream-debs

cargo build --release --bins -q
bin=$PWD/target/release
work=$(mktemp -d)
if [ -n "$static" ]; then
  case "$static" in
    *.deb) dpkg-deb --fsys-tarfile "$static" | tar -xOf - ./usr/bin/release-upgrader >"$work/static-client" ;;
    *) cp "$static" "$work/static-client" ;;
  esac
  chmod +x "$work/static-client"
  file "$work/static-client" | grep -q 'static' || { echo "$static is not a static binary" >&2; exit 2; }
fi
srv_pid=
cleanup() { [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null; safe_rm_tree "${work:?}"; }
trap cleanup EXIT

pub() { "$bin/release-upgrader-publish" -q "$@" >/dev/null; }
pub key generate --out "$work/key"
pub helper build helpers/debian.toml --release trixie --archive "$mirror" --arch amd64 \
  --keyring /usr/share/keyrings/debian-archive-keyring.gpg --cache "$cache" --out "$work/helpers"
pub pocket build --codename trixie --arch amd64 --valid-days 2 --out "$work/srv/dists/trixie" \
  --key "$work/key/secret.asc" "$work/helpers"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/srv" "$port" >/dev/null 2>&1 &
srv_pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 50); do python3 -c "import urllib.request as u; u.urlopen('$url/')" 2>/dev/null && break; sleep 0.1; done
pub meta-release build pockets/debian-meta-release.toml --out "$work/srv/meta-release" \
  --key "$work/key/secret.asc" --base-uri "$url/dists/{dist}/"

names=$(ls "$work/helpers" | sed 's/_.*//' | tr '\n' ' ')
size=$(du -cb "$work"/helpers/*.deb | tail -1 | cut -f1)
echo "helpers: $names($((size / 1024)) KiB)"

root=$work/root
mkdir -p "$root/etc" "$root/usr/lib"
printf 'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n' >"$root/etc/os-release"

# Each side starts from nothing; removing the previous run's output is not timed (it cost
# 20-70 ms on either side, and more for ours, whose files are on disk, not in page cache).
reset_ours() { safe_rm_tree "${root:?}/usr/lib/release-upgrader" "${root:?}/var"; }
ours() {
  /usr/bin/time -f '%M' -o "$work/rss" "${1:-$bin/release-upgrader}" -q --root "$root" \
    --keyring "$work/key/keyring.gpg" --meta-release-uri "$url/meta-release" --arch amd64 \
    bootstrap --no-reexec >/dev/null
}

apt_dir=$work/apt
mkdir -p "$apt_dir/etc/apt.conf.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
: >"$apt_dir/etc/apt.conf"
: >"$apt_dir/status"
echo "deb [signed-by=$work/key/keyring.gpg] $url/dists/trixie/dist-upgrader-amd64/current/ ./" >"$apt_dir/etc/sources.list"
apt_opts=(-q=2 "-oDir::Etc::SourceList=$apt_dir/etc/sources.list" "-oDir::Etc::SourceParts=$apt_dir/none.d"
  "-oDir::Etc::Parts=$apt_dir/etc/apt.conf.d" "-oDir::State::Lists=$apt_dir/lists"
  "-oDir::State::status=$apt_dir/status" "-oDir::Cache=$apt_dir/cache" -oAPT::Architecture=amd64
  -oDebug::NoLocking=1 -oAPT::Sandbox::User=root)
reset_peer() {
  safe_rm_tree "${apt_dir:?}/lists" "${work:?}/dl" "${work:?}/x"
  mkdir -p "$apt_dir/lists/partial" "$work/dl" "$work/x"
}
peer() {
  APT_CONFIG=$apt_dir/etc/apt.conf apt-get "${apt_opts[@]}" update >/dev/null
  (cd "$work/dl" && APT_CONFIG=$apt_dir/etc/apt.conf apt-get "${apt_opts[@]}" download $names 2>/dev/null)
  for deb in "$work"/dl/*.deb; do dpkg-deb -x "$deb" "$work/x"; done
}

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
reset_ours && ours && reset_peer && peer # warm: page cache, server
: >"$work/ours.t"; : >"$work/peer.t"; : >"$work/rss.all"; : >"$work/static.t"; : >"$work/static-rss.all"
for _ in $(seq "$runs"); do
  reset_ours; sync; t0=$(now); ours; t1=$(now); echo "$t1 $t0" | awk '{print $1 - $2}' >>"$work/ours.t"; cat "$work/rss" >>"$work/rss.all"
  reset_peer; sync; t0=$(now); peer; t1=$(now); echo "$t1 $t0" | awk '{print $1 - $2}' >>"$work/peer.t"
  if [ -n "$static" ]; then
    reset_ours; sync; t0=$(now); ours "$work/static-client"; t1=$(now)
    echo "$t1 $t0" | awk '{print $1 - $2}' >>"$work/static.t"; cat "$work/rss" >>"$work/static-rss.all"
  fi
done
o=$(median <"$work/ours.t"); p=$(median <"$work/peer.t"); rss=$(sort -n "$work/rss.all" | tail -1)
printf 'bootstrap (median of %d): ours %.3f s, apt-get update+download+dpkg-deb -x %.3f s, ratio %.2f; our peak RSS %d MB\n' \
  "$runs" "$o" "$p" "$(echo "$o $p" | awk '{print $1 / $2}')" "$((rss / 1024))"
if [ -n "$static" ]; then
  s=$(median <"$work/static.t"); srss=$(sort -n "$work/static-rss.all" | tail -1)
  strip -o "$work/glibc-client" "$bin/release-upgrader"
  printf 'static client (median of %d): %.3f s, ratio to this glibc build %.2f; peak RSS %d MB; stripped size %d KiB (glibc %d KiB)\n' \
    "$runs" "$s" "$(echo "$s $o" | awk '{print $1 / $2}')" "$((srss / 1024))" \
    "$(($(stat -c %s "$work/static-client") / 1024))" "$(($(stat -c %s "$work/glibc-client") / 1024))"
fi
