//! The demo itself: everything a distribution and a user do, on one machine, offline, in a
//! temporary directory. A key is generated; two tiny releases are built and published in
//! a signed archive; this machine's own apt and dpkg are repacked into a signed archive
//! and turned into relocated helper packages by the publisher's `helper build`; those are
//! signed into a pocket and announced by a signed meta-release; everything is served on
//! 127.0.0.1; the old release is installed into a throwaway root with dpkg; then
//! `release-upgrader --root ROOT upgrade` runs the real flow against it.

use ru_client::task::Task;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::date;
use crate::error::Error;
use crate::fetch::{FetchConfig, Fetcher, Location};
use crate::fsutil;
use crate::openpgp::Keyring;
use ru_publish::SigningKey;
use ru_publish::archive::{self, ArchiveRelease};
use ru_publish::helper::{self, BuildRequest, DebCompression, recipe::Recipe};
use ru_publish::metarelease::{self, Stanza};
use ru_publish::pocket::{self, PocketEntry};
use ru_testing::serve::Server;

use super::{repack, tiny};

/// The recipe the demo builds its helpers with: the one committed for Debian.
const RECIPE: &str = include_str!("../../../helpers/debian.toml");

/// What the demo's user adds to `/etc/demo.conf` before the upgrade.
const USER_EDIT: &str = "colour = red # the user's choice\n";

/// The codename under which the demo publishes this machine's repacked packages.
const HOST_RELEASE: &str = "host";

/// The version of the core helper the demo publishes for Demo Linux 2: the running
/// client's own, plus a suffix that Debian orders after it, so the client hands over.
pub fn core_version() -> String {
    format!("{}+demo2", env!("CARGO_PKG_VERSION"))
}

/// What the demo is told to do.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The directory to work in (created if missing; must be empty).
    pub dir: PathBuf,
    /// The `release-upgrader` binary that performs the upgrade.
    pub client: PathBuf,
    /// Answer nothing: pass `-y -f noninteractive` to the upgrade.
    pub noninteractive: bool,
    /// Debian architecture of this machine.
    pub arch: String,
}

/// The steps, announced as they start.
pub trait Steps {
    fn step(&mut self, number: usize, total: usize, what: &str);
    fn detail(&mut self, text: &str);
}

/// What the demo leaves for the caller to show.
#[derive(Clone, Debug)]
pub struct DemoOutcome {
    pub root: PathBuf,
    pub before: String,
    pub after: String,
    /// Exit code of the upgrade.
    pub upgrade_code: i32,
    pub helpers_left: bool,
    pub seconds: f64,
}

const TOTAL: usize = 8;

