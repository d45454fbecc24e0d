#!/usr/bin/env python3
"""What benches/faults.sh needs to judge a root after a trial; never changes anything.

    faults_state.py listing ROOT SCOPE...        the tree below ROOT/SCOPE..., one line a path
    faults_state.py plant ROOT FILE             a manifest of the user data planted in ROOT
    faults_state.py userdata ROOT FILE          "ok", or "lost: ..." (exit 0 either way)
    faults_state.py classify FLOW ROOT REFS     "old|new|mixed DETAIL"
    faults_state.py targets STRACE_LOG ROOT     the (syscall, path) pairs a run used on
                                                paths below ROOT, for fault injection

FLOW is bootstrap, upgrade or image; REFS is the flow's reference directory that
faults.sh made from known states (old.list, new.list and friends, see each classifier).
"""

import collections
import hashlib
import json
import os
import re
import stat
import subprocess
import sys

# Paths an image never touches on a device (docs/protocol.md, src/image/overlay.rs PRESERVED)
# and the version files the version tarball writes: not part of "the tree of build N".
IMAGE_SKIP = {
    "proc", "sys", "dev", "run", "userdata", "cache", "lost+found", "var/lib",
    "etc/system-image/channel.ini", "etc/ubuntu-build",
}


def describe(path, with_mtime):
    st = os.lstat(path)
    mode = stat.S_IMODE(st.st_mode)
    owner = f"{st.st_uid}:{st.st_gid}"
    if stat.S_ISLNK(st.st_mode):
        return f"link {os.readlink(path)}"
    if stat.S_ISDIR(st.st_mode):
        return f"dir {mode:o} {owner}"
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        mtime = f" {st.st_mtime_ns // 1_000_000_000}" if with_mtime else ""
        return f"file {mode:o} {owner} {st.st_size} {h.hexdigest()} n{st.st_nlink}{mtime}"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return f"dev {st.st_mode:o} {st.st_rdev:x} {owner}"
    return f"other {st.st_mode:o} {owner}"


def listing(root, scopes, skip=(), with_mtime=False):
    """Sorted "path description" lines of everything at and below ROOT/scope."""
    out = []
    for scope in scopes:
        top = os.path.join(root, scope) if scope else root
        if not os.path.lexists(top):
            out.append(f"{scope} absent")
            continue
        stack = [scope]
        while stack:
            rel = stack.pop()
            full = os.path.join(root, rel) if rel else root
            if rel in skip:
                continue
            if rel:
                out.append(f"{rel} {describe(full, with_mtime)}")
            if os.path.isdir(full) and not os.path.islink(full):
                for name in os.listdir(full):
                    stack.append(f"{rel}/{name}" if rel else name)
    return sorted(out)


def read_lines(path):
    with open(path) as f:
        return [line.rstrip("\n") for line in f]


def first_difference(got, want):
    g, w = set(got), set(want)
    extra = sorted(g - w)
    missing = sorted(w - g)
    parts = []
    if missing:
        parts.append(f"{len(missing)} differ/missing, e.g. {missing[0]!r}")
    if extra:
        parts.append(f"{len(extra)} unexpected, e.g. {extra[0]!r}")
    return "; ".join(parts) or "same"


# --- user data ---------------------------------------------------------------

def plant(root, manifest):
    """Records every file below the planted places (whatever faults.sh put there)."""
    entries = {}
    for rel in ("userdata", "var/lib/demo-data", "etc/demo.conf"):
        full = os.path.join(root, rel)
        if not os.path.lexists(full):
            continue
        for line in listing(root, [rel]):
            path, desc = line.split(" ", 1)
            entries[path] = desc
        entries[rel] = describe(full, False)
    with open(manifest, "w") as f:
        json.dump(entries, f, indent=0, sort_keys=True)


def userdata(root, manifest):
    with open(manifest) as f:
        entries = json.load(f)
    lost = []
    for rel, desc in sorted(entries.items()):
        full = os.path.join(root, rel)
        if not os.path.lexists(full):
            lost.append(f"{rel} missing")
        elif describe(full, False) != desc:
            lost.append(f"{rel} changed")
    print("lost: " + ", ".join(lost[:5]) if lost else "ok")


# --- bootstrap ---------------------------------------------------------------

PREFIX = "usr/lib/release-upgrader"
STATE = "var/lib/release-upgrader"


def manifests(root):
    d = os.path.join(root, STATE, "helpers")
    out = {}
    if os.path.isdir(d):
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                out[name] = f.read()
    return out


