//! Choosing the base of a zdelta patch for a target file that has no regular file at its
//! own path in the base image.
//!
//! Between releases most changed content moves: sonames and versioned directories are
//! renamed (`libstdc++.so.6.0.30` → `.0.33`, `perl-base/5.36/…` → `5.40/…`,
//! `libapt-pkg.so.6.0` → `7.0`), packages are renamed (Debian 13's 64-bit `time_t`
//! transition: `libnettle8` → `libnettle8t64`, and so their `/usr/share/doc` and
//! `/var/lib/dpkg/info` files), and a file may change its extension (`/usr/share/keyrings/
//! debian-archive-keyring.gpg` → `.pgp`), so a same-path-only zdelta ships them whole.
//! The choice is by name alone (the writer still keeps a patch only when it is smaller
//! than the file compressed by itself), so it costs one pass over both images' entry
//! lists:
//!
//! 1. the base files whose path is the same once every version number (digit runs
//!    joined by dots, with a `t64` right after them) is one token,
//! 2. else the base files with the same file name in another directory,
//! 3. else the base files whose file name is the same once version numbers are one token
//!    (and that still has a name of its own, not just digits and punctuation),
//! 4. else the base files in the same directory whose name differs only in its last
//!    extension (with a stem of its own, as in 3),
//!
//! and among those the one nearest in size (then the first by path, for reproducible
//! output).

use std::collections::HashMap;

/// A regular file of an image: its image path and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    pub path: String,
    pub size: u64,
}

/// `path` with every version number (ASCII digit runs joined by dots: `6`, `5.36`,
/// `1.2.3`) replaced by one `#`, so that versions with fewer or more parts match too. A
/// `t64` right after a version, at the end of a name part (`libnettle8t64`,
/// `libdb5.3t64:amd64.list`), is part of it: Debian's 64-bit `time_t` transition renamed
/// the packages so, not their content.
pub fn digits_folded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_digit() {
                i += 1;
            }
            out.push_str(&path[start..i]);
            continue;
        }
        out.push('#');
        loop {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
                i += 1;
            } else {
                break;
            }
        }
        if bytes[i..].starts_with(b"t64")
            && bytes.get(i + 3).is_none_or(|b| !b.is_ascii_alphanumeric())
        {
            i += 3;
        }
    }
    out
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether a file name, folded or cut, still names something: three letters or more
/// (`#.#` or `a#` would match unrelated files).
fn names_something(name: &str) -> bool {
    name.chars().filter(|c| c.is_ascii_alphabetic()).count() >= 3
}

/// `path` without its file name's last extension (`a/keyring.gpg` → `a/keyring`), when the
/// rest still [names something](names_something).
fn without_extension(path: &str) -> Option<&str> {
    let dot = path.rfind('.')?;
    let stem = &path[..dot];
    (dot > path.rfind('/').map_or(0, |s| s + 1) && names_something(file_name(stem))).then_some(stem)
}

/// Candidate base files by each of the four keys.
pub struct BaseIndex {
    by_folded_path: HashMap<String, Vec<usize>>,
    by_name: HashMap<String, Vec<usize>>,
    by_folded_name: HashMap<String, Vec<usize>>,
    by_stem: HashMap<String, Vec<usize>>,
    files: Vec<FileRef>,
}

impl BaseIndex {
    /// Indexes the base image's regular files that may serve as bases.
    pub fn new(files: Vec<FileRef>) -> Self {
        let mut index = BaseIndex {
            by_folded_path: HashMap::new(),
            by_name: HashMap::new(),
            by_folded_name: HashMap::new(),
            by_stem: HashMap::new(),
            files,
        };
        for (i, f) in index.files.iter().enumerate() {
            index
                .by_folded_path
                .entry(digits_folded(&f.path))
                .or_default()
                .push(i);
            let name = file_name(&f.path);
            index.by_name.entry(name.to_owned()).or_default().push(i);
            let folded = digits_folded(name);
            if names_something(&folded) {
                index.by_folded_name.entry(folded).or_default().push(i);
            }
            if let Some(stem) = without_extension(&f.path) {
                index.by_stem.entry(stem.to_owned()).or_default().push(i);
            }
        }
        index
    }

    /// The base for `target` (a file with no base file at its own path), if any.
    pub fn choose(&self, target: &FileRef) -> Option<&FileRef> {
        let name = file_name(&target.path);
        let keys = [
            self.by_folded_path.get(&digits_folded(&target.path)),
            self.by_name.get(name),
            self.by_folded_name.get(&digits_folded(name)),
            without_extension(&target.path).and_then(|stem| self.by_stem.get(stem)),
        ];
        keys.into_iter().flatten().find_map(|candidates| {
            candidates
                .iter()
                .map(|&i| &self.files[i])
                .filter(|f| f.path != target.path)
                .min_by(|a, b| {
                    size_distance(a.size, target.size)
                        .total_cmp(&size_distance(b.size, target.size))
                        .then_with(|| a.path.cmp(&b.path))
                })
        })
    }
}

