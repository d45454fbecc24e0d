//! The patched files of a zdelta, written on worker threads while the apply goes on with
//! the next members.
//!
//! A patch is the costly kind of member: its base is read, its frame decoded against it,
//! the result hashed, and a `.gz` file compressed again (from its tokens, or from its
//! content the way `gzip -9` did, at about 18 MB/s here). On Debian 12 → 13 that was more
//! than the rest of the member loop, which only has to decode the outer stream and write
//! plain files. Each patch needs only its own frame and base, and writes only its own
//! staged object, which the overlay never rewrites and the member loop never reads (a
//! patch's base is the state of its path before the tarball: the base tree, or an
//! earlier tarball's object at most), so it can run beside the loop. The object is
//! created empty before the job is queued, so a hard link to it can be made at once. The
//! tarball's apply ends by waiting for all of them and reporting the first failure,
//! before anything is verified or committed.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::digest::{Sha256, Sha256Hasher};
use crate::error::Error;
use crate::image::branches::{self, Filter};
use crate::image::regzip;

/// What gives a written object (open, and its path) its metadata.
pub type Finish = Box<dyn FnOnce(&std::fs::File, &std::path::Path) -> Result<(), Error> + Send>;

/// One patched file to write into its staged object (created empty by the caller, so
/// that hard links to it can be made before it is written).
pub struct Job {
    pub object: PathBuf,
    /// The file the patch applies to; `None` for a frame that decodes on its own.
    pub base: Option<Base>,
    /// The member's data: one zstd frame.
    pub frame: Vec<u8>,
    /// For a `.gz` file patched in its content or tokens: how it is compressed again.
    pub gzip: Option<regzip::GzipPatch>,
    /// Made from base and file in this x86 code conversion ([`branches`]).
    pub x86: Option<Filter>,
    /// What the result must be.
    pub sha256: Sha256,
    pub size: u64,
    /// Writes the object's owner, mode and mtime once its bytes are in.
    pub finish: Finish,
    /// For messages: `<tarball>: patched <path>`.
    pub what: String,
}

/// The base file of a [`Job`].
pub struct Base {
    pub path: PathBuf,
    /// The digest the patch was made against: checked before a `.gz` rebuild, and when a
    /// result is wrong, to say which of the two was.
    pub sha256: Sha256,
    /// For messages: `<tarball>: base of the patch for <path>`.
    pub what: String,
}

/// A patched file whose result another patch of the same tarball already makes (the
/// same size and digest: Debian packages built from one source ship the same changelog
/// and copyright each). Copied from that one's object once every patch is written,
/// instead of decoding (and, for a `.gz`, compressing again) the same file twice; on
/// Debian 12 → 13, 27 such files, 0.95 MB of content to compress again.
pub struct Duplicate {
    /// The staged object of the patch that makes the same file.
    pub from: PathBuf,
    pub object: PathBuf,
    pub sha256: Sha256,
    pub size: u64,
    pub finish: Finish,
    pub what: String,
}

/// Frames larger than this are not queued: the member loop applies them itself, reading
/// them from the tarball as they decode.
pub const QUEUED_FRAME_MAX: u64 = 8 << 20;
/// At most this many bytes of frames wait in the queue or are being applied.
const QUEUED_BYTES_MAX: u64 = 32 << 20;

/// The worker threads of one tarball's apply.
pub struct Rebuilds {
    sender: Option<SyncSender<Job>>,
    duplicates: Vec<Duplicate>,
    workers: Vec<JoinHandle<()>>,
    failure: Arc<Mutex<Option<Error>>>,
    /// Bytes of frames queued or being applied, and its change.
    queued: Arc<(Mutex<u64>, Condvar)>,
}

