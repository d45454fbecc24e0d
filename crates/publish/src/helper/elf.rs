//! The shared-library closure of programs, read from the ELF files themselves
//! (`PT_INTERP`, `DT_NEEDED`, `DT_RUNPATH`/`DT_RPATH`), resolved inside an unpacked tree
//! the way the dynamic loader would resolve them inside it: what the helpers must ship so
//! that their programs never load a library of the system they run on.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read as _;
use std::path::Path;

use crate::error::Error;

/// The top-level directories that merged-/usr systems keep only under `/usr`.
const USR_MERGED: [&str; 7] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32", "libo32"];

/// The GNU multiarch triplet of a Debian architecture.
pub fn triplet(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "x86_64-linux-gnu",
        "arm64" => "aarch64-linux-gnu",
        "armel" => "arm-linux-gnueabi",
        "armhf" => "arm-linux-gnueabihf",
        "i386" => "i386-linux-gnu",
        "loong64" => "loongarch64-linux-gnu",
        "mips64el" => "mips64el-linux-gnuabi64",
        "mipsel" => "mipsel-linux-gnu",
        "ppc64el" => "powerpc64le-linux-gnu",
        "ppc64" => "powerpc64-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        _ => return None,
    })
}

/// The default library directories of a Debian system of `arch`, in search order,
/// relative to the root.
pub fn default_search(arch: &str) -> Vec<String> {
    let mut dirs = Vec::new();
    if let Some(triplet) = triplet(arch) {
        dirs.push(format!("usr/lib/{triplet}"));
        dirs.push(format!("lib/{triplet}"));
    }
    dirs.extend(["usr/lib".to_owned(), "lib".to_owned()]);
    dirs
}

/// What the dynamic loader reads of an ELF file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfInfo {
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub runpath: Vec<String>,
    pub rpath: Vec<String>,
}

/// Whether the file at `path` starts with the ELF magic.
pub fn is_elf(path: &Path) -> Result<bool, Error> {
    let mut magic = [0u8; 4];
    let mut file = fs_err::File::open(path).map_err(|e| Error::io(path, e))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"\x7fELF"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Reads the dynamic-linking information of the ELF file at `path`.
pub fn read(path: &Path) -> Result<ElfInfo, Error> {
    let bytes = fs_err::read(path).map_err(|e| Error::io(path, e))?;
    let elf = goblin::elf::Elf::parse(&bytes).map_err(|e| Error::Malformed {
        what: path.display().to_string(),
        reason: format!("not a readable ELF file: {e}"),
    })?;
    let split = |list: &[&str]| -> Vec<String> {
        list.iter()
            .flat_map(|entry| entry.split(':'))
            .filter(|dir| !dir.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Ok(ElfInfo {
        interpreter: elf.interpreter.map(str::to_owned),
        needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
        runpath: split(&elf.runpaths),
        rpath: split(&elf.rpaths),
    })
}

/// Splits a path into its normal components, applying `.` and `..` lexically.
fn components(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other.to_owned()),
        }
    }
    out
}

/// Resolves the absolute `path` inside the tree at `root` as a system rooted there would:
/// symlinks are followed inside the tree (an absolute target restarts at `root`), and a
/// top-level `lib`, `bin`, … that the tree lacks is looked up under `usr/` (merged
/// `/usr`). The last component is followed too when `follow_last`. Returns the path
/// relative to `root`, or `None` when nothing is there.
pub fn resolve(root: &Path, path: &str, follow_last: bool) -> Option<String> {
    let mut pending: VecDeque<String> = components(path).into();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            done.pop();
            continue;
        }
        let mut candidate = done.clone();
        candidate.push(part.clone());
        let mut meta = std::fs::symlink_metadata(root.join(candidate.join("/")));
        if meta.is_err() && done.is_empty() && USR_MERGED.contains(&part.as_str()) {
            candidate = vec!["usr".to_owned(), part.clone()];
            meta = std::fs::symlink_metadata(root.join(candidate.join("/")));
        }
        let meta = meta.ok()?;
        let last = pending.is_empty();
        if meta.file_type().is_symlink() && (follow_last || !last) {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(root.join(candidate.join("/"))).ok()?;
            let target = target.to_str()?.to_owned();
            if target.starts_with('/') {
                done.clear();
            } else {
                candidate.pop();
                done = candidate;
            }
            for part in target.split('/').rev() {
                if !part.is_empty() && part != "." {
                    pending.push_front(part.to_owned());
                }
            }
        } else {
            if !last && !meta.is_dir() {
                return None;
            }
            done = candidate;
        }
    }
    Some(done.join("/"))
}

