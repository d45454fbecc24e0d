//! Two tiny releases ("alpha" and "beta") of a made-up distribution, built as real .deb
//! packages with `dpkg-deb`, and a throwaway root with the old one installed by `dpkg`.
//!
//! The packages exercise what a release upgrade meets: a shell for maintainer scripts, an
//! `os-release` that changes, a program that gets a new version, a configuration file the
//! user edited (kept, as `--force-confold` does), a package that only the old release has
//! (obsolete afterwards) and one that only the new release has (pulled in by a
//! dependency).

use ru_client::task::Task;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The distribution's `os-release` ID, and so its keyring name.
pub const DISTRO_ID: &str = "demo";
pub const OLD: (&str, &str) = ("alpha", "1");
pub const NEW: (&str, &str) = ("beta", "2");

/// One package to build.
#[derive(Clone, Debug)]
pub struct TinyPackage {
    pub name: String,
    pub version: String,
    pub depends: String,
    /// (absolute path, content, mode)
    pub files: Vec<(String, Vec<u8>, u32)>,
    pub conffiles: Vec<String>,
    pub postinst: Option<String>,
    pub description: String,
    /// More control fields (`Essential`, `Conflicts`, …).
    pub fields: Vec<(String, String)>,
}

impl TinyPackage {
    fn new(name: &str, version: &str, description: &str) -> Self {
        TinyPackage {
            name: name.into(),
            version: version.into(),
            depends: String::new(),
            files: Vec::new(),
            conffiles: Vec::new(),
            postinst: None,
            description: description.into(),
            fields: Vec::new(),
        }
    }

    fn file(mut self, path: &str, content: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push((path.into(), content.into(), mode));
        self
    }
}

/// The host programs and libraries a minimal shell needs (its ELF closure, by `ldd`).
fn shell_files() -> Result<Vec<(String, Vec<u8>, u32)>, Error> {
    let shell = std::fs::canonicalize("/bin/sh").map_err(|e| Error::io("/bin/sh", e))?;
    let out = Task::plain("ldd").arg(&shell).output_unchecked()?;
    let mut paths: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let word = line.split("=>").last()?.split_whitespace().next()?;
            word.starts_with('/').then(|| PathBuf::from(word))
        })
        .collect();
    paths.sort();
    paths.dedup();
    let mut files = Vec::new();
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p, e));
    files.push(("/bin/sh".to_owned(), read(&shell)?, 0o755));
    for path in paths {
        // The loader is found by its well-known name; libraries by the multiarch path.
        let real = std::fs::canonicalize(&path).map_err(|e| Error::io(&path, e))?;
        files.push((path.display().to_string(), read(&real)?, 0o755));
    }
    Ok(files)
}

/// The packages of one release. `archive_uri` is where its apt sources point; `keyring` is
/// the distribution's public keyring, shipped in `demo-base` as Debian ships
/// `debian-archive-keyring`.
pub fn release(
    codename: &str,
    version: &str,
    archive_uri: &str,
    keyring: &[u8],
) -> Result<Vec<TinyPackage>, Error> {
    let old = codename == OLD.0;
    let mut shell = TinyPackage::new(
        "demo-sh",
        version,
        "a shell for maintainer scripts (the host's dash)",
    );
    shell.files = shell_files()?;
    let os_release = format!(
        "PRETTY_NAME=\"Demo Linux {version} ({codename})\"\nNAME=\"Demo Linux\"\nVERSION_ID=\"{version}\"\n\
         VERSION=\"{version} ({codename})\"\nVERSION_CODENAME={codename}\nID={DISTRO_ID}\n"
    );
    let sources =
        format!("Types: deb\nURIs: {archive_uri}\nSuites: {codename}\nComponents: main\n");
    let mut base = TinyPackage::new("demo-base", version, "the base of Demo Linux")
        .file("/etc/os-release", os_release, 0o644)
        .file("/etc/apt/sources.list.d/demo.sources", sources, 0o644)
        .file(
            &format!("/usr/share/keyrings/{DISTRO_ID}-archive-keyring.gpg"),
            keyring,
            0o644,
        )
        .file("/etc/apt/trusted.gpg.d/demo-archive.gpg", keyring, 0o644);
    base.conffiles
        .push("/etc/apt/sources.list.d/demo.sources".into());
    base.depends = if old {
        "demo-sh".into()
    } else {
        "demo-sh (>= 2), demo-newtool".into()
    };
    let hello_version = if old { "1.0-1" } else { "2.0-1" };
    let hello = TinyPackage {
        postinst: Some(format!(
            "#!/bin/sh\nset -e\necho \"demo-hello {hello_version} configured ($1)\"\n"
        )),
        ..TinyPackage::new("demo-hello", hello_version, "greets").file(
            "/usr/bin/hello",
            format!("#!/bin/sh\necho \"Hello from Demo Linux {codename}\"\n"),
            0o755,
        )
    };
    let mut conf = TinyPackage::new("demo-conf", hello_version, "ships a configuration file").file(
        "/etc/demo.conf",
        format!(
            "# demo.conf as shipped in {codename}\ncolour = {}\n",
            if old { "blue" } else { "green" }
        ),
        0o644,
    );
    conf.conffiles.push("/etc/demo.conf".into());
    let mut packages = vec![shell, base, hello, conf];
    if old {
        packages.push(
            TinyPackage::new("demo-legacy", "1.0", "only in the old release").file(
                "/usr/share/demo-legacy/README",
                "gone in beta\n",
                0o644,
            ),
        );
    } else {
        packages.push(TinyPackage::new("demo-newtool", "1.0", "new in beta").file(
            "/usr/bin/newtool",
            "#!/bin/sh\necho new in beta\n",
            0o755,
        ));
    }
    Ok(packages)
}

