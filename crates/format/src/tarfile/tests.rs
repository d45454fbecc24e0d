use std::io::Read;

use super::read::{Pax, pax_time};
use super::*;

#[test]
fn octal_and_base256_numbers_parse() {
    assert_eq!(number(b"0000644\0"), Some(0o644));
    assert_eq!(number(b"  644 \0\0"), Some(0o644));
    assert_eq!(number(b"\0\0\0\0\0\0\0\0"), Some(0));
    assert_eq!(number(b"00000001750\0"), Some(1000));
    assert_eq!(number(b"0000068\0"), None);
    assert_eq!(number(b"12 4\0\0\0\0"), None);
    assert_eq!(
        number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00]),
        Some(256)
    );
    assert_eq!(signed_number(&[0xff; 12]), Some(-1));
    assert_eq!(
        signed_number(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe
        ]),
        Some(-2)
    );
    assert_eq!(number(&[0xff; 8]), None);
    assert_eq!(
        number(&[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        None
    );
}

#[test]
fn pax_times_round_down_to_seconds() {
    assert_eq!(pax_time("1700000000"), Some(1_700_000_000));
    assert_eq!(pax_time("1700000000.999"), Some(1_700_000_000));
    assert_eq!(pax_time("-1.5"), Some(-2));
    assert_eq!(pax_time("-3.000"), Some(-3));
    assert_eq!(pax_time("1e9"), None);
    assert_eq!(pax_time(""), None);
}

fn record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = [key.as_bytes(), b"=", value, b"\n"].concat();
    let mut len = body.len() + 2;
    while format!("{len} ").len() + body.len() != len {
        len += 1;
    }
    [format!("{len} ").into_bytes(), body].concat()
}

#[test]
fn pax_records_set_path_size_and_owners_and_keep_ours() {
    let data = [
        record("path", b"usr/lib/a/long/name"),
        record("uid", b"42"),
        record("size", b"1234567890"),
        record("SCHILY.xattr.user.x", b"\x00\xff\x01"),
        record("atime", b"1.5"),
        record("RELEASE_UPGRADER.patch", b"zstd-patch-from"),
    ]
    .concat();
    let pax = Pax::parse(&data).unwrap();
    assert_eq!(pax.path.as_deref(), Some("usr/lib/a/long/name"));
    assert_eq!(pax.uid, Some(42));
    assert_eq!(pax.size, Some(1_234_567_890));
    assert_eq!(pax.gid, None);
    assert_eq!(
        pax.rest,
        [
            ("atime".to_owned(), "1.5".to_owned()),
            (
                "RELEASE_UPGRADER.patch".to_owned(),
                "zstd-patch-from".to_owned()
            )
        ]
    );
    let mut wrong_length = record("path", b"x");
    wrong_length[0] = b'8';
    for bad in [
        wrong_length,
        b"path=x\n".to_vec(),
        record("uid", b"abc"),
        record("mtime", b"soon"),
        record("path", b"\xff"),
        record("RELEASE_UPGRADER.size", b"\xff"),
        record("GNU.sparse.major", b"1"),
    ] {
        assert!(
            Pax::parse(&bad).is_err(),
            "{}",
            String::from_utf8_lossy(&bad)
        );
    }
}

fn archive(entries: &[(Entry, Vec<u8>)]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    for (e, data) in entries {
        w.append(e).unwrap();
        if e.kind == Kind::File {
            w.write_data(data).unwrap();
        }
    }
    w.finish().unwrap()
}

fn read_all(bytes: &[u8]) -> Result<Vec<(Entry, Vec<u8>)>, Error> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while let Some(mut e) = r.next_entry()? {
        let mut data = Vec::new();
        r.read_to_end(&mut data).map_err(Error::Read)?;
        e.path = e.path.trim_end_matches('/').to_owned();
        out.push((e, data));
    }
    r.drain()?;
    Ok(out)
}

fn file(path: &str, data: &[u8]) -> (Entry, Vec<u8>) {
    let mut e = Entry::new(path.into(), Kind::File);
    e.size = data.len() as u64;
    (e, data.to_vec())
}

/// Sets the header checksum of the 512-byte block at `at` to what its bytes sum to.
fn fix_checksum(bytes: &mut [u8], at: usize) {
    let block = &mut bytes[at..at + BLOCK];
    block[148..156].copy_from_slice(b"        ");
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

#[test]
fn writes_what_it_reads_back() {
    let long = format!("system/{}/file", "d".repeat(150));
    let mut file = Entry::new(long.clone(), Kind::File);
    file.size = 5;
    file.uid = 3_000_000; // base-256
    file.mtime = 1_700_000_000;
    file.pax = vec![("RELEASE_UPGRADER.x".into(), "é value".into())];
    let mut link = Entry::new("system/l".into(), Kind::Symlink);
    link.link = "t".repeat(120);
    link.mode = 0o777;
    let mut dev = Entry::new("system/dev/null".into(), Kind::CharDevice);
    dev.dev_major = 1;
    dev.dev_minor = 3;
    let dir = Entry::new("system".into(), Kind::Directory);
    let input = vec![
        (dir, vec![]),
        (file, b"hello".to_vec()),
        (link, vec![]),
        (dev, vec![]),
    ];
    assert_eq!(read_all(&archive(&input)).unwrap(), input);
}

#[test]
fn gnu_tar_lists_what_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::new(Vec::new());
    let mut file = Entry::new(format!("system/{}", "n".repeat(120)), Kind::File);
    file.size = 3;
    file.mode = 0o4755;
    w.append(&file).unwrap();
    w.write_data(b"abc").unwrap();
    let path = dir.path().join("t.tar");
    std::fs::write(&path, w.finish().unwrap()).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-tvf")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("-rwsr-xr-x"), "{text}");
    assert!(text.contains(&"n".repeat(120)), "{text}");
}

