//! Apply time of image deltas: ours against the anchor (system-image's way: delete the
//! `removed` paths, then `tar -xJf` the delta), measured in the same run.
//!
//!   cargo bench --profile dev --bench image_apply          # or --release for a release build
//!   BENCH_SRC=/usr/lib/x86_64-linux-gnu BENCH_MB=200 RUNS=3 cargo bench --bench image_apply
//!
//! The base tree is BENCH_MB of files of at most 2 MiB copied from BENCH_SRC (default: this machine's
//! /usr/lib/<multiarch>); the target changes a few bytes in every tenth file (as a
//! security update does), removes every fiftieth and adds twenty. From them it builds the
//! file-level `delta` (`removed` + changed files, xz -9, as system-image does) and our
//! `zdelta` (changed files as zstd patches against the base, zstd -19 --long). Each
//! figure is the median of RUNS wall-clock (and CPU) times in a tmpfs (/dev/shm), and the results
//! of both applies are compared with the anchor's. Peak RSS is /usr/bin/time's maximum
//! resident set size of our apply process.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ru_client::confine::{RelPath, Tree};
use ru_client::image::commit;
use ru_client::image::overlay::Overlay;
use ru_format::compress::Compression;
use ru_format::digest::Sha256;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--apply") {
        ours(
            Path::new(&args[2]),
            Path::new(&args[3]),
            args[4].parse().unwrap(),
            Path::new(&args[5]),
        );
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    orchestrate();
}

/// Our apply of one tarball to `tree`, as `image apply` does it (digest re-check,
/// staged overlay, verification, sync, commit).
fn ours(tree: &Path, staging: &Path, build: u64, tarball: &Path) {
    let mut f = std::fs::File::open(tarball).unwrap();
    let _ = Sha256::of_reader(&mut f).unwrap();
    let name = tarball.file_name().unwrap().to_str().unwrap();
    let mut overlay = Overlay::new(tree, staging).unwrap();
    let mut partitions = Vec::new();
    overlay
        .apply_tarball(
            tarball,
            Compression::of_image(name).unwrap(),
            name,
            &mut partitions,
        )
        .unwrap();
    overlay.verify(build, "bench").unwrap();
    overlay.sync().unwrap();
    let dest = Tree::open(tree).unwrap();
    let staged = commit::Staging::open(&Tree::open(staging).unwrap()).unwrap();
    let finals = commit::finals_of(&overlay.paths, "bench").unwrap();
    let last = RelPath::new("etc/system-image/channel.ini").unwrap();
    commit::commit(&dest, &staged, finals, Some(&last)).unwrap();
    std::fs::remove_dir_all(staging).unwrap();
}

fn sh(cmd: &mut Command) {
    let status = cmd.status().unwrap();
    assert!(status.success(), "{cmd:?}");
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, std::fs::Metadata)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            out.push((path.clone(), m));
            walk(&e.path(), &path, out);
        } else {
            out.push((path, m));
        }
    }
}

fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut list = Vec::new();
    walk(dir, "", &mut list);
    list.into_iter()
        .filter(|(p, _)| p != "removed")
        .map(|(p, m)| {
            let full = dir.join(&p);
            let v = if m.file_type().is_symlink() {
                format!("l {}", std::fs::read_link(&full).unwrap().display())
            } else if m.is_dir() {
                format!("d {:o}", m.permissions().mode() & 0o7777)
            } else {
                format!(
                    "f {:o} {}",
                    m.permissions().mode() & 0o7777,
                    Sha256::of(&std::fs::read(&full).unwrap())
                )
            };
            (p, v)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn header(path: &str, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).ok();
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

fn orchestrate() {
    let multiarch = String::from_utf8(
        Command::new("gcc")
            .arg("-print-multiarch")
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let default_src = format!("/usr/lib/{}", multiarch.trim());
    let src = PathBuf::from(std::env::var("BENCH_SRC").unwrap_or(default_src));
    let budget: u64 = std::env::var("BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        << 20;
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let shm = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let work = tempfile::Builder::new()
        .prefix("image-bench.")
        .tempdir_in(shm)
        .unwrap();
    let work_path = if std::env::var_os("BENCH_KEEP").is_some() {
        work.keep()
    } else {
        work.path().to_path_buf()
    };
    let w = work_path.as_path();
    let base = w.join("base/system");

    // Base tree: regular files (and symlinks) from src, up to the budget.
    let mut list = Vec::new();
    walk(&src, "", &mut list);
    let mut files = Vec::new();
    let mut total = 0u64;
    for (p, m) in list {
        if total > budget {
            break;
        }
        let to = base.join(&p);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        if m.file_type().is_symlink() {
            let _ = std::os::unix::fs::symlink(std::fs::read_link(src.join(&p)).unwrap(), &to);
        } else if m.is_file() && m.len() <= 2 << 20 {
            if std::fs::copy(src.join(&p), &to).is_ok() {
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
                total += m.len();
                files.push(p);
            }
        } else if m.is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        }
    }
    let ini = |b: u64| format!("[service]\nbuild_number: {b}\n");
    std::fs::create_dir_all(base.join("etc/system-image")).unwrap();
    std::fs::write(base.join("etc/system-image/channel.ini"), ini(1)).unwrap();

    // Target: a few bytes changed in every tenth file, every fiftieth removed, 20 added.
    let mut changed: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut removed = Vec::new();
    for (i, p) in files.iter().enumerate() {
        if i % 50 == 7 {
            removed.push(p.clone());
        } else if i % 10 == 3 {
            let mut data = std::fs::read(base.join(p)).unwrap();
            let mid = data.len() / 2;
            for b in data.iter_mut().skip(mid).take(8) {
                *b ^= 0x5a;
            }
            data.extend_from_slice(b"release-upgrader bench update\n");
            changed.insert(p.clone(), data);
        }
    }
    for (n, p) in files
        .iter()
        .step_by((files.len() / 20).max(1))
        .take(20)
        .enumerate()
    {
        let data = std::fs::read(base.join(p)).unwrap();
        changed.insert(format!("added-{n}/{}", p.replace('/', "_")), data);
    }
    changed.insert("etc/system-image/channel.ini".into(), ini(2).into_bytes());
    let base_of = |p: &str| std::fs::read(base.join(p)).ok();

    // The delta (xz -9) and the zdelta (zstd patches), both tars of system/ members.
    let removed_text: String = removed.iter().map(|p| format!("system/{p}\n")).collect();
    let build_tar = |zdelta: bool| -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header("removed", removed_text.len() as u64, 0o644);
        h.set_cksum();
        b.append(&h, removed_text.as_bytes()).unwrap();
        let mut dirs = std::collections::BTreeSet::new();
        for (p, data) in &changed {
            let mut d = Path::new(p).parent();
            while let Some(dir) = d.filter(|d| !d.as_os_str().is_empty()) {
                if !base.join(dir).is_dir() && dirs.insert(dir.to_path_buf()) {
                    let mut h = header(&format!("system/{}", dir.display()), 0, 0o755);
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_cksum();
                    b.append(&h, std::io::empty()).unwrap();
                }
                d = dir.parent();
            }
            let name = format!("system/{p}");
            match base_of(p).filter(|_| zdelta) {
                Some(old) => {
                    let mut enc =
                        zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), 19, &old)
                            .unwrap();
                    let log =
                        (64 - ((old.len() + data.len()) as u64).leading_zeros()).clamp(10, 31);
                    enc.window_log(log).unwrap();
                    enc.long_distance_matching(true).unwrap();
                    enc.write_all(data).unwrap();
                    let patch = enc.finish().unwrap();
                    let records = [
                        ("RELEASE_UPGRADER.patch", "zstd-patch-from".to_string()),
                        ("RELEASE_UPGRADER.base-sha256", Sha256::of(&old).to_hex()),
                        ("RELEASE_UPGRADER.sha256", Sha256::of(data).to_hex()),
                        ("RELEASE_UPGRADER.size", data.len().to_string()),
                    ];
                    b.append_pax_extensions(records.iter().map(|(k, v)| (*k, v.as_bytes())))
                        .unwrap();
                    let mut h = header(&name, patch.len() as u64, 0o644);
                    h.set_cksum();
                    b.append(&h, patch.as_slice()).unwrap();
                }
                None => {
                    let mut h = header(&name, data.len() as u64, 0o644);
                    h.set_cksum();
                    b.append(&h, data.as_slice()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    };
    let delta = w.join("delta-2.tar.xz");
    {
        let tar = build_tar(false);
        let mut e = liblzma::write::XzEncoder::new(std::fs::File::create(&delta).unwrap(), 9);
        e.write_all(&tar).unwrap();
        e.finish().unwrap();
    }
    let zdelta = w.join("zdelta-2.tar.zst");
    {
        let tar = build_tar(true);
        let mut e =
            zstd::stream::write::Encoder::new(std::fs::File::create(&zdelta).unwrap(), 19).unwrap();
        e.long_distance_matching(true).unwrap();
        e.write_all(&tar).unwrap();
        e.finish().unwrap();
    }
    let removed_list = w.join("removed.list");
    std::fs::write(
        &removed_list,
        removed
            .iter()
            .map(|p| format!("system/{p}\n"))
            .collect::<String>(),
    )
    .unwrap();

    let me = std::env::current_exe().unwrap();
    let fresh = |dir: &Path| {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        sh(Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", w.join("base").display()))
            .arg(dir));
    };
    // Wall seconds, CPU seconds (user + system) and peak RSS (KiB) of one command.
    let timed = |cmd: &mut Command| -> (f64, f64, u64) {
        let out = w.join("time");
        let t = Instant::now();
        let mut wrapped = Command::new("/usr/bin/time");
        wrapped
            .args(["-f", "%U %S %M", "-o"])
            .arg(&out)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        sh(&mut wrapped);
        let wall = t.elapsed().as_secs_f64();
        let text = std::fs::read_to_string(&out).unwrap();
        let f: Vec<f64> = text
            .lines()
            .last()
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        (wall, f[0] + f[1], f[2] as u64)
    };
    let mut samples: [Vec<(f64, f64)>; 3] = Default::default();
    let mut rss = [0u64; 2];
    let mut results = Vec::new();
    for _ in 0..runs {
        let a = w.join("anchor");
        fresh(&a);
        sh(&mut Command::new("sync"));
        let (wall, cpu, _) = timed(Command::new("sh").arg("-c").arg(format!(
            "cd {} && xargs -d '\\n' rm -rf < {} && tar -xJf {}",
            a.display(),
            removed_list.display(),
            delta.display()
        )));
        samples[0].push((wall, cpu));
        for (k, tarball) in [&delta, &zdelta].into_iter().enumerate() {
            let o = w.join("ours");
            fresh(&o);
            sh(&mut Command::new("sync"));
            let (wall, cpu, kb) = timed(
                Command::new(&me)
                    .arg("--apply")
                    .arg(o.join("system"))
                    .arg(w.join("ours/.staging"))
                    .arg("2")
                    .arg(tarball),
            );
            samples[k + 1].push((wall, cpu));
            rss[k] = rss[k].max(kb);
            results.push(snapshot(&o.join("system")));
        }
        let want = snapshot(&a.join("system"));
        for got in results.drain(..) {
            assert!(got == want, "our result differs from the anchor's");
        }
    }
    let med = |i: usize| {
        (
            median(samples[i].iter().map(|s| s.0).collect()),
            median(samples[i].iter().map(|s| s.1).collect()),
        )
    };
    let (anchor, d, z) = (med(0), med(1), med(2));
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    println!(
        "image apply bench: base {} MiB in {} files from {}; {} changed or added, {} removed; {runs} runs, medians",
        total >> 20,
        files.len(),
        src.display(),
        changed.len(),
        removed.len()
    );
    println!("  delta  (xz -9):  {:>10} bytes", size(&delta));
    println!(
        "  zdelta (zstd):   {:>10} bytes ({:.2}x the delta)",
        size(&zdelta),
        size(&zdelta) as f64 / size(&delta) as f64
    );
    println!(
        "  anchor (rm + tar -xJf delta): {:.3} s wall, {:.3} s CPU",
        anchor.0, anchor.1
    );
    for (name, target, ours, kb) in [("delta ", 1.0, d, rss[0]), ("zdelta", 0.5, z, rss[1])] {
        println!(
            "  ours, {name}: {:.3} s wall, {:.3} s CPU; ratio wall {:.2}, CPU {:.2} (target <= {target}); peak RSS {kb} KiB",
            ours.0,
            ours.1,
            ours.0 / anchor.0,
            ours.1 / anchor.1
        );
    }
    println!("  results identical to the anchor's: yes");
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("  kept {}", w.display());
    }
}
