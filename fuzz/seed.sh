#!/bin/bash
# Builds the seed corpora of the fuzz targets into fuzz/seeds/<target>/ from the repo's
# own samples (tests/conformance, tests/fixtures) and small generated ones: what a run
# starts from (the corpora grown by runs go to fuzz/corpus/, never committed).
#
#   fuzz/seed.sh            rebuild every seed directory (found-* inputs are kept)
#
# Needs: python3, gzip, xz, zstd, bzip2, tar, dpkg-deb, gpg, and cargo for the crate's own
# writers (fuzz/examples/seed_tool.rs: gzip token streams, zdelta patch members).
# Targets whose input starts with a mode byte get one seed per mode worth starting from.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
seeds="$here/seeds"
conf="$repo/tests/conformance"
fix="$repo/tests/fixtures/check"
pocket="$fix/dists/trixie/main/dist-upgrader-amd64/current"

work=$(mktemp -d)
trap 'rm -rf "${work:?}"' EXIT

tool() {
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}" \
        cargo run --quiet --release --manifest-path "$here/Cargo.toml" --example seed_tool -- "$@"
}
sep() { printf '\n--8<--\n'; }
# seed TARGET NAME: stdin → seeds/TARGET/NAME
seed() { mkdir -p "$seeds/$1"; cat >"$seeds/$1/$2"; }
# with_mode BYTE FILE...: the byte (octal escape, e.g. \\001) then the files
with_mode() { printf "$1"; shift; cat "$@"; }

# Inputs that once crashed a target (seeds/<target>/found-*, committed with their fix)
# stay: every run, and CI's smoke, replays them.
find "${seeds:?}" -mindepth 2 -type f ! -name 'found-*' -delete 2>/dev/null || true
mkdir -p "$seeds"

# --- Text parsers -------------------------------------------------------------------
# The text a clearsigned file signs (dash-escaping aside).
signed_text() { awk 'body && /^-----BEGIN PGP SIGNATURE-----$/ { exit } body { print } /^$/ { body = 1 }' "$1"; }

for f in "$conf"/ubuntu-release-upgrader/meta-release.*; do
    seed metarelease "$(basename "$f")" <"$f"
done
signed_text "$fix/meta-release" | seed metarelease fixture
cat <<'EOF' | seed metarelease generated
Dist: bookworm
Name: Bookworm
Version: 12
Date: Sat, 10 Jun 2023 00:00:00 UTC
Supported: 1
Description: Debian 12
Release-File: http://127.0.0.1/dists/bookworm/Release
UpgradeTool: http://127.0.0.1/bookworm.tar.gz
UpgradeToolSignature: http://127.0.0.1/bookworm.tar.gz.gpg

Dist: trixie
Name: Trixie
Version: 13 LTS
Date: Sat, 09 Aug 2025 00:00:00 +0200
Supported: 0
UpgradeToolBaseURI: http://127.0.0.1/pocket/
UpgradeToolPackages: release-upgrader-apt, release-upgrader-dpkg, release-upgrader-runtime
UpgradeBroken: not yet

Dist: trixie
Version: 13
Date: Sun, 10 Aug 2025 00:00:00 UTC
Supported: 1
EOF

# The signed text of InRelease, and Release as published.
signed_text "$pocket/InRelease" | seed release inrelease-text
seed release Release <"$pocket/Release"
cat <<'EOF' | seed release generated
Origin: Debian
Label: Debian
Suite: stable
Version: 13.1
Codename: trixie
Date: Sat, 06 Sep 2025 09:17:56 UTC
Valid-Until: Sat, 13 Sep 2025 09:17:56 UTC
Architectures: all amd64 arm64
Components: main
SHA256:
 0000000000000000000000000000000000000000000000000000000000000000     1234 main/binary-amd64/Packages
 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855        0 main/binary-amd64/Packages.xz
EOF

seed packages Packages <"$pocket/Packages"
cat <<'EOF' | seed packages generated
Package: release-upgrader-apt
Version: 1:3.0.3-1~bpo1+b2
Architecture: amd64
Installed-Size: 4096
Depends: release-upgrader-runtime (= 2.41-12)
Pre-Depends: libc6 (>= 2.36)
Filename: ./pool/main/r/release-upgrader-apt_3.0.3_amd64.deb
Size: 1234
SHA256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

Package: release-upgrader-dpkg
Version: 1.22.21
Architecture: all
Filename: pool/main/d/dpkg%2B/release-upgrader-dpkg_1.22.21_all.deb
Size: 42
SHA256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
EOF

