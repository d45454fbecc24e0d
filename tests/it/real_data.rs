//! Real data from this machine: Debian's own InRelease files verify with Debian's
//! archive keyring, and our version order agrees with `dpkg --compare-versions`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ru_client::pocket::ReleaseFile;
use ru_format::version::Version;
use ru_trust::openpgp::{Keyring, verify_clearsigned};

const LISTS: &str = "/var/lib/apt/lists";
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

fn debian_inreleases() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(LISTS) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with("_InRelease") && name.contains("_debian")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn debian_inrelease_files_verify_with_the_archive_keyring() {
    if !Path::new(DEBIAN_KEYRING).exists() {
        eprintln!("skipped: {DEBIAN_KEYRING} is absent (install debian-archive-keyring)");
        return;
    }
    let files = debian_inreleases();
    if files.is_empty() {
        eprintln!("skipped: no Debian InRelease under {LISTS} (run apt-get update)");
        return;
    }
    let keyring = Keyring::load(&[PathBuf::from(DEBIAN_KEYRING)]).unwrap();
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let verified = verify_clearsigned(&keyring, &bytes, &file.display().to_string())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let release = ReleaseFile::parse(std::str::from_utf8(verified.value()).unwrap()).unwrap();
        assert!(!release.files.is_empty(), "{}", file.display());
        assert!(
            verified.value().len() < bytes.len(),
            "signature text must not be returned"
        );

        // Its tampered twin: one byte of the signed text changed.
        let mut tampered = bytes.clone();
        let at = String::from_utf8_lossy(&bytes).find("Codename: ").unwrap() + 10;
        tampered[at] ^= 0x20;
        assert!(
            verify_clearsigned(&keyring, &tampered, "tampered").is_err(),
            "tampered {} verified",
            file.display()
        );
    }
    eprintln!("verified {} Debian InRelease files", files.len());
}

/// Versions from the real Packages indices under /var/lib/apt/lists.
fn real_versions(limit: usize) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(LISTS) else {
        return Vec::new();
    };
    let mut versions = std::collections::BTreeSet::new();
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.contains("_Packages") {
            continue;
        }
        // apt-helper decompresses whatever apt stored (lz4, xz, gz, plain).
        let Ok(out) = Command::new("/usr/lib/apt/apt-helper")
            .arg("cat-file")
            .arg(&path)
            .output()
        else {
            continue;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(v) = line.strip_prefix("Version: ") {
                versions.insert(v.trim().to_owned());
            }
        }
    }
    // A deterministic spread over the sorted set.
    let all: Vec<String> = versions.into_iter().collect();
    let step = (all.len() / limit.max(1)).max(1);
    all.into_iter().step_by(step).take(limit).collect()
}

const EDGE_CASES: &[&str] = &[
    "1.0",
    "1.0~",
    "1.0~~",
    "1.0~rc1",
    "1.0~~a",
    "1.0-1",
    "1.0-1~bpo12+1",
    "1.0-1+deb12u1",
    "1.0+dfsg-1",
    "1:0.9",
    "0:1.0",
    "2:1.0",
    "1.0a",
    "1.0.0",
    "1.00",
    "1.0-0",
    "0",
    "1.0a0",
    "00",
    "1.0+",
    "1.0.",
    "1.2.3-4ubuntu5",
    "1.2.3-4ubuntu5.1",
    "7.0.0-1+b1",
    "99999999999999999999999",
    "99999999999999999999998",
    "1.0-1.1",
    "1.0-1a",
    "3.0.3",
    "3.0.3~rc1",
    "2.41-12",
    "2.41-12+deb13u1",
    "1.22.21",
    "10",
    "9",
];

#[test]
fn version_order_agrees_with_dpkg() {
    if Command::new("dpkg").arg("--version").output().is_err() {
        eprintln!("skipped: dpkg is not available");
        return;
    }
    let mut corpus: Vec<String> = EDGE_CASES.iter().map(|s| s.to_string()).collect();
    let real = real_versions(600);
    if real.is_empty() {
        eprintln!("note: no Packages lists under {LISTS}; checking the edge cases only");
    }
    corpus.extend(real);
    // Pairs: every edge case with every other, and neighbouring real versions.
    let edges = EDGE_CASES.len();
    let mut pairs = Vec::new();
    for i in 0..edges {
        for j in (i + 1)..edges {
            pairs.push((i, j));
        }
    }
    for i in edges..corpus.len().saturating_sub(1) {
        pairs.push((i, i + 1));
        pairs.push((i, (i * 7919) % corpus.len()));
    }
    // One dpkg per pair is slow; a shell loop over a file of pairs keeps it to one fork
    // per comparison but no Rust-side process churn.
    let mut script = String::new();
    for (a, b) in &pairs {
        script.push_str(&format!("{} {}\n", corpus[*a], corpus[*b]));
    }
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("pairs");
    std::fs::write(&list, script).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "while read a b; do \
               if dpkg --compare-versions \"$a\" lt \"$b\"; then echo lt; \
               elif dpkg --compare-versions \"$a\" eq \"$b\"; then echo eq; else echo gt; fi; \
             done < \"$1\"",
        )
        .arg("sh")
        .arg(&list)
        .output()
        .unwrap();
    let answers: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        answers.len(),
        pairs.len(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut mismatches = Vec::new();
    for ((a, b), dpkg) in pairs.iter().zip(&answers) {
        let (va, vb): (Version, Version) =
            (corpus[*a].parse().unwrap(), corpus[*b].parse().unwrap());
        let ours = match va.cmp(&vb) {
            std::cmp::Ordering::Less => "lt",
            std::cmp::Ordering::Equal => "eq",
            std::cmp::Ordering::Greater => "gt",
        };
        if ours != dpkg {
            mismatches.push(format!(
                "{} vs {}: dpkg {dpkg}, ours {ours}",
                corpus[*a], corpus[*b]
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} differ:\n{}",
        mismatches.len(),
        pairs.len(),
        mismatches.join("\n")
    );
    eprintln!("{} version pairs agree with dpkg", pairs.len());
}
