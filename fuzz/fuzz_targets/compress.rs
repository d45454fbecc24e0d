//! The compressed frames the client decodes, each through its real entry point; the
//! first byte picks which:
//!
//! - 0-2: a .deb's `control.tar.{gz,xz,zst}` (`deb::read_control`);
//! - 3-6: a .deb's `data.tar.{gz,xz,zst,bz2}` (`deb::extract`, upstream policy);
//! - 7-8: an image tarball's `.tar.xz` / `.tar.zst` stream (`compress::open` with the
//!   image limits, as the device's overlay opens it), read up to 64 MiB;
//! - 9-10: a pocket's `Packages.xz` / `Packages.gz` (`pocket::decompress`), which must
//!   refuse output beyond its cap.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use ru_format::compress::{self, Compression, Limits};
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    f::trace(&format!("mode {}", mode % 11));
    match mode % 11 {
        m @ 0..=2 => {
            let name = ["control.tar.gz", "control.tar.xz", "control.tar.zst"][m as usize];
            let deb = f::deb(&[(name, payload), ("data.tar", f::helper_control_tar())]);
            let path = f::scratch_file("input.deb", &deb);
            let _ = ru_format::deb::read_control(&path);
        }
        m @ 3..=6 => {
            let name = ["data.tar.gz", "data.tar.xz", "data.tar.zst", "data.tar.bz2"]
                [m as usize - 3];
            let deb = f::deb(&[("control.tar", f::helper_control_tar()), (name, payload)]);
            f::extract_and_check(&deb, false);
        }
        m @ 7..=8 => {
            let compression = if m == 7 { Compression::Xz } else { Compression::Zstd };
            let path = f::scratch_file("input.tar.c", payload);
            if let Ok(reader) = compress::open(&path, compression, Limits::IMAGE) {
                let mut sink = Vec::new();
                let _ = reader.take(64 << 20).read_to_end(&mut sink);
            }
        }
        m => {
            let name = if m == 9 { "Packages.xz" } else { "Packages.gz" };
            if let Ok(out) = ru_client::pocket::decompress(name, payload) {
                assert!(out.len() as u64 <= ru_client::pocket::PACKAGES_CAP);
            }
        }
    }
});
