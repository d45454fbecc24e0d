//! Entry names and link targets, checked and resolved lexically, without looking at the
//! file system: the archive is the only input, so every decision about where something
//! lands is made from its text before anything is written.

/// The longest entry name accepted, in bytes (Linux's `PATH_MAX` less the NUL). Nothing
/// longer can be created through a path anyway, and it bounds the work per entry.
pub const MAX_NAME: usize = 4095;

/// Normalizes an archive entry name to a relative path with no leading `./`, no trailing
/// `/`, and no empty or `.` components. The archive's root (`./`) normalizes to `""`.
///
/// Refuses what could leave the destination or confuse a manifest: absolute names, `..`,
/// newlines (dpkg refuses them too), empty names and overlong ones.
pub fn normalize(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("empty file name".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("file name longer than {MAX_NAME} bytes"));
    }
    if name.starts_with('/') {
        return Err("absolute file name".into());
    }
    if name.contains('\n') {
        return Err("newline in file name".into());
    }
    let mut out = String::with_capacity(name.len());
    for component in name.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err("`..` in file name".into()),
            c => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(c);
            }
        }
    }
    Ok(out)
}

/// Where a normalized archive path falls relative to the directory the data must lie
/// under (`within`, normalized, no trailing `/`).
#[derive(Debug, PartialEq, Eq)]
pub enum Placement<'a> {
    /// A proper ancestor of `within` (`""`, `usr`, `usr/lib`): accepted only as a
    /// directory, and not extracted.
    Ancestor,
    /// `within` itself: it maps onto the destination directory.
    Root,
    /// Below `within`; the path relative to it.
    Inside(&'a str),
    /// Anywhere else.
    Outside,
}

/// Places a normalized archive `path` relative to `within` (`""` means the archive's root).
pub fn place<'a>(path: &'a str, within: &str) -> Placement<'a> {
    if path == within {
        return Placement::Root;
    }
    if within.is_empty() {
        return Placement::Inside(path);
    }
    if let Some(rest) = path.strip_prefix(within).and_then(|r| r.strip_prefix('/')) {
        return Placement::Inside(rest);
    }
    if path.is_empty()
        || within
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('/'))
    {
        return Placement::Ancestor;
    }
    Placement::Outside
}

