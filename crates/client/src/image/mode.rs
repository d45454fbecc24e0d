//! Whether `release-upgrader upgrade` upgrades with apt or with images (docs/protocol.md §5):
//! images when the root is mounted read-only, or when system-image is configured
//! (`/etc/system-image/config.d` with a `[service]` section), unless the device has
//! opted out (§6).
//!
//! Read-only is taken from the mount flags in `/proc/self/mountinfo` of the mount that
//! holds the root (a read-only bind mount shows there, and statvfs agrees only for
//! the whole filesystem), with statvfs as a second opinion.

use std::path::Path;

use crate::error::Error;
use crate::root::SystemRoot;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Apt,
    Image,
}

/// What the decision rests on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Facts {
    pub read_only: bool,
    pub system_image_config: bool,
    pub opted_out: bool,
}

/// The decision itself.
pub fn decide(facts: &Facts) -> Mode {
    if facts.opted_out {
        Mode::Apt
    } else if facts.read_only || facts.system_image_config {
        Mode::Image
    } else {
        Mode::Apt
    }
}

/// The mode for the system at `root`.
pub fn choose(root: &SystemRoot) -> Result<Mode, Error> {
    Ok(decide(&facts(root)?))
}

pub fn facts(root: &SystemRoot) -> Result<Facts, Error> {
    let mountinfo = fs_err::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("/proc/self/mountinfo", e))?;
    let dir = root
        .dir()
        .canonicalize()
        .map_err(|e| Error::io(root.dir(), e))?;
    let read_only = mount_is_read_only(&mountinfo, &dir).unwrap_or(false)
        || nix::sys::statvfs::statvfs(&dir)
            .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    Ok(Facts {
        read_only,
        system_image_config: has_service_section(root),
        opted_out: crate::image::optout::is_opted_out(root),
    })
}

fn has_service_section(root: &SystemRoot) -> bool {
    let dir = root.path(crate::image::config::CONFIG_D);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return false;
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ini"))
        .any(|p| {
            std::fs::read_to_string(&p)
                .ok()
                .and_then(|t| crate::ini::Ini::parse(&t).ok())
                .is_some_and(|ini| ini.has_section("service"))
        })
}

/// Whether the mount holding `dir` (canonical) is read-only, from mountinfo text:
/// the last-mounted entry whose mount point is the longest prefix of `dir`; its
/// per-mount options (field 6) or superblock options decide.
pub fn mount_is_read_only(mountinfo: &str, dir: &Path) -> Option<bool> {
    let mut best: Option<(usize, bool)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 10 {
            continue;
        }
        let mount_point = crate::confine::unescape_mountinfo(fields[4]);
        if !dir.starts_with(&mount_point) {
            continue;
        }
        let options = fields[5];
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let super_options = fields.get(sep + 3).copied().unwrap_or("");
        let ro =
            options.split(',').any(|o| o == "ro") || super_options.split(',').any(|o| o == "ro");
        let depth = mount_point.components().count();
        // Later lines are later mounts: on equal depth, the later one is on top.
        if best.is_none_or(|(d, _)| depth >= d) {
            best = Some((depth, ro));
        }
    }
    best.map(|(_, ro)| ro)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 8:1 /srv/img /mnt/img rw,relatime shared:1 - ext4 /dev/sda1 rw
31 30 8:1 /srv/img /mnt/img ro,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:40 / /mnt/with\\040space ro,nosuid - tmpfs tmpfs rw
41 22 8:2 / /boot rw - vfat /dev/sda2 ro
";

    #[test]
    fn the_mount_holding_the_root_decides() {
        assert_eq!(mount_is_read_only(MOUNTINFO, Path::new("/")), Some(false));
        assert_eq!(
            mount_is_read_only(MOUNTINFO, Path::new("/usr")),
            Some(false)
        );
        // The read-only bind mount on top of the writable one.
        assert_eq!(
            mount_is_read_only(MOUNTINFO, Path::new("/mnt/img/x")),
            Some(true)
        );
        assert_eq!(
            mount_is_read_only(MOUNTINFO, Path::new("/mnt/with space")),
            Some(true)
        );
        assert_eq!(
            mount_is_read_only(MOUNTINFO, Path::new("/mnt/imgx")),
            Some(false)
        );
        // Read-only superblock.
        assert_eq!(
            mount_is_read_only(MOUNTINFO, Path::new("/boot/efi")),
            Some(true)
        );
    }

    #[test]
    fn opt_out_wins() {
        let f = |read_only, system_image_config, opted_out| {
            decide(&Facts {
                read_only,
                system_image_config,
                opted_out,
            })
        };
        assert_eq!(f(false, false, false), Mode::Apt);
        assert_eq!(f(true, false, false), Mode::Image);
        assert_eq!(f(false, true, false), Mode::Image);
        assert_eq!(f(true, true, true), Mode::Apt);
    }
}