/// Builds `package` with `dpkg-deb --build` into `out` and returns the deb's path.
pub fn build(package: &TinyPackage, work: &Path, out: &Path) -> Result<PathBuf, Error> {
    let tree = work.join(format!("{}-{}", package.name, package.version));
    let _ = std::fs::remove_dir_all(&tree);
    let debian = tree.join("DEBIAN");
    fs_err::create_dir_all(&debian).map_err(|e| Error::io(&debian, e))?;
    let write = |path: &Path, content: &[u8], mode: u32| -> Result<(), Error> {
        if let Some(dir) = path.parent() {
            fs_err::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        fs_err::write(path, content).map_err(|e| Error::io(path, e))?;
        fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(path, e))
    };
    for (path, content, mode) in &package.files {
        write(&tree.join(path.trim_start_matches('/')), content, *mode)?;
    }
    let mut control = format!(
        "Package: {}\nVersion: {}\nArchitecture: all\nMaintainer: Demo <demo@invalid>\n",
        package.name, package.version
    );
    if !package.depends.is_empty() {
        control.push_str(&format!("Depends: {}\n", package.depends));
    }
    for (k, v) in &package.fields {
        control.push_str(&format!("{k}: {v}\n"));
    }
    control.push_str(&format!("Description: {}\n", package.description));
    write(&debian.join("control"), control.as_bytes(), 0o644)?;
    if !package.conffiles.is_empty() {
        write(
            &debian.join("conffiles"),
            (package.conffiles.join("\n") + "\n").as_bytes(),
            0o644,
        )?;
    }
    if let Some(script) = &package.postinst {
        write(&debian.join("postinst"), script.as_bytes(), 0o755)?;
    }
    let deb = out.join(format!("{}_{}_all.deb", package.name, package.version));
    fs_err::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    Task::plain("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(&deb)
        .output()?;
    Ok(deb)
}

/// Runs a program, failing with its stderr; returns its stdout.
pub(crate) fn run(task: &mut Task) -> Result<String, Error> {
    Ok(String::from_utf8_lossy(&task.output()?).into_owned())
}

/// Installs `debs` into an empty root with dpkg, as an installer would: the shell first
/// (no scripts), then everything else.
pub fn install_root(root: &Path, debs: &[PathBuf]) -> Result<(), Error> {
    for dir in [
        "var/lib/dpkg/updates",
        "var/lib/dpkg/info",
        "var/log",
        "tmp",
        "etc/apt/apt.conf.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "usr/lib",
        "run",
    ] {
        let path = root.join(dir);
        fs_err::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        let path = root.join(file);
        if !path.exists() {
            fs_err::write(&path, "").map_err(|e| Error::io(&path, e))?;
        }
    }
    let dpkg = |args: &[&Path]| {
        run(Task::plain("dpkg")
            .arg(format!("--root={}", root.display()))
            .arg(format!("--log={}", root.join("var/log/dpkg.log").display()))
            .args(["--force-depends", "-i"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    let (shell, rest): (Vec<&PathBuf>, Vec<&PathBuf>) = debs.iter().partition(|d| {
        d.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("demo-sh_"))
    });
    let shell: Vec<&Path> = shell.iter().map(|p| p.as_path()).collect();
    let rest: Vec<&Path> = rest.iter().map(|p| p.as_path()).collect();
    dpkg(&shell)?;
    dpkg(&rest)?;
    Ok(())
}