/// The directory part of a normalized path (`""` for a top-level name).
pub fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// The last component of a normalized path.
pub fn file_name(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

/// Resolves a symlink's target lexically and checks that it stays under `within`.
///
/// `link` is the link's normalized archive path, `within` the normalized directory links
/// must stay in (`""`: the archive's root). An absolute target is taken as a path on the
/// installed system (the archive's root is `/`); a relative one is joined to the link's
/// directory. Returns the archive path the target names.
///
/// Lexical resolution is sound only if no `..` ever steps back out of another symlink:
/// `a/../x` through a link `a -> deep/dir` lands elsewhere than the text says. So `..`
/// is accepted only as leading components of a relative target, where it climbs the real
/// directories that hold the link; everywhere else it is refused.
pub fn resolve_symlink(link: &str, target: &str, within: &str) -> Result<String, String> {
    if target.is_empty() {
        return Err("empty symlink target".into());
    }
    let (mut resolved, rest): (Vec<&str>, &str) = match target.strip_prefix('/') {
        Some(rest) => (Vec::new(), rest),
        None => (
            parent(link).split('/').filter(|c| !c.is_empty()).collect(),
            target,
        ),
    };
    let absolute = target.starts_with('/');
    let mut climbing = !absolute;
    for component in rest.split('/') {
        match component {
            "" | "." => {}
            ".." if climbing => {
                if resolved.pop().is_none() {
                    return Err(format!(
                        "symlink target {target:?} climbs above the archive's root"
                    ));
                }
            }
            ".." => {
                return Err(format!(
                    "symlink target {target:?} has `..` after a path component \
                     (it could resolve through another link)"
                ));
            }
            c => {
                climbing = false;
                resolved.push(c);
            }
        }
    }
    let resolved = resolved.join("/");
    match place(&resolved, within) {
        Placement::Root | Placement::Inside(_) => Ok(resolved),
        Placement::Ancestor | Placement::Outside => Err(format!(
            "symlink target {target:?} resolves to /{resolved}, outside /{within}/"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "usr/lib/release-upgrader";

    #[test]
    fn names_normalize_to_relative_paths_without_dots_or_slashes() {
        for (name, want) in [
            ("./usr/bin/dpkg", "usr/bin/dpkg"),
            ("usr/bin/dpkg", "usr/bin/dpkg"),
            ("./usr/share/doc/", "usr/share/doc"),
            ("././usr//lib/./x", "usr/lib/x"),
            ("./", ""),
            (".", ""),
            ("./.hidden", ".hidden"),
            ("a/..b/c..", "a/..b/c.."),
        ] {
            assert_eq!(normalize(name).as_deref(), Ok(want), "{name:?}");
        }
    }

    #[test]
    fn names_that_could_escape_or_confuse_are_refused() {
        for (name, why) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("//etc", "absolute"),
            ("../etc/passwd", "`..`"),
            ("./usr/../../etc", "`..`"),
            ("usr/lib/..", "`..`"),
            ("usr/lib/x\ny", "newline"),
        ] {
            let err = normalize(name).unwrap_err();
            assert!(err.contains(why), "{name:?}: {err}");
        }
        assert!(
            normalize(&"a/".repeat(2048))
                .unwrap_err()
                .contains("longer")
        );
        assert!(normalize(&"a/".repeat(2047)).is_ok());
    }

    #[test]
    fn placement_distinguishes_ancestors_root_inside_and_outside() {
        use Placement::*;
        assert_eq!(place("", PREFIX), Ancestor);
        assert_eq!(place("usr", PREFIX), Ancestor);
        assert_eq!(place("usr/lib", PREFIX), Ancestor);
        assert_eq!(place(PREFIX, PREFIX), Root);
        assert_eq!(
            place("usr/lib/release-upgrader/bin/apt", PREFIX),
            Inside("bin/apt")
        );
        assert_eq!(place("usr/lib/release-upgrader-evil", PREFIX), Outside);
        assert_eq!(place("usr/lib/release-upgrade", PREFIX), Outside);
        assert_eq!(place("us", PREFIX), Outside);
        assert_eq!(place("etc", PREFIX), Outside);
        assert_eq!(place("", ""), Root);
        assert_eq!(place("etc/x", ""), Inside("etc/x"));
    }

    #[test]
    fn parent_and_file_name_split_at_the_last_slash() {
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(file_name("a/b/c"), "c");
        assert_eq!(parent("c"), "");
        assert_eq!(file_name("c"), "c");
    }

    #[test]
    fn symlinks_inside_the_prefix_resolve() {
        let link = "usr/lib/release-upgrader/root/usr/lib/x86_64-linux-gnu/libz.so";
        for (target, want) in [
            (
                "libz.so.1",
                "usr/lib/release-upgrader/root/usr/lib/x86_64-linux-gnu/libz.so.1",
            ),
            (
                "./libz.so.1",
                "usr/lib/release-upgrader/root/usr/lib/x86_64-linux-gnu/libz.so.1",
            ),
            (
                "../../../bin/dpkg",
                "usr/lib/release-upgrader/root/bin/dpkg",
            ),
            ("../../../..", PREFIX),
            (
                "/usr/lib/release-upgrader/bin/apt",
                "usr/lib/release-upgrader/bin/apt",
            ),
            ("/usr/lib/release-upgrader/", PREFIX),
            (
                "//usr/lib/./release-upgrader//bin",
                "usr/lib/release-upgrader/bin",
            ),
        ] {
            assert_eq!(
                resolve_symlink(link, target, PREFIX).as_deref(),
                Ok(want),
                "{target:?}"
            );
        }
    }

    #[test]
    fn symlinks_leaving_the_prefix_are_refused() {
        let link = "usr/lib/release-upgrader/bin/apt";
        for (target, why) in [
            ("/usr/bin/apt", "outside"),
            ("/etc/passwd", "outside"),
            ("/", "outside"),
            ("/usr/lib/release-upgrader-evil/x", "outside"),
            ("/usr/lib/release-upgrader/../../../etc", "`..` after"),
            ("../..", "outside"),
            ("../../../../../../../etc/passwd", "climbs above"),
            ("../../bin/apt", "outside"),
            ("sub/../../../x", "`..` after"),
            ("up/../x", "`..` after"),
            ("", "empty"),
        ] {
            let err = resolve_symlink(link, target, PREFIX).unwrap_err();
            assert!(err.contains(why), "{target:?}: {err}");
        }
    }

    #[test]
    fn without_a_prefix_links_only_have_to_stay_in_the_archive() {
        assert_eq!(
            resolve_symlink("usr/bin/x", "/etc/alternatives/x", "").as_deref(),
            Ok("etc/alternatives/x")
        );
        assert_eq!(
            resolve_symlink("usr/bin/x", "../../x", "").as_deref(),
            Ok("x")
        );
        assert!(resolve_symlink("usr/bin/x", "../../../x", "").is_err());
    }
}
