//! Downloads the upgrade's packages a few at a time, before apt installs them.
//!
//! apt fetches archives over one connection per host, one after another; on a 2-core
//! machine and a nearby mirror that is most of an upgrade's download time. The plan run
//! (`apt-get --print-uris -o Acquire::ForceHash=SHA256`) already names every archive with
//! its size and SHA-256 from the signed indices, so we fetch them in parallel into apt's
//! own archive directory. apt then finds them there and downloads nothing.
//!
//! apt accepts a file in its archive directory on its *size* alone, so a file only gets
//! its final name once its size and SHA-256 matched (the fetcher's `fetch_file`). Anything
//! we cannot fetch (a proxy or credentials only apt knows, a non-HTTP source) is left to
//! apt, which then downloads it itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::digest::Sha256;
use crate::error::Error;
use crate::fetch::{Fetcher, Location};
use crate::progress::{self, Progress};

/// Connections at a time to the mirror.
const PARALLEL: usize = 4;

/// One archive apt would download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    pub uri: String,
    /// The name apt stores it under in its archive directory.
    pub file: String,
    pub size: u64,
    pub sha256: Sha256,
}

/// The archives of `apt-get --print-uris` output (`'uri' file size SHA256:hex` lines).
/// Lines with another hash, an odd file name or no network URI are skipped: apt fetches
/// those itself.
pub fn parse(output: &str) -> Vec<Archive> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix('\'')?;
            let (uri, rest) = rest.split_once('\'')?;
            let mut words = rest.split_whitespace();
            let file = words.next()?;
            let size = words.next()?.parse::<u64>().ok()?;
            let sha256 = words.next()?.strip_prefix("SHA256:")?.parse().ok()?;
            if !plain_file_name(file)
                || !(uri.starts_with("http://") || uri.starts_with("https://"))
            {
                return None;
            }
            Some(Archive {
                uri: uri.to_owned(),
                file: file.to_owned(),
                size,
                sha256,
            })
        })
        .collect()
}

/// A name that stays inside the archive directory: one component, a `.deb`.
pub fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.ends_with(".deb")
        && !name.contains(['/', '\0', '\\'])
}

/// Fetches every archive into `dir` (apt's `archives/`), `PARALLEL` at a time, reusing
/// complete ones, as one progress task. Returns the bytes fetched. On error the partial
/// files are removed and the first error is returned (cancellation over anything else).
pub fn fetch_all(fetcher: &Fetcher, archives: &[Archive], dir: &Path) -> Result<u64, Error> {
    // Nothing to fetch draws no "0 packages" bar.
    if archives.is_empty() {
        return Ok(0);
    }
    let total = fetcher.progress();
    let id = progress::next_task_id();
    let label = match archives.len() {
        1 => "Downloading 1 package".to_owned(),
        n => format!("Downloading {n} packages"),
    };
    total.begin(id, &label, Some(archives.iter().map(|a| a.size).sum()));
    let bar = Arc::new(OneTask {
        inner: total.clone(),
        id,
        done: Mutex::new(HashMap::new()),
    });
    let fetcher = &fetcher.reporting_to(bar);
    let result = fetch_each(fetcher, archives, dir);
    total.finish(id, result.is_ok());
    result
}

/// Whether apt may fetch what [`fetch_all`] could not, failing with `err`: only when the
/// mirror could not be reached at all (a proxy or route only apt's configuration knows).
/// When it answered, and wrongly, apt would be answered the same way.
pub fn apt_may_reach(err: &Error) -> bool {
    matches!(err, Error::Trust(ru_trust::Error::Network { reason, .. }) if reason.starts_with("cannot connect"))
}

/// Reports many transfers as one task: how far each got, summed.
struct OneTask {
    inner: Arc<dyn Progress>,
    id: u64,
    /// Per transfer: where it is now, and the furthest point already shown.
    done: Mutex<HashMap<u64, (u64, u64)>>,
}

impl OneTask {
    fn moved(&self, id: u64, to: impl FnOnce(u64) -> u64) {
        let mut done = self.done.lock().expect("done");
        let (now, shown) = done.entry(id).or_default();
        *now = to(*now);
        // A restarted transfer cannot take back what the task showed: it counts again
        // only past that point.
        if *now > *shown {
            self.inner.advance(self.id, *now - *shown);
            *shown = *now;
        }
    }
}

impl Progress for OneTask {
    fn advance(&self, id: u64, bytes: u64) {
        self.moved(id, |now| now + bytes);
    }

    fn reset(&self, id: u64, position: u64) {
        self.moved(id, |_| position);
    }
}