impl Rebuilds {
    /// As many workers as cores, at most four.
    pub fn start() -> Rebuilds {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        // A few jobs queued per worker: each holds one patch frame.
        let (sender, receiver) = sync_channel::<Job>(threads * 8);
        let receiver = Arc::new(Mutex::new(receiver));
        let failure: Arc<Mutex<Option<Error>>> = Arc::default();
        let queued: Arc<(Mutex<u64>, Condvar)> = Arc::default();
        let workers = (0..threads)
            .map(|_| {
                let (receiver, failure) = (Arc::clone(&receiver), Arc::clone(&failure));
                let queued = Arc::clone(&queued);
                std::thread::spawn(move || {
                    loop {
                        let job = receiver.lock().expect("patch queue").recv();
                        let Ok(job) = job else { break };
                        let bytes = job.frame.len() as u64;
                        // A panic is this job's failure: the worker goes on, and gives
                        // its bytes back to the queue, which the member loop waits on.
                        let result =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(job)))
                                .unwrap_or_else(|_| {
                                    Err(Error::io(
                                        "(patch workers)",
                                        std::io::Error::other("a patch job panicked"),
                                    ))
                                });
                        if let Err(e) = result {
                            failure.lock().expect("patch failure").get_or_insert(e);
                        }
                        let (lock, changed) = &*queued;
                        *lock.lock().expect("patch queue bytes") -= bytes;
                        changed.notify_all();
                    }
                })
            })
            .collect();
        Rebuilds {
            sender: Some(sender),
            duplicates: Vec::new(),
            workers,
            failure,
            queued,
        }
    }

    /// Queues `job` (waiting while the queue is full, by count or by bytes).
    pub fn submit(&self, job: Job) -> Result<(), Error> {
        let sender = self.sender.as_ref().expect("submit before finish");
        let bytes = job.frame.len() as u64;
        let (lock, changed) = &*self.queued;
        let mut queued = changed
            .wait_while(lock.lock().expect("patch queue bytes"), |q| {
                *q > 0 && *q + bytes > QUEUED_BYTES_MAX
            })
            .expect("patch queue bytes");
        *queued += bytes;
        drop(queued);
        sender
            .send(job)
            .map_err(|_| Error::io("(patch workers)", std::io::Error::other("stopped")))
    }

    /// Queues a duplicate, copied once every patch is written.
    pub fn submit_duplicate(&mut self, duplicate: Duplicate) {
        self.duplicates.push(duplicate);
    }

    /// Waits for every queued job and stops the workers, then writes the duplicates; the
    /// first failure, if any.
    pub fn finish(mut self) -> Result<(), Error> {
        self.sender = None;
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                self.failure
                    .lock()
                    .expect("patch failure")
                    .get_or_insert(Error::io(
                        "(patch workers)",
                        std::io::Error::other("a worker panicked"),
                    ));
            }
        }
        if let Some(e) = self.failure.lock().expect("patch failure").take() {
            return Err(e);
        }
        self.duplicates.drain(..).try_for_each(write_duplicate)
    }
}

/// Writes a [`Duplicate`]: the other object's bytes, checked again against the digest
/// (they were when written, and are still the staging area's).
fn write_duplicate(copy: Duplicate) -> Result<(), Error> {
    let bytes = fs_err::read(&copy.from).map_err(|e| Error::io(&copy.from, e))?;
    check_result(&bytes, copy.size, &copy.sha256, &copy.what)?;
    let mut out = fs_err::OpenOptions::new()
        .write(true)
        .open(&copy.object)
        .map_err(|e| Error::io(&copy.object, e))?;
    out.write_all(&bytes)
        .map_err(|e| Error::io(&copy.object, e))?;
    (copy.finish)(out.file(), &copy.object)
}

impl std::fmt::Debug for Rebuilds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Rebuilds {{ workers: {}, duplicates: {} }}",
            self.workers.len(),
            self.duplicates.len()
        )
    }
}

/// Results at most this large, of frames in memory, decode in one call into their own
/// buffer: no window buffer to allocate and fault in for every patch.
const ONE_SHOT_MAX: u64 = 64 << 20;

