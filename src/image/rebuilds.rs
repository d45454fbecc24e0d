//! The `.gz` files of a zdelta, compressed again on worker threads while the apply goes
//! on with the next members.
//!
//! Rebuilding a gzip file costs what `gzip -9` costs (about 18 MB/s of content here):
//! on Debian 12 → 13 that is more CPU than the rest of the apply. Each rebuild needs only
//! its own content and writes only its own staged object, which the overlay never
//! rewrites and the member loop never reads (a patch's base is the state of its path
//! before the tarball: an earlier tarball's object at most), so it can run beside the
//! loop. The object is created empty before it is queued, so a hard link to it can be
//! made at once. The tarball's apply ends by waiting for all of them and reporting the
//! first failure, before anything is verified or committed.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::digest::Sha256;
use crate::error::Error;
use crate::image::regzip;

/// What gives a rebuilt object its metadata.
pub type Finish = Box<dyn FnOnce(&std::path::Path) -> Result<(), Error> + Send>;

/// One gzip file to rebuild into its staged object (created empty by the caller, so
/// that hard links to it can be made before it is written).
pub struct Job {
    pub object: PathBuf,
    pub gzip: regzip::GzipPatch,
    pub content: Vec<u8>,
    pub sha256: Sha256,
    pub size: u64,
    /// Writes the object's owner, mode and mtime once its bytes are in.
    pub finish: Finish,
    /// For messages: `<tarball>: patched <path>`.
    pub what: String,
}

/// The worker threads of one tarball's apply.
pub struct Rebuilds {
    sender: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    failure: Arc<Mutex<Option<Error>>>,
}

impl Rebuilds {
    /// As many workers as cores, at most four (the member loop beside them is mostly
    /// zstd decoding and writes).
    pub fn start() -> Rebuilds {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        // A few jobs queued per worker: each holds one file's content.
        let (sender, receiver) = sync_channel::<Job>(threads * 2);
        let receiver = Arc::new(Mutex::new(receiver));
        let failure: Arc<Mutex<Option<Error>>> = Arc::default();
        let workers = (0..threads)
            .map(|_| {
                let (receiver, failure) = (Arc::clone(&receiver), Arc::clone(&failure));
                std::thread::spawn(move || {
                    loop {
                        let job = receiver.lock().expect("rebuild queue").recv();
                        let Ok(job) = job else { break };
                        if let Err(e) = run(job) {
                            failure.lock().expect("rebuild failure").get_or_insert(e);
                        }
                    }
                })
            })
            .collect();
        Rebuilds {
            sender: Some(sender),
            workers,
            failure,
        }
    }

    /// Queues `job` (waiting while the queue is full).
    pub fn submit(&self, job: Job) -> Result<(), Error> {
        let sender = self.sender.as_ref().expect("submit before finish");
        sender
            .send(job)
            .map_err(|_| Error::io("(gzip rebuild workers)", std::io::Error::other("stopped")))
    }

    /// Waits for every queued rebuild and stops the workers; the first failure, if any.
    pub fn finish(mut self) -> Result<(), Error> {
        self.sender = None;
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                self.failure
                    .lock()
                    .expect("rebuild failure")
                    .get_or_insert(Error::io(
                        "(gzip rebuild workers)",
                        std::io::Error::other("a worker panicked"),
                    ));
            }
        }
        match self.failure.lock().expect("rebuild failure").take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Rebuilds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rebuilds {{ workers: {} }}", self.workers.len())
    }
}

/// Rebuilds one file, checks it against what its patch promised, writes it.
pub fn run(job: Job) -> Result<(), Error> {
    let file = regzip::rebuild_checked(&job.gzip, &job.content, job.size, &job.sha256, &job.what)?;
    let mut out = fs_err::OpenOptions::new()
        .write(true)
        .open(&job.object)
        .map_err(|e| Error::io(&job.object, e))?;
    out.write_all(&file)
        .map_err(|e| Error::io(&job.object, e))?;
    drop(out);
    (job.finish)(&job.object)
}
