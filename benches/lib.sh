# Shared by the bench and fault scripts (sourced, not run): deleting trees and making
# mounts without ever reaching the host.
#
#   safe_rm_tree DIR...        rm -rf each DIR, refused (exit status 1, nothing deleted)
#                              when anything is mounted at or below it
#   mounts_below DIR           prints the mount points at or below DIR; status 0 if any
#   debian_mirror              prints the Debian mirror to download from (status 1 and
#                              a message when there is none)
#   in_private_mount_ns "$@"   re-executes the calling script in a mount namespace of its
#                              own (unshare --mount --propagation private), once: mounts
#                              it makes never show on the host and go when it ends
#
# Every rm in these scripts names its operand as "${var:?}" so an empty variable stops
# the script instead of becoming "/".

# The mount points of this process's namespace (/proc/self/mountinfo, fifth field, octal
# escapes such as \040 undone) at or below DIR (absolute, without a trailing slash).
mounts_below() {
  local dir=${1:?mounts_below: no directory}
  awk -v dir="$dir" '
    function unescape(s,    out, i) {
      out = ""
      for (i = 1; i <= length(s); i++) {
        if (substr(s, i, 1) == "\\" && substr(s, i + 1, 3) ~ /^[0-7][0-7][0-7]$/) {
          out = out sprintf("%c", substr(s, i + 1, 1) * 64 + substr(s, i + 2, 1) * 8 + substr(s, i + 3, 1))
          i += 3
        } else {
          out = out substr(s, i, 1)
        }
      }
      return out
    }
    { p = unescape($5); if (p == dir || index(p, dir "/") == 1) { print p; found = 1 } }
    END { exit found ? 0 : 1 }' /proc/self/mountinfo
}

# rm -rf of each DIR, after checking that nothing is mounted at or below it (a bind of
# the host's /dev below a chroot, a tmpfs left by a killed run): then it refuses, names
# the mounts and returns 1 without deleting anything. A symlink is removed, not followed.
# --one-file-system besides: rm does not descend into another file system that appears
# after the check.
safe_rm_tree() {
  local arg real mounted status=0
  for arg in "$@"; do
    arg=${arg:?safe_rm_tree: empty path}
    if [ -d "$arg" ] && [ ! -L "$arg" ]; then
      real=$(realpath -- "$arg")
      if [ "$real" = / ]; then
        echo "safe_rm_tree: refusing to delete /" >&2
        status=1
        continue
      fi
      if mounted=$(mounts_below "$real"); then
        echo "safe_rm_tree: refusing to delete $arg: mounted below it: $(echo $mounted)" >&2
        status=1
        continue
      fi
    fi
    rm -rf --one-file-system -- "${arg:?}"
  done
  return "$status"
}

# Fails (status 1, with the mounts named) when anything is mounted at or below DIR.
assert_no_mounts_below() {
  local mounted
  if mounted=$(mounts_below "$(realpath -- "${1:?}")"); then
    echo "mounted below $1: $(echo $mounted)" >&2
    return 1
  fi
}

# The Debian mirror the benches download from: RELEASE_UPGRADER_DEBIAN_MIRROR, else the
# first …/debian URI of this machine's apt sources (deb822 `URIs:` or one-line `deb`
# entries). Prints it; without one, says so and returns 1.
debian_mirror() {
  local mirror=${RELEASE_UPGRADER_DEBIAN_MIRROR:-}
  if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null |
      awk '/^URIs:/ { print $2 } /^deb / { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i; break } }' |
      grep -E '^https?://.*/debian/?$' | head -n1 || true)
  fi
  if [ -z "$mirror" ]; then
    echo "$0: no Debian mirror in the apt sources; set RELEASE_UPGRADER_DEBIAN_MIRROR" >&2
    return 1
  fi
  printf '%s\n' "$mirror"
}

# Re-executes the calling script ($0, with "$@") under
# `unshare --mount --propagation private`, unless it already runs in the namespace made
# for it (RELEASE_UPGRADER_BENCH_MNT_NS names it; scripts it starts share it). Needs root.
in_private_mount_ns() {
  local ns
  ns=$(readlink /proc/self/ns/mnt)
  if [ "${RELEASE_UPGRADER_BENCH_MNT_NS:-}" = "$ns" ]; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "$0: needs root (it mounts, in a private mount namespace)" >&2
    exit 2
  fi
  # The new namespace's id is known only inside it.
  exec unshare --mount --propagation private -- env -u RELEASE_UPGRADER_BENCH_MNT_NS \
    bash -c 'export RELEASE_UPGRADER_BENCH_MNT_NS=$(readlink /proc/self/ns/mnt); exec bash "$0" "$@"' "$0" "$@"
}
