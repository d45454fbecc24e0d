//! An image tarball's members as the device reads them (`image::overlay` over
//! `ru_format::tarfile::Reader`): each entry through `image::extract::check_entry`, the `removed` list through
//! `image::extract::parse_removed`. The fuzzed bytes are the uncompressed tar (header
//! checksums fixed up unless the first byte says not to; bit 1 picks `as_root`).
//! Every path, hard-link target and patch base that comes out must be relative and
//! normalised, and a relative symlink must not climb above the system tree.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use ru_format::image::extract::{self, What};
use ru_format::tarfile;
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    let Some((mode, tar)) = f::tar_input(data) else {
        return;
    };
    let as_root = mode & 2 != 0;
    let mut archive = tarfile::Reader::new(tar.as_slice());
    while let Ok(Some(entry)) = archive.next_entry() {
        let member = extract::check_entry(&entry, as_root, "fuzz");
        f::trace(&format!("member: {:?}", member.as_ref().map(|m| (&m.path, &m.what)).map_err(|e| e.to_string())));
        let Ok(member) = member else {
            return;
        };
        match &member.what {
            What::Removed => {
                let mut text = Vec::new();
                if (&mut archive).take(64 << 20).read_to_end(&mut text).is_err() {
                    return;
                }
                if let Ok(paths) = extract::parse_removed(&text, "fuzz") {
                    for path in paths {
                        f::assert_clean_relative(&path, "removed path");
                    }
                }
                continue;
            }
            What::Dir if member.path.is_empty() => continue,
            What::Partition(name) => {
                assert!(name == "partitions" || name.starts_with("partitions/"));
                continue;
            }
            What::HardLink(target) => f::assert_clean_relative(target, "hard link target"),
            What::Symlink(target) if !target.starts_with('/') => {
                let resolved = f::resolve_lexically(&member.path, target);
                assert!(resolved.is_some(), "{}: symlink {target:?} climbs out", member.path);
            }
            What::Patch(info) => {
                if let Some(base) = info.base.as_ref().and_then(|b| b.path.as_ref()) {
                    f::assert_clean_relative(base, "patch base path");
                }
            }
            What::Char(..) | What::Block(..) => assert!(as_root, "device node accepted as a user"),
            _ => {}
        }
        f::assert_clean_relative(&member.path, "member path");
        assert!(member.meta.mode <= 0o7777);
        let mut sink = Vec::new();
        if (&mut archive).take(1 << 20).read_to_end(&mut sink).is_err() {
            return;
        }
    }
});