#[test]
fn dpkg_flavour_names_root_and_dates_long_name_records() {
    let mut e = Entry::new(format!("./{}", "x".repeat(120)), Kind::File);
    e.mtime = 1_700_000_000;
    let mut w = Writer::dpkg(Vec::new());
    w.append(&e).unwrap();
    let bytes = w.finish().unwrap();
    // The long-name record, then the entry's header: both owned by root by name.
    assert_eq!(&bytes[..13], b"././@LongLink");
    assert_eq!(number(&bytes[136..148]), Some(1_700_000_000));
    let header = &bytes[2 * BLOCK..3 * BLOCK];
    assert_eq!(&header[265..270], b"root\0");
    assert_eq!(&header[297..302], b"root\0");
    let image = archive(&[(e, vec![])]);
    assert_eq!(number(&image[136..148]), Some(0));
}

#[test]
fn a_tampered_header_checksum_is_refused() {
    let mut bytes = archive(&[file("system/a", b"x")]);
    bytes[0] = b'S';
    let err = read_all(&bytes).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
}

#[test]
fn dot_dot_absolute_and_nul_names_are_refused_whatever_spells_them() {
    for (name, reason) in [
        ("system/../etc/passwd", "`..` in path"),
        ("/etc/passwd", "absolute file name"),
        ("..", "`..` in path"),
    ] {
        let err = read_all(&archive(&[file(name, b"x")])).unwrap_err();
        assert!(err.to_string().contains(reason), "{name}: {err}");
    }
    // Through a GNU long name and through a pax path record.
    let long = format!("system/{}/../../../x", "l".repeat(120));
    assert!(read_all(&archive(&[file(&long, b"x")])).is_err());
    let mut pax = file("system/innocent", b"x");
    pax.0.pax = vec![("path".into(), "system/../../etc/shadow".into())];
    let err = read_all(&archive(&[pax])).unwrap_err();
    assert!(err.to_string().contains("`..`"), "{err}");
    let mut nul = file("system/innocent", b"x");
    nul.0.pax = vec![("path".into(), "system/a\0b".into())];
    let err = read_all(&archive(&[nul])).unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
}

#[test]
fn hard_link_targets_that_climb_out_are_refused_and_symlinks_are_left_to_the_caller() {
    let mut hard = Entry::new("system/h".into(), Kind::HardLink);
    hard.link = "system/../../etc/shadow".into();
    let err = read_all(&archive(&[(hard, vec![])])).unwrap_err();
    assert!(err.to_string().contains("hard link target"), "{err}");
    // A symlink's `..` is resolved against where it lies, which only the caller knows.
    let mut sym = Entry::new("system/s".into(), Kind::Symlink);
    sym.link = "../../../etc/shadow".into();
    let read = read_all(&archive(&[(sym.clone(), vec![])])).unwrap();
    assert_eq!(read[0].0.link, sym.link);
}

#[test]
fn base256_numbers_written_for_large_values_read_back() {
    let mut big = file("system/big", b"");
    big.0.uid = 0o7777777 + 1;
    big.0.gid = u64::from(u32::MAX);
    big.0.mtime = 0o77777777777 + 1;
    let read = read_all(&archive(&[big.clone()])).unwrap();
    assert_eq!(read, [big]);
}

#[test]
fn pax_records_override_the_header_fields() {
    let (mut e, _) = file("system/short", b"");
    e.pax = vec![
        ("path".into(), format!("system/{}", "p".repeat(200))),
        ("mtime".into(), "1700000000.5".into()),
        ("uid".into(), "4000000000".into()),
        ("RELEASE_UPGRADER.size".into(), "40".into()),
    ];
    let read = read_all(&archive(&[(e, vec![])])).unwrap();
    let got = &read[0].0;
    assert_eq!(got.path, format!("system/{}", "p".repeat(200)));
    assert_eq!(got.mtime, 1_700_000_000);
    assert_eq!(got.uid, 4_000_000_000);
    assert_eq!(got.pax_value("RELEASE_UPGRADER.size"), Some("40"));
    assert_eq!(got.pax_value("path"), None);
}

#[test]
fn data_on_entries_that_have_none_is_refused() {
    let mut dir = Entry::new("system/d".into(), Kind::Directory);
    dir.pax = vec![("size".into(), "10".into())];
    let err = read_all(&archive(&[(dir, vec![])])).unwrap_err();
    assert!(err.to_string().contains("carrying 10 bytes"), "{err}");
}

#[test]
fn global_pax_headers_and_oversize_extensions_are_refused() {
    let mut bytes = archive(&[file("system/a", b"x")]);
    bytes[156] = b'g';
    fix_checksum(&mut bytes, 0);
    assert!(read_all(&bytes).unwrap_err().to_string().contains("global"));
    let mut bytes = archive(&[file("system/a", b"x")]);
    bytes[156] = b'L';
    bytes[124..136].copy_from_slice(b"77777777777\0");
    fix_checksum(&mut bytes, 0);
    let err = read_all(&bytes).unwrap_err();
    assert!(err.to_string().contains("at most"), "{err}");
}

#[test]
fn order_is_depth_first() {
    let mut paths = vec!["a-c", "a/b", "a", "a/b/c", "b", "a.d"];
    paths.sort_by(|a, b| cmp_paths(a, b));
    assert_eq!(paths, vec!["a", "a/b", "a/b/c", "a-c", "a.d", "b"]);
}

#[test]
fn normalise_refuses_unsafe_names() {
    assert_eq!(normalise("./usr/bin/").unwrap(), "usr/bin");
    assert_eq!(normalise("./").unwrap(), "");
    assert!(normalise("usr/../etc").is_err());
    assert!(normalise("a//b").is_err());
}