fn fetch_each(fetcher: &Fetcher, archives: &[Archive], dir: &Path) -> Result<u64, Error> {
    let next = AtomicUsize::new(0);
    let fetched = AtomicUsize::new(0);
    let errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL.min(archives.len()) {
            scope.spawn(|| {
                loop {
                    if !errors.lock().expect("errors").is_empty() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(archive) = archives.get(i) else {
                        break;
                    };
                    match fetch_one(fetcher, archive, dir) {
                        Ok(bytes) => {
                            fetched.fetch_add(bytes as usize, Ordering::SeqCst);
                        }
                        Err(e) => errors.lock().expect("errors").push(e),
                    }
                }
            });
        }
    });
    let mut errors = errors.into_inner().expect("errors");
    if errors.is_empty() {
        return Ok(fetched.into_inner() as u64);
    }
    for archive in archives {
        let _ = std::fs::remove_file(crate::fetch::partial_path(&dir.join(&archive.file)));
    }
    if let Some(i) = errors.iter().position(Error::is_cancelled) {
        return Err(errors.swap_remove(i));
    }
    Err(errors.swap_remove(0))
}

/// Fetches one archive unless a file of its size and digest is already there.
fn fetch_one(fetcher: &Fetcher, archive: &Archive, dir: &Path) -> Result<u64, Error> {
    let dest: PathBuf = dir.join(&archive.file);
    if let Ok(mut file) = std::fs::File::open(&dest) {
        if let Ok((sha256, size)) = Sha256::of_reader(&mut file)
            && sha256 == archive.sha256
            && size == archive.size
        {
            return Ok(0);
        }
        // apt would take a file of the right size as it is: never leave a wrong one.
        std::fs::remove_file(&dest).map_err(|e| Error::io(&dest, e))?;
    }
    let location = Location::parse(&archive.uri)?;
    fetcher.fetch_file(
        &location,
        &dest,
        archive.size,
        archive.sha256,
        &archive.file,
    )?;
    Ok(archive.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "720e43fda316676076498b4224ad3318049deafe60cc7c601011048de03ee97d";

    #[test]
    fn print_uris_lines_become_archives() {
        let out = format!(
            "Reading package lists...\n\
             'http://m/debian/pool/main/d/debianutils/debianutils_5.23.2_amd64.deb' debianutils_5.23.2_amd64.deb 92360 SHA256:{HASH}\n\
             'https://m/debian/pool/main/b/bash/bash_5.2.37-2%2bb10_amd64.deb' bash_5.2.37-2+b10_amd64.deb 1500792 SHA256:{HASH}\n"
        );
        let archives = parse(&out);
        assert_eq!(archives.len(), 2);
        assert_eq!(archives[1].file, "bash_5.2.37-2+b10_amd64.deb");
        assert_eq!(
            archives[1].uri,
            "https://m/debian/pool/main/b/bash/bash_5.2.37-2%2bb10_amd64.deb"
        );
        assert_eq!(archives[0].size, 92360);
        assert_eq!(archives[0].sha256.to_hex(), HASH);
    }

    #[test]
    fn hostile_or_unusable_lines_are_left_to_apt() {
        let lines = [
            // Only an MD5 sum: not enough to trust a file apt accepts on size alone.
            "'http://m/a.deb' a_1_amd64.deb 10 MD5Sum:84739088394105b79e8df877d907c753".to_owned(),
            // Names that leave the archive directory or are not archives.
            format!("'http://m/a.deb' ../../etc/passwd.deb 10 SHA256:{HASH}"),
            format!("'http://m/a.deb' sub/a.deb 10 SHA256:{HASH}"),
            format!("'http://m/a.deb' .hidden.deb 10 SHA256:{HASH}"),
            format!("'http://m/a.deb' a_1_amd64.conf 10 SHA256:{HASH}"),
            // Sources apt reads in place or through its own methods.
            format!("'file:/media/cdrom/pool/a.deb' a_1_amd64.deb 10 SHA256:{HASH}"),
            format!("'cdrom:[Debian]/pool/a.deb' a_1_amd64.deb 10 SHA256:{HASH}"),
            // Broken fields.
            format!("'http://m/a.deb' a_1_amd64.deb -1 SHA256:{HASH}"),
            "'http://m/a.deb' a_1_amd64.deb 10 SHA256:nothex".to_owned(),
            "'http://m/a.deb a_1_amd64.deb 10".to_owned(),
        ];
        for line in &lines {
            assert!(parse(line).is_empty(), "accepted: {line}");
        }
    }
}