/// Runs the demo in `options.dir`.
pub fn run(options: &DemoOptions, steps: &mut dyn Steps) -> Result<DemoOutcome, Error> {
    let started = Instant::now();
    let dir = &options.dir;
    fs_err::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if fs_err::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .next()
        .is_some()
    {
        return Err(Error::Config {
            path: dir.clone(),
            reason: "the demo's directory must be empty (it builds everything in it)".into(),
        });
    }
    let srv = dir.join("srv");
    let work = dir.join("work");
    let root = dir.join("root");
    for d in [&srv, &work] {
        fs_err::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }

    steps.step(1, TOTAL, "generating the distribution's signing key");
    let key = SigningKey::generate("Demo Linux archive signing key", None)?;
    key.write_to(&dir.join("key"))?;
    let keyring_path = dir.join("key/keyring.gpg");
    steps.detail(&format!("key {}", key.fingerprint()));

    let server = Server::start(&srv).map_err(|e| Error::io(&srv, e))?;
    let url = server.url();
    let archive_uri = format!("{url}archive");

    steps.step(
        2,
        TOTAL,
        "building Demo Linux 1 (alpha) and 2 (beta) as .deb packages and publishing them",
    );
    let mut old_debs = Vec::new();
    for (codename, version) in [tiny::OLD, tiny::NEW] {
        let packages = tiny::release(codename, version, &archive_uri, &key.public_keyring())?;
        let out = work.join(format!("debs-{codename}"));
        let debs = packages
            .iter()
            .map(|p| tiny::build(p, &work, &out))
            .collect::<Result<Vec<_>, _>>()?;
        steps.detail(&format!(
            "{codename}: {}",
            packages
                .iter()
                .map(|p| format!("{} {}", p.name, p.version))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        archive::write(
            &srv.join("archive"),
            &ArchiveRelease {
                spec: archive::spec("Demo", codename, &options.arch, date::now() - 60, 7),
                version: Some(version.into()),
                component: "main".into(),
                debs: debs.clone(),
            },
            &key,
        )?;
        if codename == tiny::OLD.0 {
            old_debs = debs;
        }
    }

    steps.step(
        3,
        TOTAL,
        "repacking this machine's apt, dpkg, tar, gpgv and their libraries into a signed archive",
    );
    let recipe = Recipe::parse(RECIPE).map_err(|reason| Error::Config {
        path: "helpers/debian.toml".into(),
        reason,
    })?;
    let mut roots: Vec<&str> = Vec::new();
    for h in &recipe.helpers {
        for name in h.upstream.iter().chain([&h.version_from]) {
            if !roots.contains(&name.as_str()) {
                roots.push(name);
            }
        }
    }
    let names = repack::closure(&roots)?;
    let host_debs = repack_all(&names, &work)?;
    steps.detail(&format!("{} packages repacked", host_debs.len()));
    let host_archive = dir.join("host-archive");
    archive::write(
        &host_archive,
        &ArchiveRelease {
            spec: archive::spec(
                "This machine",
                HOST_RELEASE,
                &options.arch,
                date::now() - 60,
                7,
            ),
            version: None,
            component: recipe.component.clone(),
            debs: host_debs,
        },
        &key,
    )?;

    steps.step(
        4,
        TOTAL,
        "building relocated helper packages with `helper build` (ELF closure, loader wrappers) \
         and Demo Linux 2's own upgrader (release-upgrader-core)",
    );
    let helper_out = dir.join("helpers");
    let keyring = Keyring::load(std::slice::from_ref(&keyring_path))?;
    let fetcher = Fetcher::new(FetchConfig::new(format!(
        "release-upgrader/{} (demo)",
        env!("CARGO_PKG_VERSION")
    )));
    let location = Location::parse(&host_archive.display().to_string())?;
    let built = helper::build(
        &fetcher,
        &BuildRequest {
            recipe: &recipe,
            release: HOST_RELEASE,
            archive: &location,
            arch: &options.arch,
            out: &helper_out,
            keyring: &keyring,
            cache: &work.join("cache"),
            source_date_epoch: None,
            // Seconds matter more than bytes here: the pocket is read from 127.0.0.1.
            compression: DebCompression::Zstd(3),
            // The upgrader of Demo Linux 2 is newer than the one running the upgrade, so it
            // takes over after the bootstrap.
            core: Some(helper::CoreRequest {
                binary: &options.client,
                version: Some(&core_version()),
            }),
        },
    )?;
    for deb in &built {
        steps.detail(&format!(
            "{} {} ({} files, {} KiB)",
            deb.package,
            deb.version,
            deb.entries,
            deb.size / 1024
        ));
    }

    steps.step(
        5,
        TOTAL,
        "signing the helper pocket and the meta-release; serving them on 127.0.0.1",
    );
    let entries = built
        .iter()
        .map(|deb| {
            Ok(PocketEntry {
                fields: crate::deb::read_control(&deb.path)?.fields,
                file: deb.path.clone(),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let base = srv.join(format!("dists/{}/main", tiny::NEW.0));
    let mut spec = archive::spec("Demo", tiny::NEW.0, &options.arch, date::now() - 60, 7);
    spec.label = "Demo Linux release upgrader helpers".into();
    pocket::publish(&base, &options.arch, &spec, &entries, &key, 1)?;
    let stanzas = [
        Stanza::default()
            .field("Dist", tiny::OLD.0)
            .field("Name", "Alpha")
            .field("Version", tiny::OLD.1)
            .field("Date", "Mon, 01 Jan 2024 00:00:00 UTC")
            .field("Supported", "1"),
        Stanza::default()
            .field("Dist", tiny::NEW.0)
            .field("Name", "Beta")
            .field("Version", tiny::NEW.1)
            .field("Date", "Wed, 01 Jan 2025 00:00:00 UTC")
            .field("Supported", "1")
            .field(
                "UpgradeToolBaseURI",
                format!("{url}dists/{}/main/", tiny::NEW.0),
            ),
    ];
    metarelease::write(
        &srv.join("meta-release"),
        &metarelease::render(&stanzas),
        &key,
    )?;
    steps.detail(&format!("meta-release: {url}meta-release"));

    steps.step(
        6,
        TOTAL,
        "installing Demo Linux 1 (alpha) into a throwaway root with dpkg",
    );
    tiny::install_root(&root, &old_debs)?;
    // The user edits a configuration file; the upgrade keeps the edit, as
    // `--force-confold` does.
    let conf = root.join("etc/demo.conf");
    let mut edited = fs_err::read_to_string(&conf).map_err(|e| Error::io(&conf, e))?;
    edited.push_str(USER_EDIT);
    fsutil::write_atomic(&conf, edited.as_bytes())?;
    steps.detail("edited /etc/demo.conf, as a user would");
    let before = os_release(&root);
    steps.detail(&format!("{}: {before}", root.display()));

    steps.step(
        7,
        TOTAL,
        "release-upgrader upgrade: bootstrap → re-exec → sources → update → install → cleanup",
    );
    let mut upgrade = Task::plain(&options.client);
    upgrade
        .arg("--root")
        .arg(&root)
        .arg("--keyring")
        .arg(&keyring_path)
        .arg("--meta-release-uri")
        .arg(format!("{url}meta-release"))
        .arg("--arch")
        .arg(&options.arch)
        .arg("upgrade");
    if options.noninteractive {
        upgrade.args(["-y", "-f", "noninteractive"]);
    }
    let status = upgrade.status()?;
    drop(server);

    steps.step(8, TOTAL, "checking the result");
    let after = os_release(&root);
    let conf_kept = std::fs::read_to_string(&conf).is_ok_and(|c| c.contains(USER_EDIT));
    steps.detail(if conf_kept {
        "/etc/demo.conf: the user's edit was kept"
    } else {
        "/etc/demo.conf: the user's edit was lost"
    });
    let prefix = root.join(crate::layout::PREFIX_IN_DEB);
    let helpers_left = prefix.exists()
        && fs_err::read_dir(&prefix)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
    Ok(DemoOutcome {
        root,
        before,
        after,
        upgrade_code: status.code().unwrap_or(128),
        helpers_left,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Repacks `names` on both cores (each is mostly I/O and a dpkg-query).
fn repack_all(names: &[String], work: &Path) -> Result<Vec<PathBuf>, Error> {
    let out = work.join("host-debs");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let chunks: Vec<&[String]> = names.chunks(names.len().div_ceil(threads).max(1)).collect();
    let results: Vec<Result<Vec<PathBuf>, Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let out = &out;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|name| repack::repack(name, work, out))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a repack thread panicked"))
            .collect()
    });
    let mut debs = Vec::new();
    for result in results {
        debs.extend(result?);
    }
    Ok(debs)
}

/// `PRETTY_NAME` of a root.
fn os_release(root: &Path) -> String {
    std::fs::read_to_string(root.join("etc/os-release"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "(no os-release)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ru_format::version::Version;

    #[test]
    fn the_demos_core_is_newer_than_the_client_running_the_demo() {
        let core: Version = core_version().parse().unwrap();
        let client: Version = env!("CARGO_PKG_VERSION").parse().unwrap();
        assert!(core > client, "{core} is not newer than {client}");
    }
}