/// A library as the loader finds it: the name in a search directory (often a symlink)
/// and the file it ends at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Library {
    /// `<search dir>/<DT_NEEDED name>`, relative to the root, the directory resolved.
    pub found: String,
    /// The regular file it resolves to, relative to the root.
    pub real: String,
}

/// The closure of a set of ELF files.
#[derive(Clone, Debug, Default)]
pub struct Closure {
    /// The dynamic loaders named by `PT_INTERP`, resolved to regular files.
    pub loaders: BTreeSet<String>,
    /// Every library needed, directly or not, keyed by `found`.
    pub libraries: BTreeMap<String, Library>,
    /// The directories (relative to the root) libraries were found in, in the order
    /// they were searched.
    pub directories: Vec<String>,
}

/// Computes the library closure of the ELF files `programs` (paths relative to `root`)
/// inside the tree at `root`, searching each file's `DT_RPATH`/`DT_RUNPATH` (with
/// `$ORIGIN`) and then `search` (relative to the root; see [`default_search`]). A library
/// that cannot be found is an error naming it and the file that needs it.
pub fn closure(root: &Path, programs: &[String], search: &[String]) -> Result<Closure, Error> {
    let mut out = Closure::default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<String> = programs.iter().cloned().collect();
    let mut directories: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    while let Some(file) = queue.pop_front() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let path = root.join(&file);
        let info = read(&path)?;
        if let Some(interp) = &info.interpreter {
            let real = resolve(root, interp, true).ok_or_else(|| Error::Config {
                path: path.clone(),
                reason: format!("its dynamic loader {interp} is not in the unpacked packages"),
            })?;
            out.loaders.insert(real.clone());
            queue.push_back(real);
        }
        // DT_RPATH (without DT_RUNPATH) is searched before the loader's --library-path:
        // an absolute one would let the system's libraries in first.
        if info.runpath.is_empty()
            && let Some(dir) = info
                .rpath
                .iter()
                .find(|d| !d.starts_with("$ORIGIN") && !d.starts_with("${ORIGIN}"))
        {
            return Err(Error::Config {
                path: path.clone(),
                reason: format!(
                    "has DT_RPATH {dir}, which the loader searches before the bundled \
                         libraries; it cannot be relocated"
                ),
            });
        }
        let origin = file.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned();
        let own_dirs: Vec<String> = info
            .rpath
            .iter()
            .chain(&info.runpath)
            .map(|dir| {
                dir.replace("${ORIGIN}", &format!("/{origin}"))
                    .replace("$ORIGIN", &format!("/{origin}"))
            })
            .collect();
        for name in &info.needed {
            let candidates: Vec<String> = if name.contains('/') {
                vec![name.clone()]
            } else {
                own_dirs
                    .iter()
                    .map(String::as_str)
                    .chain(search.iter().map(String::as_str))
                    .map(|dir| format!("{}/{name}", dir.trim_end_matches('/')))
                    .collect()
            };
            let hit = candidates.iter().enumerate().find_map(|(rank, candidate)| {
                let real = resolve(root, candidate, true)?;
                let meta = std::fs::metadata(root.join(&real)).ok()?;
                if !meta.is_file() {
                    return None;
                }
                let found = resolve(root, candidate, false)?;
                Some((rank, found, real))
            });
            let Some((rank, found, real)) = hit else {
                return Err(Error::Config {
                    path: path.clone(),
                    reason: format!(
                        "needs the library {name}, which none of the unpacked packages \
                         provides (searched {})",
                        candidates.join(", ")
                    ),
                });
            };
            let dir = found.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned();
            let order = directories.len();
            directories.entry(dir).or_insert((rank, order));
            out.libraries.entry(found.clone()).or_insert(Library {
                found,
                real: real.clone(),
            });
            queue.push_back(real);
        }
    }
    let mut dirs: Vec<(String, (usize, usize))> = directories.into_iter().collect();
    dirs.sort_by_key(|(_, key)| *key);
    out.directories = dirs.into_iter().map(|(dir, _)| dir).collect();
    Ok(out)
}

