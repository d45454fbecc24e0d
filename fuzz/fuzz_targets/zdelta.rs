//! A zdelta patch member as the device applies it: the member's `RELEASE_UPGRADER.*` pax
//! records read by `image::extract::check_entry`, then the patch frame decoded against
//! the base file (none for `x86-pcrel+zstd`) by `image::rebuilds::run` (frames in memory: one-shot decode, or gzip
//! rebuild from content or tokens) or `run_reading` (frames streamed from the tarball).
//!
//! Input: `mode records SEP base SEP frame`; `records` is `key=value` lines. Mode bit 0
//! picks `run_reading`; bit 1 replaces the base-sha256 record with the base's real digest
//! (the device's own file is the base, so the interesting input is the frame and records).
//!
//! Invariants: whatever the publisher's reader (`PatchInfo::from_pax`) accepts, the device
//! reads the same way; its writer (`pax_records`) round-trips; a patch that applies
//! produced exactly the size and SHA256 its records promise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ru_format::digest::Sha256;
use ru_format::image::extract::{self, What};
use ru_format::image::rebuilds;
use ru_format::tarfile::{self, Entry, Kind};
use ru_publish::image::zdelta::PatchInfo;
use release_upgrader_fuzz as f;

const MEMBER: &str = "system/usr/share/doc/fuzz/changelog.gz";

fuzz_target!(init: f::init(), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let parts = f::split_parts(rest, 3);
    let (records_text, base, frame) = (parts[0], parts[1], parts[2]);
    let Ok(records_text) = std::str::from_utf8(records_text) else {
        return;
    };
    let mut records: Vec<(String, String)> = records_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if mode & 2 != 0 {
        let digest = Sha256::of(base).to_hex();
        for (k, v) in &mut records {
            if k == "RELEASE_UPGRADER.base-sha256" {
                *v = digest.clone();
            }
        }
    }

    // The member as a tarball carries it, read back as the device reads it.
    let mut member = Entry::new(MEMBER.to_owned(), Kind::File);
    member.size = frame.len() as u64;
    member.pax = records.clone();
    let mut writer = tarfile::Writer::new(Vec::new());
    writer.append(&member).expect("tar in memory");
    writer.write_data(frame).expect("tar in memory");
    let tarball = writer.finish().expect("tar in memory");
    let mut reader = tarfile::Reader::new(tarball.as_slice());
    let device = match reader.next_entry() {
        Ok(Some(entry)) => extract::check_entry(&entry, false, "fuzz"),
        // Records the reader refuses (a bad `size`, `path` or `mtime`, a sparse
        // marker): the device never gets to the patch.
        Ok(None) | Err(_) => Err(ru_format::Error::Malformed {
            what: "fuzz".into(),
            reason: "refused by the tar reader".into(),
        }),
    };

    // The publisher's reader and writer of the same records.
    if let Ok(Some(publisher)) = PatchInfo::from_pax(&records, "fuzz") {
        let again = PatchInfo::from_pax(&publisher.pax_records(), "fuzz")
            .expect("the publisher reads its own records")
            .expect("still a patch");
        assert_eq!(again, publisher, "pax_records does not round-trip");
        // The publisher reads only the patch records; the device also checks the
        // member itself, whose name, size, owners and date the tar layer's own records
        // change (and refuses when they do not parse).
        let renamed = records.iter().any(|(k, _)| {
            matches!(k.as_str(), "path" | "linkpath" | "size" | "uid" | "gid" | "mtime")
                || k.starts_with("GNU.sparse.")
        });
        let Ok(extract::Member {
            what: What::Patch(info),
            ..
        }) = &device
        else {
            if renamed && device.is_err() {
                return;
            }
            panic!("the publisher reads a patch, the device {device:?}");
        };
        assert_eq!(info.sha256, publisher.sha256);
        assert_eq!(info.size, publisher.size);
        assert_eq!(info.gzip, publisher.gzip);
        assert_eq!(info.x86, publisher.x86);
        assert_eq!(
            info.base.as_ref().map(|b| b.sha256),
            publisher.base.as_ref().map(|b| b.sha256)
        );
        assert_eq!(
            info.base.as_ref().and_then(|b| b.path.as_deref()).map(|p| format!("system/{p}")),
            publisher.base.as_ref().and_then(|b| b.path.clone())
        );
    }

    let Ok(extract::Member {
        what: What::Patch(info),
        ..
    }) = device
    else {
        return;
    };
    let object = f::scratch_file("object", b"");
    let job = rebuilds::Job {
        object: object.clone(),
        base: info.base.as_ref().map(|b| rebuilds::Base {
            path: f::scratch_file("base", base),
            sha256: b.sha256,
            what: "fuzz: base".into(),
        }),
        frame: frame.to_vec(),
        gzip: info.gzip.clone(),
        x86: info.x86,
        sha256: info.sha256,
        size: info.size,
        finish: Box::new(|_, _| Ok(())),
        what: "fuzz: patched".into(),
    };
    let result = if mode & 1 != 0 {
        let mut reader = frame;
        rebuilds::run_reading(job, &mut reader)
    } else {
        rebuilds::run(job)
    };
    f::trace(&format!("patch applied: {:?}", result.as_ref().map_err(|e| e.to_string())));
    if result.is_ok() {
        let written = std::fs::read(&object).expect("object");
        assert_eq!(written.len() as u64, info.size);
        assert_eq!(Sha256::of(&written), info.sha256);
    }
});