# One-line sources: mode byte 4 (distribution = a URI naming debian).
for f in "$conf"/ubuntu-release-upgrader/prerequists-sources*.list; do
    with_mode '\004' "$f" | seed sources_list "$(basename "$f")"
done
cat <<'EOF' >"$work/bookworm.list"
# Debian 12
deb http://deb.debian.example/debian bookworm main contrib non-free-firmware
deb-src http://deb.debian.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://security.debian.example/debian-security bookworm-security main
deb http://deb.debian.example/debian bookworm-updates main # updates
deb http://archive.example/debian buster/updates main
	deb http://packages.example/apt bookworm-backports stable
deb http://packages.example/apt stable main
deb cdrom:[Debian GNU/Linux 12]/ bookworm main
EOF
for mode in '\000' '\002' '\004' '\005'; do
    with_mode "$mode" "$work/bookworm.list" | seed sources_list "bookworm-$(printf '%s' "$mode" | tr -d '\\')"
done

# deb822 sources.
with_mode '\004' "$conf/ubuntu-release-upgrader/deb822-test_sources_rewrite/in/ubuntu.sources" |
    seed sources_deb822 ubuntu.sources
cat <<'EOF' >"$work/debian.sources"
# Debian 12
Types: deb deb-src
URIs: http://deb.debian.example/debian
Suites: bookworm bookworm-updates
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.debian.example/debian-security
Suites: bookworm-security
Components: main
Enabled: yes

Types: deb
URIs: https://packages.example/apt
Suites: bookworm
Components: stable
Architectures: amd64
 arm64

Types: deb
URIs: http://archive.example/debian
Suites: stable sid ./
Enabled: no
EOF
for mode in '\000' '\002' '\004' '\005'; do
    with_mode "$mode" "$work/debian.sources" | seed sources_deb822 "debian-$(printf '%s' "$mode" | tr -d '\\')"
done

cat <<'EOF' | seed control helper
Package: release-upgrader-apt
Version: 3.0.3
Architecture: amd64
Maintainer: Release Upgrader <ru@example.invalid>
Installed-Size: 4096
Depends: release-upgrader-runtime (= 2.41-12)
X-Release-Upgrader-Reversible: yes
Description: apt for the upgrade
 The target release's apt, in a private prefix.
 .
 Never run by dpkg.
EOF
cat <<'EOF' | seed control upstream
Package: libc6
Source: glibc
Version: 2.36-9+deb12u10
Architecture: amd64
Multi-Arch: same
Installed-Size: 12987
Depends: libgcc-s1
Recommends: libidn2-0 (>= 2.0.5~)
Breaks: hurd (<< 1:0.9.git20170910-1), nscd (<< 2.36)
Section: libs
Priority: optional
Description: GNU C Library: Shared libraries
	Contains the standard libraries.
EOF