def manifests_agree(root):
    """The manifests list exactly what the prefix holds, each file with its digest."""
    listed = set()
    for name, data in manifests(root).items():
        try:
            m = json.loads(data)
        except ValueError:
            return f"manifest {name} is not JSON"
        for e in m.get("files", []):
            p = e["path"].strip("/")
            listed.add(p)
            full = os.path.join(root, PREFIX, p)
            if not os.path.lexists(full):
                return f"{m.get('package')}: {p} missing"
            if e.get("type") == "file":
                h = hashlib.sha256()
                with open(full, "rb") as f:
                    h.update(f.read())
                if h.hexdigest() != e.get("sha256") or os.path.getsize(full) != e.get("size"):
                    return f"{m.get('package')}: {p} differs from its manifest"
    actual = set()
    top = os.path.join(root, PREFIX)
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            actual.add(os.path.relpath(os.path.join(dirpath, n), top))
    stray = sorted(p for p in actual - listed if not any(q.startswith(p + "/") for q in listed))
    if stray:
        return f"{len(stray)} prefix paths in no manifest, e.g. {stray[0]}"
    return None


def bootstrap_state(root):
    """The prefix and its parent, and the manifests, as one comparable text."""
    lines = listing(root, ["usr/lib"])
    for name, data in manifests(root).items():
        lines.append(f"manifest {name} {hashlib.sha256(data).hexdigest()}")
    if os.path.lexists(os.path.join(root, STATE, "journal.json")):
        lines.append("journal.json pending")
    return lines


def classify_bootstrap(root, refs):
    got = bootstrap_state(root)
    disagree = manifests_agree(root)
    matches = []
    for name in sorted(os.listdir(refs)):
        if name.endswith(".state"):
            if got == read_lines(os.path.join(refs, name)):
                matches.append(name[: -len(".state")])
    old = read_lines(os.path.join(refs, "old.name"))[0]
    if disagree:
        return "mixed", disagree
    if "new" in matches:
        return "new", "helpers B"
    if old in matches:
        return "old", f"helpers {old}"
    if matches:
        return "mixed", f"the state of {matches[0]}, neither this root's old one ({old}) nor B"
    closest = min(
        (n for n in os.listdir(refs) if n.endswith(".state")),
        key=lambda n: len(set(got) ^ set(read_lines(os.path.join(refs, n)))),
    )
    return "mixed", f"vs {closest}: " + first_difference(got, read_lines(os.path.join(refs, closest)))


# --- image -------------------------------------------------------------------

def build_number(root):
    try:
        with open(os.path.join(root, "etc/system-image/channel.ini")) as f:
            for line in f:
                m = re.match(r"\s*build_number\s*[:=]\s*(\d+)", line)
                if m:
                    return int(m.group(1))
    except OSError:
        return None
    return None


def classify_image(root, refs):
    got = listing(root, [""], skip=IMAGE_SKIP, with_mtime=True)
    build = build_number(root)
    for which in ("old", "new"):
        want = read_lines(os.path.join(refs, f"{which}.list"))
        want_build = int(read_lines(os.path.join(refs, f"{which}.build"))[0])
        if got == want:
            if build == want_build:
                return which, f"build {build}"
            return "mixed", f"tree of build {want_build}, channel.ini says {build}"
    old = read_lines(os.path.join(refs, "old.list"))
    new = read_lines(os.path.join(refs, "new.list"))
    near, name = (old, "old") if len(set(got) ^ set(old)) <= len(set(got) ^ set(new)) else (new, "new")
    return "mixed", f"channel.ini build {build}; nearest {name}: " + first_difference(got, near)


# --- upgrade -----------------------------------------------------------------

def dpkg_state(root):
    out = subprocess.run(
        ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
         "-f=${Package} ${Version} ${db:Status-Abbrev}\n"],
        capture_output=True, text=True)
    return sorted(l.strip() for l in out.stdout.splitlines() if l.strip())


def suites(root):
    found = set()
    d = os.path.join(root, "etc/apt/sources.list.d")
    files = [os.path.join(d, n) for n in sorted(os.listdir(d))] if os.path.isdir(d) else []
    files.append(os.path.join(root, "etc/apt/sources.list"))
    for path in files:
        if not (path.endswith(".sources") or path.endswith(".list")) or not os.path.isfile(path):
            continue
        with open(path) as f:
            text = f.read()
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                if re.search(r"^Enabled:\s*no\s*$", stanza, re.M | re.I):
                    continue
                for m in re.finditer(r"^Suites:\s*(.*)$", stanza, re.M):
                    found.update(m.group(1).split())
        else:
            for line in text.splitlines():
                words = [w for w in line.split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] in ("deb", "deb-src"):
                    found.add(words[2])
    return found