/// How far apart two sizes are, as the log of their ratio.
fn size_distance(a: u64, b: u64) -> f64 {
    ((a.max(1) as f64) / (b.max(1) as f64)).ln().abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, size: u64) -> FileRef {
        FileRef {
            path: path.into(),
            size,
        }
    }

    #[test]
    fn digit_runs_fold_to_one_token() {
        for (path, folded) in [
            (
                "system/usr/lib/libstdc++.so.6.0.30",
                "system/usr/lib/libstdc++.so.#",
            ),
            ("usr/share/perl/5.36.0/x.pm", "usr/share/perl/#/x.pm"),
            ("python3.11/a1b22.1.gz", "python#/a#b#.gz"),
            ("x.1.", "x.#."),
            (
                "usr/share/doc/libnettle8t64/changelog.gz",
                "usr/share/doc/libnettle#/changelog.gz",
            ),
            (
                "var/lib/dpkg/info/libdb5.3t64:amd64.list",
                "var/lib/dpkg/info/libdb#:amd#.list",
            ),
            // Only a whole `t64` part: not a longer word, not without a version before it.
            ("lib1t64x/a", "lib#t#x/a"),
            ("libt64/a", "libt#/a"),
        ] {
            assert_eq!(digits_folded(path), folded, "{path}");
        }
    }

    #[test]
    fn packages_renamed_for_64_bit_time_find_their_predecessor() {
        let index = BaseIndex::new(vec![
            f("system/usr/share/doc/libnettle8/changelog.gz", 130_000),
            f("system/usr/share/doc/findutils/changelog.gz", 131_000),
            f("system/var/lib/dpkg/info/libnettle8:amd64.symbols", 23_000),
        ]);
        assert_eq!(
            index.choose(&f(
                "system/usr/share/doc/libnettle8t64/changelog.gz",
                133_000
            )),
            Some(&f("system/usr/share/doc/libnettle8/changelog.gz", 130_000))
        );
        assert_eq!(
            index.choose(&f(
                "system/var/lib/dpkg/info/libnettle8t64:amd64.symbols",
                23_500
            )),
            Some(&f(
                "system/var/lib/dpkg/info/libnettle8:amd64.symbols",
                23_000
            ))
        );
    }

    #[test]
    fn a_file_with_another_extension_in_the_same_directory_comes_last() {
        let index = BaseIndex::new(vec![
            f(
                "system/usr/share/keyrings/debian-archive-keyring.gpg",
                50_000,
            ),
            f("system/etc/apt/debian-archive-keyring.asc", 56_000),
            f(
                "system/usr/share/keyrings/debian-archive-keyring.pgp.d",
                56_000,
            ),
            f("system/usr/share/keyrings/x.gpg", 56_000),
        ]);
        assert_eq!(
            index.choose(&f(
                "system/usr/share/keyrings/debian-archive-keyring.pgp",
                56_000
            )),
            Some(&f(
                "system/usr/share/keyrings/debian-archive-keyring.gpg",
                50_000
            )),
            "not another directory's, nor the one with one more extension"
        );
        // A stem without a name of its own (`x`), or a name without an extension: none.
        assert_eq!(
            index.choose(&f("system/usr/share/keyrings/x.pgp", 56_000)),
            None
        );
        assert_eq!(without_extension("system/a.b/README"), None);
        assert_eq!(without_extension("system/.profile"), None);
        assert_eq!(without_extension("system/a/.profile"), None);
    }

    #[test]
    fn renamed_versions_find_their_predecessor_nearest_in_size() {
        let index = BaseIndex::new(vec![
            f("system/lib/libfoo.so.1.2.3", 1000),
            f("system/lib/libfoo.so.1.1", 10),
            f("system/lib/libbar.so.1", 1000),
        ]);
        assert_eq!(
            index.choose(&f("system/lib/libfoo.so.1.2.4", 1100)),
            Some(&f("system/lib/libfoo.so.1.2.3", 1000))
        );
        assert_eq!(
            index.choose(&f("system/lib/libfoo.so.2", 12)),
            Some(&f("system/lib/libfoo.so.1.1", 10))
        );
    }

    #[test]
    fn same_name_in_another_directory_comes_after_the_folded_path() {
        let index = BaseIndex::new(vec![
            f("system/usr/share/perl/5.36/Carp.pm", 500),
            f("system/usr/lib/other/Carp.pm", 500),
            f("system/usr/lib/python3.11/os.py", 300),
        ]);
        assert_eq!(
            index.choose(&f("system/usr/share/perl/5.40/Carp.pm", 500)),
            Some(&f("system/usr/share/perl/5.36/Carp.pm", 500))
        );
        assert_eq!(
            index.choose(&f("system/usr/lib/python/os.py", 300)),
            Some(&f("system/usr/lib/python3.11/os.py", 300))
        );
    }

    #[test]
    fn names_of_digits_only_have_no_folded_name_match() {
        let index = BaseIndex::new(vec![f("system/a/12", 10), f("system/b/x.1", 10)]);
        assert_eq!(index.choose(&f("system/c/13", 10)), None);
        assert_eq!(index.choose(&f("system/c/x.2", 10)), None);
        assert_eq!(
            index.choose(&f("system/c/name.2", 10)),
            None,
            "no candidate shares the name"
        );
        let index = BaseIndex::new(vec![f("system/b/name.1", 10)]);
        assert_eq!(
            index.choose(&f("system/c/name.2", 10)),
            Some(&f("system/b/name.1", 10))
        );
    }
}