# INI: system-image configs (config.d, then channel.ini), update-manager's files.
for f in "$conf"/system-image/client-testdata/*.ini "$conf"/system-image/client-samples/*.ini; do
    seed ini "$(basename "$f")" <"$f"
done
for f in "$conf"/ubuntu-release-upgrader/etc-update-manager-* "$conf"/ubuntu-release-upgrader/DistUpgrade.cfg.*; do
    seed ini "$(basename "$f")" <"$f"
done
{
    cat "$conf/system-image/client-samples/demo.ini"
    sep
    printf '[service]\nbuild_number: 42\nchannel: stable\ndevice = mako\nhttp_port: disabled\nhttps_port: 8443\n[system]\ntimeout: 1h30m\n'
} | seed ini config-and-channel

# --- Image JSON ---------------------------------------------------------------------
# index: two bytes first (build / 10, phase percentage).
for f in "$conf"/system-image/client-testdata/*.index_*.json; do
    [ "$(stat -c %s "$f")" -le 16384 ] || continue
    { printf '\000\062'; cat "$f"; } | seed index "$(basename "$f")"
done
for f in candidates.index_0{2,3,4}.json scores.index_0{1,2}.json; do
    { printf '\120\144'; cat "$conf/system-image/client-testdata/$f"; } | seed index "build800-$f"
done
for f in "$conf"/system-image/client-testdata/*.channels_*.json; do
    seed channels "$(basename "$f")" <"$f"
done

# --- Archives -----------------------------------------------------------------------
# A helper package tree: files, a directory, relative and absolute symlinks, a hard link.
tree="$work/helper"
mkdir -p "$tree/DEBIAN" "$tree/usr/lib/release-upgrader/bin" "$tree/usr/lib/release-upgrader/lib/x86_64-linux-gnu"
cat >"$tree/DEBIAN/control" <<'EOF'
Package: release-upgrader-fuzz
Version: 1.0
Architecture: amd64
Maintainer: Release Upgrader <ru@example.invalid>
Installed-Size: 8
Description: fuzz seed
EOF
printf '#!/bin/sh\necho apt\n' >"$tree/usr/lib/release-upgrader/bin/apt-get"
chmod 0755 "$tree/usr/lib/release-upgrader/bin/apt-get"
printf 'libc\n' >"$tree/usr/lib/release-upgrader/lib/x86_64-linux-gnu/libc.so.6"
ln -s libc.so.6 "$tree/usr/lib/release-upgrader/lib/x86_64-linux-gnu/libc.so"
ln -s /usr/lib/release-upgrader/bin/apt-get "$tree/usr/lib/release-upgrader/bin/apt"
ln "$tree/usr/lib/release-upgrader/bin/apt-get" "$tree/usr/lib/release-upgrader/bin/apt-cache"
for z in none gzip xz zstd; do
    dpkg-deb --root-owner-group -Z"$z" -z1 --build "$tree" "$work/helper-$z.deb" >/dev/null
    seed deb "helper-$z.deb" <"$work/helper-$z.deb"
done
# A postinst (refused unless declared reversible) and an upstream-style package.
cp -a "$tree" "$work/scripts"
printf '#!/bin/sh\nexit 0\n' >"$work/scripts/DEBIAN/postinst"
chmod 0755 "$work/scripts/DEBIAN/postinst"
dpkg-deb --root-owner-group -Znone --build "$work/scripts" "$work/scripts.deb" >/dev/null
seed deb scripts.deb <"$work/scripts.deb"

# Their data.tar as the deb_tar target takes it (mode 0: helper policy, checksums fixed;
# 2: upstream policy), and tar formats dpkg-deb does not write (GNU long names, pax).
ar p "$work/helper-none.deb" data.tar >"$work/data.tar"
ar p "$work/helper-none.deb" control.tar >"$work/control.tar"
with_mode '\000' "$work/data.tar" | seed deb_tar data-helper
with_mode '\002' "$work/data.tar" | seed deb_tar data-upstream
with_mode '\004' "$work/control.tar" | seed deb_tar control
long="usr/lib/release-upgrader/share/$(printf 'd%.0s' {1..120})/file"
mkdir -p "$tree/$(dirname "$long")"
printf 'long\n' >"$tree/$long"
for format in gnu pax; do
    tar --format="$format" --owner=0 --group=0 --numeric-owner -C "$tree" -cf "$work/data-$format.tar" ./usr
    with_mode '\000' "$work/data-$format.tar" | seed deb_tar "data-$format"
done

# Compressed frames: mode byte, then the compressed bytes (see compress.rs for the modes).
gzip -9n <"$work/data.tar" >"$work/data.tar.gz"
xz -1 --check=crc64 <"$work/data.tar" >"$work/data.tar.xz"
zstd -q -3 --check <"$work/data.tar" >"$work/data.tar.zst"
bzip2 -9 <"$work/data.tar" >"$work/data.tar.bz2"
gzip -9n <"$work/control.tar" >"$work/control.tar.gz"
xz -1 <"$work/control.tar" >"$work/control.tar.xz"
zstd -q -3 <"$work/control.tar" >"$work/control.tar.zst"
with_mode '\000' "$work/control.tar.gz" | seed compress control-gz
with_mode '\001' "$work/control.tar.xz" | seed compress control-xz
with_mode '\002' "$work/control.tar.zst" | seed compress control-zst
with_mode '\003' "$work/data.tar.gz" | seed compress data-gz
with_mode '\004' "$work/data.tar.xz" | seed compress data-xz
with_mode '\005' "$work/data.tar.zst" | seed compress data-zst
with_mode '\006' "$work/data.tar.bz2" | seed compress data-bz2
with_mode '\007' "$work/data.tar.xz" | seed compress image-xz
with_mode '\010' "$work/data.tar.zst" | seed compress image-zst
with_mode '\011' "$pocket/Packages.xz" | seed compress packages-xz
gzip -9n <"$pocket/Packages" >"$work/Packages.gz"
with_mode '\012' "$work/Packages.gz" | seed compress packages-gz

# Image tarballs (mode 0: checksums fixed, as a user; 2: as root): a delta with its
# `removed` list, links, a device node, a partition, and a zdelta patch member.
python3 - "$work" <<'EOF'
import io, sys, tarfile
work = sys.argv[1]
def add(t, name, kind=tarfile.REGTYPE, data=b"", link="", pax=None, mode=0o644, dev=(0, 0)):
    i = tarfile.TarInfo(name)
    i.type, i.mode, i.linkname, i.size = kind, mode, link, len(data)
    i.devmajor, i.devminor = dev
    if pax:
        i.pax_headers = pax
    t.addfile(i, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
with tarfile.open(f"{work}/image.tar", "w", format=tarfile.PAX_FORMAT) as t:
    add(t, "removed", data=b"system/usr/bin/old\nsystem/etc/gone\r\n\npartitions/boot.img\n")
    add(t, "system", tarfile.DIRTYPE, mode=0o755)
    add(t, "system/usr/bin", tarfile.DIRTYPE, mode=0o755)
    add(t, "system/usr/bin/tool", data=b"#!/bin/sh\n", mode=0o4755)
    add(t, "system/usr/bin/tool2", tarfile.LNKTYPE, link="system/usr/bin/tool")
    add(t, "system/usr/bin/sh", tarfile.SYMTYPE, link="../../bin/busybox")
    add(t, "system/etc/localtime", tarfile.SYMTYPE, link="/usr/share/zoneinfo/UTC")
    add(t, "system/dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3))
    add(t, "system/run/fifo", tarfile.FIFOTYPE)
    add(t, "partitions/boot.img", data=b"ANDROID!")
    add(t, "system/usr/share/doc/x/changelog.gz", data=b"(zstd frame)", pax={
        "RELEASE_UPGRADER.patch": "zstd-patch-from",
        "RELEASE_UPGRADER.base-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "RELEASE_UPGRADER.sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "RELEASE_UPGRADER.size": "0",
        "RELEASE_UPGRADER.base-path": "system/usr/share/doc/x/changelog.Debian.gz",
    })
with tarfile.open(f"{work}/image-gnu.tar", "w", format=tarfile.GNU_FORMAT) as t:
    add(t, "system/" + "d" * 150 + "/file", data=b"long name\n")
    add(t, "system/" + "l" * 150, tarfile.SYMTYPE, link="x" * 120)
EOF
with_mode '\000' "$work/image.tar" | seed image_tar delta-user
with_mode '\002' "$work/image.tar" | seed image_tar delta-root
with_mode '\000' "$work/image-gnu.tar" | seed image_tar gnu-long-names

# --- Gzip token streams and zdelta patches -------------------------------------------
# Two versions of a changelog, compressed as dpkg's packages have them (gzip -9n).
python3 - "$work" <<'EOF'
import sys
work = sys.argv[1]
lines = [f"release-upgrader ({v}) trixie; urgency=medium\n\n  * Change {v}: fuzz seed line.\n\n -- Maintainer <m@example.invalid>  Sat, 0{v % 9 + 1} Aug 2025 00:00:00 +0000\n\n" for v in range(40)]
open(f"{work}/changelog.1", "w").write("".join(lines[5:]))
open(f"{work}/changelog.2", "w").write("".join(lines[3:38]) + "  * Something new.\n")
EOF
gzip -9n <"$work/changelog.1" >"$work/base.gz"
gzip -9n <"$work/changelog.2" >"$work/target.gz"
gzip -1n <"$work/changelog.2" >"$work/target-1.gz"
printf 'x' | gzip -n >"$work/tiny.gz"
gzip -c "$work/changelog.1" >"$work/named.gz"   # FNAME set
python3 -c 'import zlib,sys; d=zlib.compressobj(9,zlib.DEFLATED,-15); sys.stdout.buffer.write(b"\x1f\x8b\x08\x00\0\0\0\0\x00\x03"+d.compress(open(sys.argv[1],"rb").read()*3)+d.flush(zlib.Z_FULL_FLUSH)+d.compress(b"stored?")+d.flush()+b"\0"*8)' "$work/changelog.1" >"$work/flushed.gz"
for f in base target target-1 tiny named flushed; do
    with_mode '\000' "$work/$f.gz" | seed gztokens "$f"
done
for f in target target-1 tiny; do
    { printf '\001'; tool tokens "$work/$f.gz"; } | seed gztokens "tokens-$f"
done

# zdelta: mode 0 (in memory), 1 (streamed), 2 (base digest fixed up).
printf 'base bytes of a file\n%.0s' {1..50} >"$work/plain.1"
{ cat "$work/plain.1"; printf 'and then some\n'; } >"$work/plain.2"
{ printf '\000'; tool zdelta plain "$work/plain.1" "$work/plain.2"; } | seed zdelta plain
{ printf '\001'; tool zdelta plain "$work/plain.1" "$work/plain.2" system/usr/share/doc/other; } | seed zdelta plain-streamed
{ printf '\000'; tool zdelta content "$work/base.gz" "$work/target.gz"; } | seed zdelta gzip-content
{ printf '\002'; tool zdelta tokens "$work/base.gz" "$work/target.gz"; } | seed zdelta gzip-tokens
{ printf '\001'; tool zdelta tokens "$work/base.gz" "$work/target-1.gz"; } | seed zdelta gzip-tokens-streamed
# Two x86-64 ELF files in miniature: a header, then calls (E8) and RIP-relative loads
# (48 8B 05) that moved by 2 bytes.
code() {
    printf '\177ELF\002\001\001'; head -c 11 /dev/zero; printf '\076\000'; head -c 44 /dev/zero
    head -c "$1" /dev/zero | tr '\0' '\220'
    for _ in 1 2 3 4 5 6 7 8; do printf '\350\020\000\000\000\110\211\303\110\213\005\040\000\000\000'; done
}
code 0 >"$work/code.1"
code 2 >"$work/code.2"
{ printf '\000'; tool zdelta branches "$work/code.1" "$work/code.2"; } | seed zdelta branches
{ printf '\001'; tool zdelta pcrel "$work/code.1" "$work/code.2"; } | seed zdelta pcrel
# A new file with no base: its frame decodes alone (the base part is not used).
{ printf '\000'; tool zdelta alone "$work/code.1" "$work/code.2"; } | seed zdelta alone

# --- Keyrings and OpenPGP ------------------------------------------------------------
master="$conf/system-image/keyrings/ubports-archive-master.tar.xz"
xz -dc "$master" >"$work/master.tar"
tar -xf "$work/master.tar" -C "$work" keyring.gpg keyring.json
with_mode '\000' "$master" | seed keyring archive-master.tar.xz
with_mode '\001' "$work/master.tar" | seed keyring archive-master.tar
{ printf '\002'; cat "$work/keyring.json"; sep; cat "$work/keyring.gpg"; } | seed keyring json-gpg
{ printf '\002{"type": "archive-master", "expiry": 1900000000.5, "model": "mako"}'; sep; cat "$fix/keyring.gpg"; } |
    seed keyring json-gpg-model

export GNUPGHOME="$work/gnupg"
mkdir -m 0700 "$GNUPGHOME"
gpg --batch --quiet --import "$fix/test-only-secret.asc" 2>/dev/null
gpg --batch --quiet --armor --export >"$work/keyring.asc"

seed openpgp_clearsigned InRelease <"$pocket/InRelease"
seed openpgp_clearsigned meta-release <"$fix/meta-release"
signature_stripped=$(signed_text "$fix/meta-release")
printf "%s\n" "$signature_stripped" | gpg --batch --quiet --clearsign -o - | seed openpgp_clearsigned meta-release.resigned
gpg --batch --quiet --sign -o - "$pocket/Release" | seed openpgp_clearsigned Release.inline-signed

{ cat "$pocket/Release"; sep; cat "$pocket/Release.gpg"; } | seed openpgp_detached Release
{ cat "$fix/meta-release"; sep; cat "$fix/meta-release.gpg"; } | seed openpgp_detached meta-release
{ cat "$pocket/Packages"; sep; gpg --batch --quiet --armor --detach-sign -o - "$pocket/Packages"; } |
    seed openpgp_detached Packages.armored
{ cat "$master"; sep; cat "$master.asc"; } | seed openpgp_detached archive-master-unknown-key

seed openpgp_keyring fixture.gpg <"$fix/keyring.gpg"
seed openpgp_keyring fixture.asc <"$work/keyring.asc"
seed openpgp_keyring ubports.gpg <"$work/keyring.gpg"
seed openpgp_keyring test-only-secret.asc <"$fix/test-only-secret.asc"
{ cat "$work/keyring.gpg" "$fix/keyring.gpg"; } | seed openpgp_keyring two-certs.gpg

echo "seeds: $(find "$seeds" -type f | wc -l) files, $(du -sh "$seeds" | cut -f1) in $seeds"
