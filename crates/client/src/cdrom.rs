//! Upgrade media (CD, DVD, USB stick, or a copy of one in a directory).
//!
//! Recognised as Ubuntu's upgrade CDs were: a `.disk/info` file, and a helper pocket in
//! one of the places such media have put the upgrader ([`POCKET_DIRS`]: this tool's
//! `dists/stable/main/dist-upgrader/binary-<arch>/`, the seed's
//! `dists/stable/dist-upgrader/binary-<arch>/`, and Ubuntu's `binary-all`), where
//! `dists/stable` is a symlink to the release's codename. Media that also carry an
//! archive (`dists/stable/Release` and `main/binary-<arch>/`) can serve the whole upgrade
//! offline.
//! Found by scanning mounted filesystems (`/proc/self/mountinfo`), `/media` and
//! `/run/media`, or at paths given on the command line. Nothing here is trusted: the
//! caller verifies the media's signatures before using it.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// What a piece of media offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Media {
    pub path: PathBuf,
    /// First line of `.disk/info`.
    pub info: String,
    /// The release it carries, from the `dists/stable` symlink (unverified).
    pub codename: Option<String>,
    /// The helper pocket for the architecture, if present.
    pub helper_pocket: Option<PathBuf>,
    /// Whether it carries a package archive for the architecture.
    pub has_archive: bool,
}

/// Where media carry the helper pocket, relative to their root, in the order they are
/// looked at (`{arch}` is the architecture being upgraded): the layout
/// `release-upgrader-publish media build` writes (Ubuntu's upgrade CDs' `main/`), the
/// seed's (no component), and the same two for `binary-all`, where Ubuntu's CDs keep the
/// upgrader of every architecture.
pub const POCKET_DIRS: [&str; 4] = [
    "dists/stable/main/dist-upgrader/binary-{arch}",
    "dists/stable/dist-upgrader/binary-{arch}",
    "dists/stable/main/dist-upgrader/binary-all",
    "dists/stable/dist-upgrader/binary-all",
];

impl Media {
    /// The helper pocket of `arch` on media at `path`: the first of [`POCKET_DIRS`]
    /// that holds a `Release` or an `InRelease`.
    pub fn find_pocket(path: &Path, arch: &str) -> Option<PathBuf> {
        POCKET_DIRS
            .iter()
            .map(|dir| path.join(dir.replace("{arch}", arch)))
            .find(|dir| dir.join("InRelease").is_file() || dir.join("Release").is_file())
    }