def classify_upgrade(root, refs):
    audit = subprocess.run(["dpkg", f"--root={root}", "--audit"], capture_output=True, text=True)
    audit_text = (audit.stdout + audit.stderr).strip()
    pkgs = dpkg_state(root)
    sts = suites(root)
    for which in ("old", "new"):
        want = read_lines(os.path.join(refs, f"{which}.pkgs"))
        suite = read_lines(os.path.join(refs, f"{which}.suite"))[0]
        if pkgs == want and sts == {suite} and not audit_text and audit.returncode == 0:
            return which, f"{suite}"
    detail = []
    if audit_text or audit.returncode:
        detail.append("dpkg --audit: " + " ".join(audit_text.split())[:120])
    old = read_lines(os.path.join(refs, "old.pkgs"))
    new = read_lines(os.path.join(refs, "new.pkgs"))
    if pkgs not in (old, new):
        detail.append("packages: " + first_difference(pkgs, new))
    detail.append("suites " + ",".join(sorted(sts)))
    return "mixed", "; ".join(detail)


def classify(flow, root, refs):
    fn = {"bootstrap": classify_bootstrap, "upgrade": classify_upgrade, "image": classify_image}[flow]
    try:
        which, detail = fn(root, refs)
    except Exception as e:  # a root too broken to read is mixed, with the reason
        which, detail = "mixed", f"unreadable: {e!r}"
    print(f"{which} {detail}")


# --- fault targets -----------------------------------------------------------

FD_CALLS = {"write", "pwrite64", "writev", "pwritev", "pwritev2", "fsync", "fdatasync",
            "ftruncate", "fchmod", "fchown", "copy_file_range", "fallocate"}
PATH_CALLS = {"openat", "open", "creat", "rename", "renameat", "renameat2", "unlink",
              "unlinkat", "mkdir", "mkdirat", "rmdir", "linkat", "link", "symlinkat",
              "symlink", "fchmodat", "fchownat", "utimensat", "truncate"}
LINE = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(\w+)\((.*)$")
FDPATH = re.compile(r"\b\d+<([^>]*)>")
QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def targets(log, root):
    """(syscall, path) pairs strace -y showed on paths below ROOT: the fd's path for
    descriptor calls, the directory fd's path and absolute path arguments for path
    calls (what strace -P can match), with how often each occurred."""
    root = os.path.realpath(root)
    counts = collections.Counter()
    with open(log, errors="replace") as f:
        for line in f:
            m = LINE.match(line.strip())
            if not m:
                continue
            call, args = m.group(2), m.group(3)
            args = args.rsplit(") = ", 1)[0]  # the result (an fd's path) is not matchable
            unquoted = QUOTED.sub('""', args)
            paths = []
            if call in FD_CALLS:
                fd = FDPATH.search(unquoted)
                if fd:
                    paths.append(fd.group(1))
            elif call in PATH_CALLS:
                if call in ("openat", "open") and not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", args):
                    continue
                paths.extend(FDPATH.findall(unquoted))
                paths.extend(p for p in QUOTED.findall(args) if p.startswith("/"))
            for p in paths:
                if p == root or p.startswith(root + "/"):
                    counts[(call, p)] += 1
    for (call, p), n in sorted(counts.items()):
        print(f"{call} {n} {p}")


def main(argv):
    cmd = argv[1]
    if cmd == "listing":
        print("\n".join(listing(argv[2], argv[3:])))
    elif cmd == "image-listing":
        print("\n".join(listing(argv[2], [""], skip=IMAGE_SKIP, with_mtime=True)))
    elif cmd == "bootstrap-state":
        print("\n".join(bootstrap_state(argv[2])))
        disagree = manifests_agree(argv[2])
        if disagree:
            print(f"manifests disagree: {disagree}", file=sys.stderr)
            return 1
    elif cmd == "dpkg-state":
        print("\n".join(dpkg_state(argv[2])))
    elif cmd == "plant":
        plant(argv[2], argv[3])
    elif cmd == "userdata":
        userdata(argv[2], argv[3])
    elif cmd == "classify":
        classify(argv[2], argv[3], argv[4])
    elif cmd == "targets":
        targets(argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