/// `path` relative to the directory `from` (both relative to the same root, normalized).
pub fn relative(from_dir: &str, path: &str) -> String {
    let from = components(from_dir);
    let to = components(path);
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; from.len() - common];
    parts.extend(to[common..].iter().map(String::as_str));
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_apt_get_needs_libapt_pkg_libc_and_the_loader() {
        let arch = ru_client::task::Task::plain("dpkg")
            .arg("--print-architecture")
            .output()
            .unwrap();
        let arch = String::from_utf8(arch).unwrap().trim().to_owned();
        let root = Path::new("/");
        let closure = closure(
            root,
            &["usr/bin/apt-get".to_owned()],
            &default_search(&arch),
        )
        .unwrap();
        let names: Vec<&str> = closure
            .libraries
            .keys()
            .map(|found| found.rsplit('/').next().unwrap())
            .collect();
        assert!(
            names.iter().any(|n| n.starts_with("libapt-pkg.so.")),
            "{names:?}"
        );
        assert!(names.contains(&"libc.so.6"), "{names:?}");
        assert!(
            names.iter().any(|n| n.starts_with("libstdc++.so.")),
            "{names:?}"
        );
        // Indirect: libapt-pkg needs these, apt-get does not.
        let direct = read(Path::new("/usr/bin/apt-get")).unwrap().needed;
        assert!(
            names.iter().any(|n| !direct.iter().any(|d| d == n)),
            "nothing indirect: {names:?}"
        );
        assert_eq!(closure.loaders.len(), 1, "{:?}", closure.loaders);
        let loader = closure.loaders.iter().next().unwrap();
        assert!(loader.contains("ld-linux"), "{loader}");
        assert!(std::fs::metadata(root.join(loader)).unwrap().is_file());
        for library in closure.libraries.values() {
            assert!(
                std::fs::metadata(root.join(&library.real))
                    .unwrap()
                    .is_file()
            );
            assert!(
                closure
                    .directories
                    .iter()
                    .any(|d| library.found.starts_with(d.as_str()))
            );
        }
    }

    #[test]
    fn a_missing_library_names_itself_and_its_user() {
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        std::fs::create_dir_all(t.join("usr/bin")).unwrap();
        std::fs::copy("/usr/bin/apt-get", t.join("usr/bin/apt-get")).unwrap();
        let search = default_search("amd64");
        let programs = ["usr/bin/apt-get".to_owned()];
        let err = closure(t, &programs, &search).unwrap_err().to_string();
        assert!(err.contains("usr/bin/apt-get"), "{err}");
        assert!(err.contains("dynamic loader"), "{err}");
        // With the loader in place, the first library is what is missing.
        let interp = read(Path::new("/usr/bin/apt-get"))
            .unwrap()
            .interpreter
            .unwrap();
        let dest = t.join(interp.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(std::fs::canonicalize(&interp).unwrap(), &dest).unwrap();
        let err = closure(t, &programs, &search).unwrap_err().to_string();
        assert!(err.contains("usr/bin/apt-get"), "{err}");
        assert!(err.contains("needs the library libapt-"), "{err}");
    }

    #[test]
    fn resolution_follows_links_inside_the_tree_and_merged_usr() {
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        std::fs::create_dir_all(t.join("usr/lib/x")).unwrap();
        std::fs::create_dir_all(t.join("usr/lib64")).unwrap();
        std::fs::write(t.join("usr/lib/x/ld.so.2"), b"").unwrap();
        std::os::unix::fs::symlink("/usr/lib/x/ld.so.2", t.join("usr/lib64/ld.so.2")).unwrap();
        std::os::unix::fs::symlink("ld.so.2", t.join("usr/lib/x/ld.so")).unwrap();
        assert_eq!(
            resolve(t, "/lib64/ld.so.2", true).as_deref(),
            Some("usr/lib/x/ld.so.2")
        );
        assert_eq!(
            resolve(t, "/lib64/ld.so.2", false).as_deref(),
            Some("usr/lib64/ld.so.2")
        );
        assert_eq!(
            resolve(t, "/usr/lib/x/ld.so", true).as_deref(),
            Some("usr/lib/x/ld.so.2")
        );
        assert_eq!(
            resolve(t, "/usr/lib/../lib/x/ld.so", true).as_deref(),
            Some("usr/lib/x/ld.so.2")
        );
        assert_eq!(resolve(t, "/lib/nothing", true), None);
        // A link out of the tree stays in it.
        std::os::unix::fs::symlink("../../../../../etc", t.join("usr/lib/x/escape")).unwrap();
        assert_eq!(resolve(t, "/usr/lib/x/escape/passwd", true), None);
        assert_eq!(
            relative("usr/lib64", "usr/lib/x/ld.so.2"),
            "../lib/x/ld.so.2"
        );
        assert_eq!(relative("usr/lib/x", "usr/lib/x/ld.so.2"), "ld.so.2");
    }
}