/// Where a job's frame comes from.
enum Frame<'a> {
    Bytes(&'a [u8]),
    Reader(&'a mut dyn Read),
}

/// Writes one patched file, checked against what its patch promised, into its object.
pub fn run(mut job: Job) -> Result<(), Error> {
    let frame = std::mem::take(&mut job.frame);
    apply(job, Frame::Bytes(&frame))
}

/// [`run`] with the frame read from `frame` (`job.frame` is not used).
pub fn run_reading(job: Job, frame: &mut dyn Read) -> Result<(), Error> {
    apply(job, Frame::Reader(frame))
}

fn apply(job: Job, frame: Frame<'_>) -> Result<(), Error> {
    let (in_memory, mut from_memory, from_reader) = match frame {
        Frame::Bytes(b) => (Some(b), b, None),
        Frame::Reader(r) => (None, &[][..], Some(r)),
    };
    let reader: &mut dyn Read = match from_reader {
        Some(r) => r,
        None => &mut from_memory,
    };
    let mut base = match &job.base {
        Some(b) => fs_err::read(&b.path).map_err(|e| Error::io(&b.path, e))?,
        None => Vec::new(),
    };
    let base_check = |bytes: &[u8]| match &job.base {
        Some(b) => {
            let actual = Sha256::of(bytes);
            match actual == b.sha256 {
                true => Ok(()),
                false => Err(hash_mismatch(&b.what, &b.sha256, &actual)),
            }
        }
        None => Ok(()),
    };
    let mut out = fs_err::OpenOptions::new()
        .write(true)
        .open(&job.object)
        .map_err(|e| Error::io(&job.object, e))?;
    let written = match (&job.gzip, job.x86) {
        // Converted base in, converted file out: the whole result in memory (at most
        // `branches::SIZE_MAX`, which the member's check enforced), converted back before
        // its digest is checked.
        (None, Some(filter)) => {
            let (size, sha256, what) = (job.size, &job.sha256, job.what.as_str());
            let file = match in_memory {
                Some(frame) => decode_x86(filter, &mut base, &mut &frame[..], size, sha256, what),
                None => decode_x86(filter, &mut base, reader, size, sha256, what),
            };
            file.and_then(|file| out.write_all(&file).map_err(|e| Error::io(&job.object, e)))
                .or_else(|e| base_check(&base).and(Err(e)))
        }
        (Some(gzip), _) => {
            base_check(&base)?;
            let file = gzip.apply(&base, reader, job.size, &job.sha256, &job.what)?;
            out.write_all(&file).map_err(|e| Error::io(&job.object, e))
        }
        // The result's digest is what makes a patched file right, whatever the base; the
        // base's own digest is checked when the result is wrong, to say which of the two
        // was (hashing every base cost 0.1 s of CPU on Debian 12 → 13).
        (None, None) => match in_memory {
            Some(frame) if job.size <= ONE_SHOT_MAX => {
                one_shot(&base, frame, job.size, &job.sha256, &job.what, None)
                    .and_then(|file| out.write_all(&file).map_err(|e| Error::io(&job.object, e)))
            }
            _ => decode_checked(&base, reader, job.size, &job.sha256, &job.what, &mut out),
        }
        .or_else(|e| base_check(&base).and(Err(e))),
    };
    written?;
    (job.finish)(out.file(), &job.object)
}

/// Rebuilds the file of a patch made in the x86 code conversion `filter` ([`branches`]):
/// `frame` (read whole, at most twice [`branches::SIZE_MAX`]) decodes against the
/// converted `base` to `size` bytes, which converted back must hash to `sha256`. `base` is converted in place (no
/// copy of it) and back before this returns, so the caller finds it as it was. The
/// device's apply and the publisher's `image expand` both use it.
pub fn decode_x86(
    filter: Filter,
    base: &mut [u8],
    frame: &mut dyn Read,
    size: u64,
    sha256: &Sha256,
    what: &str,
) -> Result<Vec<u8>, Error> {
    if size > branches::SIZE_MAX {
        return Err(Error::Malformed {
            what: what.to_owned(),
            reason: format!(
                "an x86-converted patch makes at most {} bytes",
                branches::SIZE_MAX
            ),
        });
    }
    let mut data = Vec::new();
    frame
        .take(branches::SIZE_MAX.saturating_mul(2))
        .read_to_end(&mut data)
        .map_err(|e| Error::io(std::path::Path::new(what), e))?;
    branches::encode(base, filter);
    let file = one_shot(base, &data, size, sha256, what, Some(filter));
    branches::decode(base, filter);
    file
}

/// Decodes `frame` (exactly one zstd frame, nothing after it) against `base` in one
/// call, checking the result's size and then, once it is converted back (`convert`, if any), its
/// digest.
fn one_shot(
    base: &[u8],
    frame: &[u8],
    size: u64,
    sha256: &Sha256,
    what: &str,
    convert: Option<Filter>,
) -> Result<Vec<u8>, Error> {
    use zstd::zstd_safe::{self, DCtx, DParameter};
    let bad = |reason: String| Error::Malformed {
        what: what.to_owned(),
        reason,
    };
    let zstd_error = |code: usize| zstd_safe::get_error_name(code).to_owned();
    match zstd_safe::find_frame_compressed_size(frame) {
        Ok(n) if n == frame.len() => {}
        Ok(_) => return Err(bad("data after the patch frame".into())),
        Err(code) => return Err(bad(format!("zstd: {}", zstd_error(code)))),
    }
    let mut dctx = DCtx::create();
    dctx.set_parameter(DParameter::WindowLogMax(
        crate::compress::ZSTD_WINDOW_LOG_MAX,
    ))
    .and_then(|_| dctx.ref_prefix(base))
    .map_err(|code| bad(format!("zstd: {}", zstd_error(code))))?;
    // Room for exactly the promised size: a frame decoding to more is refused by zstd.
    let mut file = Vec::with_capacity(size as usize);
    dctx.decompress(&mut file, frame)
        .map_err(|code| bad(format!("patch does not decode: {}", zstd_error(code))))?;
    // The conversion keeps the length: `check_result` sees the decoded size.
    if let Some(filter) = convert {
        branches::decode(&mut file, filter);
    }
    check_result(&file, size, sha256, what)?;
    Ok(file)
}

/// Whether `bytes` are the result a patch promised: its size, then its digest.
fn check_result(bytes: &[u8], size: u64, sha256: &Sha256, what: &str) -> Result<(), Error> {
    if bytes.len() as u64 != size {
        return Err(size_mismatch(what, size, bytes.len() as u64));
    }
    let actual = Sha256::of(bytes);
    match actual == *sha256 {
        true => Ok(()),
        false => Err(hash_mismatch(what, sha256, &actual)),
    }
}

fn hash_mismatch(what: &str, expected: &Sha256, actual: &Sha256) -> Error {
    Error::HashMismatch {
        what: what.to_owned(),
        expected: expected.to_hex(),
        actual: actual.to_hex(),
    }
}

fn size_mismatch(what: &str, expected: u64, actual: u64) -> Error {
    Error::SizeMismatch {
        what: what.to_owned(),
        expected,
        actual,
    }
}

/// Decodes `frame` (exactly one zstd frame, nothing after it) against `base` into `out`
/// as it decodes, checking the result's size and digest (`what` names it in errors).
/// The device's apply and the publisher's `image expand` both use it.
pub fn decode_checked(
    base: &[u8],
    frame: &mut dyn Read,
    size: u64,
    sha256: &Sha256,
    what: &str,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let bad = |reason: String| Error::Malformed {
        what: what.to_owned(),
        reason,
    };
    let mut decoder =
        zstd::stream::read::Decoder::with_ref_prefix(std::io::BufReader::new(frame), base)
            .map_err(|e| bad(format!("zstd: {e}")))?
            .single_frame();
    decoder
        .window_log_max(crate::compress::ZSTD_WINDOW_LOG_MAX)
        .map_err(|e| bad(format!("zstd: {e}")))?;
    let mut hasher = Sha256Hasher::new();
    let mut written = 0u64;
    let mut buf = vec![0u8; size.clamp(1, 256 * 1024) as usize];
    loop {
        let n = decoder
            .read(&mut buf)
            .map_err(|e| bad(format!("patch does not decode: {e}")))?;
        if n == 0 {
            break;
        }
        written += n as u64;
        if written > size {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| Error::io(std::path::Path::new(what), e))?;
    }
    if written != size {
        return Err(size_mismatch(what, size, written));
    }
    let trailing = !decoder
        .finish()
        .fill_buf()
        .map_err(|e| bad(format!("reading the patch: {e}")))?
        .is_empty();
    if trailing {
        return Err(bad("data after the patch frame".into()));
    }
    let digest = hasher.finish();
    match digest == *sha256 {
        true => Ok(()),
        false => Err(hash_mismatch(what, sha256, &digest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls to one function from every 64 bytes; `shift` moves the code after `at`.
    fn code(shift: usize) -> Vec<u8> {
        let mut out = vec![0x90; 64 * 1024 + shift];
        for at in (0..64 * 1024).step_by(64) {
            let at = if at >= 4096 { at + shift } else { at };
            out[at] = 0xE8;
            let rel = (60_000 + shift) as i32 - (at as i32 + 5);
            out[at + 1..at + 5].copy_from_slice(&rel.to_le_bytes());
        }
        out
    }

    /// What the publisher makes: the converted file, against the converted base.
    fn branch_patch(base: &[u8], file: &[u8]) -> Vec<u8> {
        let (mut base, mut file) = (base.to_vec(), file.to_vec());
        branches::encode(&mut base, Filter::Branches);
        branches::encode(&mut file, Filter::Branches);
        let mut cctx = zstd::zstd_safe::CCtx::create();
        cctx.ref_prefix(&base).unwrap();
        let mut frame = Vec::with_capacity(file.len() + 1024);
        cctx.compress2(&mut frame, &file).unwrap();
        frame
    }

    #[test]
    fn a_branch_patch_decodes_in_place_and_leaves_the_base_as_it_was() {
        let (original, file) = (code(0), code(16));
        let frame = branch_patch(&original, &file);
        let sha = Sha256::of(&file);
        let mut base = original.clone();
        let size = file.len() as u64;
        let out = decode_x86(
            Filter::Branches,
            &mut base,
            &mut &frame[..],
            size,
            &sha,
            "t",
        )
        .unwrap();
        assert!(out == file);
        assert!(base == original, "the base came back converted");

        // A wrong result is refused, and the base is still the caller's.
        let mut tampered = frame.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(
            decode_x86(
                Filter::Branches,
                &mut base,
                &mut &tampered[..],
                size,
                &sha,
                "t"
            )
            .is_err()
        );
        assert!(
            decode_x86(
                Filter::Branches,
                &mut base,
                &mut &frame[..],
                size,
                &Sha256::of(b"x"),
                "t"
            )
            .is_err()
        );
        assert!(base == original, "a refused patch left the base converted");
    }

    /// A new file's frame (`x86-pcrel+zstd`): the job has no base, the frame decodes
    /// alone and converts back; a tampered frame or a wrong digest writes nothing.
    #[test]
    fn a_job_with_no_base_decodes_its_frame_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = code(16);
        let mut converted = file.clone();
        branches::encode(&mut converted, Filter::PcRelative);
        let frame = zstd::bulk::compress(&converted, 19).unwrap();
        let job = |frame: &[u8], sha256: Sha256| {
            let object = dir.path().join("object");
            std::fs::write(&object, b"").unwrap();
            Job {
                object,
                base: None,
                frame: frame.to_vec(),
                gzip: None,
                x86: Some(Filter::PcRelative),
                sha256,
                size: file.len() as u64,
                finish: Box::new(|_, _| Ok(())),
                what: "t: patched usr/bin/new".into(),
            }
        };
        let object = dir.path().join("object");
        let sha = Sha256::of(&file);
        run(job(&frame, sha)).unwrap();
        assert!(std::fs::read(&object).unwrap() == file);
        run_reading(job(b"", sha), &mut &frame[..]).unwrap();
        assert!(std::fs::read(&object).unwrap() == file);

        let mut tampered = frame.clone();
        let mid = tampered.len() / 2;
        tampered[mid] ^= 0x20;
        for wrong in [job(&tampered, sha), job(&frame, Sha256::of(b"x"))] {
            assert!(run(wrong).is_err());
            assert_eq!(std::fs::read(&object).unwrap(), b"", "wrote a wrong file");
        }
    }

    #[test]
    fn a_duplicate_gets_the_other_objects_bytes_only_when_they_are_the_promised_file() {
        let dir = tempfile::tempdir().unwrap();
        let (from, object) = (dir.path().join("1"), dir.path().join("2"));
        std::fs::write(&from, b"the same changelog").unwrap();
        let duplicate = |sha256: Sha256, size: u64| Duplicate {
            from: from.clone(),
            object: object.clone(),
            sha256,
            size,
            finish: Box::new(|file, _| {
                file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .map_err(|e| Error::io("finish", e))
            }),
            what: "t: patched b".into(),
        };
        let sha = Sha256::of(b"the same changelog");
        for wrong in [duplicate(Sha256::of(b"x"), 18), duplicate(sha, 17)] {
            std::fs::write(&object, b"").unwrap();
            assert!(write_duplicate(wrong).is_err());
            assert_eq!(
                std::fs::read(&object).unwrap(),
                b"",
                "wrote what it was not promised"
            );
        }
        write_duplicate(duplicate(sha, 18)).unwrap();
        assert_eq!(std::fs::read(&object).unwrap(), b"the same changelog");
        let mode = std::fs::metadata(&object).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