    /// The places [`Media::find_pocket`] looks at, for messages.
    pub fn pocket_dirs(arch: &str) -> String {
        POCKET_DIRS
            .iter()
            .map(|dir| dir.replace("{arch}", arch))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Mount points listed in `/proc/self/mountinfo` text (field 5, octal escapes undone).
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(crate::confine::unescape_mountinfo)
        .collect()
}

/// Places media usually appear: mount points, then `/media/*`, `/media/*/*`,
/// `/run/media/*/*`. Duplicates removed, order kept.
pub fn candidate_paths(mountinfo: &str) -> Vec<PathBuf> {
    let mut paths = mount_points(mountinfo);
    for base in ["/media", "/run/media"] {
        let Ok(entries) = std::fs::read_dir(base) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            paths.push(path.clone());
            if let Ok(inner) = std::fs::read_dir(&path) {
                paths.extend(inner.flatten().map(|e| e.path()));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    paths.retain(|p| seen.insert(p.clone()));
    paths
}

/// Looks at `path` as upgrade media for `arch`.
pub fn inspect(path: &Path, arch: &str) -> Option<Media> {
    let info = std::fs::read_to_string(path.join(".disk/info")).ok()?;
    let info = info.lines().next().unwrap_or("").trim().to_owned();
    let stable = path.join("dists/stable");
    let codename = std::fs::read_link(&stable)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
    let helper_pocket = Media::find_pocket(path, arch);
    let has_archive = (stable.join("Release").is_file() || stable.join("InRelease").is_file())
        && stable.join(format!("main/binary-{arch}")).is_dir();
    Some(Media {
        path: path.to_owned(),
        info,
        codename,
        helper_pocket,
        has_archive,
    })
}

/// Media found at `paths`, or, when none are given, wherever media usually appear.
pub fn detect(paths: &[PathBuf], arch: &str) -> Vec<Media> {
    let scanned;
    let paths = if paths.is_empty() {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        scanned = candidate_paths(&mountinfo);
        &scanned
    } else {
        paths
    };
    paths.iter().filter_map(|p| inspect(p, arch)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                    22 1 0:20 / /media/cdrom ro - iso9660 /dev/sr0 ro\n";
        assert_eq!(
            mount_points(text),
            [
                PathBuf::from("/mnt/with space"),
                PathBuf::from("/media/cdrom")
            ]
        );
        assert_eq!(
            crate::confine::unescape_mountinfo("a\\011b\\134"),
            Path::new("a\tb\\")
        );
    }

    /// The layout of Ubuntu's upgrade-CD test fixture (conformance sample).
    fn fixture_media(dir: &Path) {
        std::fs::create_dir_all(dir.join(".disk")).unwrap();
        std::fs::write(
            dir.join(".disk/info"),
            "Ubuntu 8.10 \"Intrepid Ibex\" - Beta amd64 (20080930.4)\n",
        )
        .unwrap();
        let dists = dir.join("dists/intrepid");
        std::fs::create_dir_all(dists.join("main/binary-amd64")).unwrap();
        std::fs::create_dir_all(dists.join("main/dist-upgrader/binary-amd64")).unwrap();
        std::fs::write(dists.join("Release"), "Codename: intrepid\n").unwrap();
        std::fs::write(dists.join("main/dist-upgrader/binary-amd64/Release"), "x").unwrap();
        std::os::unix::fs::symlink("intrepid", dir.join("dists/stable")).unwrap();
    }

    #[test]
    fn upgrade_cd_layout_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let layout = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/conformance/ubuntu-release-upgrader/cdrom-fixture-layout.txt"
        ))
        .unwrap();
        assert!(layout.contains("dists/intrepid/main/dist-upgrader/binary-amd64/.keep"));
        fixture_media(dir.path());
        let media = inspect(dir.path(), "amd64").unwrap();
        assert_eq!(
            media.info,
            "Ubuntu 8.10 \"Intrepid Ibex\" - Beta amd64 (20080930.4)"
        );
        assert_eq!(media.codename.as_deref(), Some("intrepid"));
        assert_eq!(
            media.helper_pocket,
            Some(
                dir.path()
                    .join("dists/stable/main/dist-upgrader/binary-amd64")
            )
        );
        assert!(media.has_archive);
        // No helpers for another architecture; not media at all without .disk/info.
        assert!(
            inspect(dir.path(), "arm64")
                .unwrap()
                .helper_pocket
                .is_none()
        );
        std::fs::remove_file(dir.path().join(".disk/info")).unwrap();
        assert!(inspect(dir.path(), "amd64").is_none());
        assert!(detect(&[dir.path().to_path_buf()], "amd64").is_empty());
    }

    /// The seed's place (no `main/`) and Ubuntu's `binary-all` are pockets too; this
    /// tool's own layout wins when a medium has several, the architecture's before `all`.
    #[test]
    fn the_seeds_path_main_and_binary_all_are_recognised_in_order() {
        let dir = tempfile::tempdir().unwrap();
        fixture_media(dir.path());
        let dists = dir.path().join("dists/intrepid");
        std::fs::remove_dir_all(dists.join("main/dist-upgrader")).unwrap();
        assert_eq!(inspect(dir.path(), "amd64").unwrap().helper_pocket, None);
        let pocket = |relative: &str, file: &str| {
            let path = dists.join(relative);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join(file), "x").unwrap();
            dir.path().join("dists/stable").join(relative)
        };
        let all_main = pocket("main/dist-upgrader/binary-all", "InRelease");
        let found = |arch: &str| inspect(dir.path(), arch).unwrap().helper_pocket;
        assert_eq!(found("amd64").as_ref(), Some(&all_main));
        assert_eq!(
            found("arm64").as_ref(),
            Some(&all_main),
            "binary-all serves every arch"
        );
        let seed = pocket("dist-upgrader/binary-amd64", "Release");
        assert_eq!(found("amd64").as_ref(), Some(&seed));
        assert_eq!(found("arm64").as_ref(), Some(&all_main));
        let ours = pocket("main/dist-upgrader/binary-amd64", "InRelease");
        assert_eq!(found("amd64").as_ref(), Some(&ours));
        // A directory without a Release is no pocket.
        std::fs::create_dir_all(dists.join("main/dist-upgrader/binary-arm64")).unwrap();
        assert_eq!(found("arm64").as_ref(), Some(&all_main));
        assert!(Media::pocket_dirs("amd64").contains("dists/stable/dist-upgrader/binary-amd64"));
    }
}
