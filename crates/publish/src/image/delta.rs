//! `image delta`: the difference between two full images as system-image applies it.
//!
//! Both images are read in image order (a tarball in any order is first unpacked to a
//! temporary plain tar and indexed, see [`SortedTar`](super::source::SortedTar)) and
//! merged, so memory does not grow with the image's data: what is held is the index of
//! a tarball's members, one directory chain, the paths of files written to the delta
//! (for hard links to them), and at most one changed file pair (in memory up to the
//! patch limit, otherwise spooled to a temporary file).
//!
//! A zdelta also patches files that have no base file at their own path against a base
//! file elsewhere ([`bases`] chooses it by name). A first pass over both images lists
//! their regular files (paths and sizes only) to choose the bases, a second pass over the
//! base image copies the chosen base files into an unnamed temporary file (the merge
//! may meet a target before its base: `libfoo.so.10` sorts before `libfoo.so.9`), and
//! the merge reads each base back from there when its target comes.
//!
//! The delta is a tar whose first member is `removed` (paths in the base but not in the
//! target, and paths whose type changed, one a line), followed by every added or
//! changed entry with full metadata. An entry is changed when any of type, mode, owner,
//! mtime, link target, device numbers or content (compared byte for byte) differ. The
//! parent directory of every removed or written path is written too (before it), since
//! deleting and unpacking there changes its mtime; tar restores a directory's metadata
//! after its contents, so it ends as in the target. Hard links are
//! written again whenever the file they share is, since unpacking that file replaces
//! its inode.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::bases::{BaseIndex, FileRef};
use super::build::generated_mtime;
use super::output::{AtomicFile, Compression};
use super::source::{Data, Image, Source};
use super::zdelta::{self, PatchBase, PatchInfo};
use crate::digest::Sha256;
use crate::error::Error;
use ru_format::image::branches::{self, Filter};
use ru_format::image::regzip::{self, GzipPatch, Recompress};
use ru_format::tarfile::{self as tar, Entry, Kind, Writer};

/// Which delta type to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaKind {
    /// system-image's `delta`: a `.tar.xz`.
    Delta,
    /// Our `zdelta`: a `.tar.zst` whose changed large files may be patches.
    Zdelta,
}

#[derive(Clone, Debug)]
pub struct DeltaOptions {
    pub kind: DeltaKind,
    /// xz preset of a `delta` (system-image uses 9).
    pub xz_level: u32,
    /// zstd level of a `zdelta` (outer stream and patches).
    pub zstd_level: i32,
    /// Changed files smaller than this are stored whole.
    pub patch_min: u64,
    /// Files larger than this (base or target) are stored whole: this bounds memory.
    pub patch_max: u64,
    /// A zdelta may patch `.gz` files in their content or tokens (see
    /// [`regzip`](ru_format::image::regzip), [`gztokens`](ru_format::image::gztokens)).
    pub regzip: bool,
}

impl DeltaOptions {
    pub fn new(kind: DeltaKind) -> Self {
        DeltaOptions {
            kind,
            xz_level: 9,
            zstd_level: 19,
            patch_min: 1024,
            patch_max: 256 * 1024 * 1024,
            regzip: true,
        }
    }
}

/// What a delta holds.
#[derive(Clone, Debug, Default)]
pub struct DeltaStats {
    pub removed: u64,
    pub entries: u64,
    pub files: u64,
    pub patched: u64,
    /// Of `patched`, those made against a base at another path.
    pub patched_elsewhere: u64,
    /// Of `patched`, `.gz` files patched in their content and compressed again on the
    /// device.
    pub regzipped: u64,
    /// Of `patched`, `.gz` files patched in their token streams.
    pub gzip_tokens: u64,
    /// Of `patched`, x86-64 files patched in their code conversion
    /// ([`zdelta::X86_FILTER`]).
    pub branches: u64,
    /// Files with no base stored in their code conversion, a frame of their own
    /// ([`branches::ALONE_METHOD`]); not in `patched`.
    pub alone: u64,
    pub size: u64,
}

/// A `.gz` file's content patch is chosen over its token patch only when it is smaller
/// by more than its content's size divided by this. Rebuilding from content costs the
/// device a level-9 match search (about 53 ns a byte here), from tokens about 8 ns: on
/// Debian 12 → 13 this keeps the content patch for the 32% of the content where it
/// saves most, for 0.48 MB more than content patches everywhere and a third of their
/// CPU time.
const CONTENT_PATCH_PREMIUM: u64 = 10;

/// Files at most this large are compared and kept in memory; larger ones are spooled to
/// a temporary file while compared.
const SPOOL_IN_MEMORY: usize = 8 * 1024 * 1024;

struct Merge<'a> {
    opts: &'a DeltaOptions,
    body: Writer<BufWriter<std::fs::File>>,
    removed: BufWriter<std::fs::File>,
    /// Target directories enclosing the current path, and whether each was written.
    dirs: Vec<(Entry, bool)>,
    /// Regular files written to the delta (hard links to them must be written again).
    written_files: HashSet<String>,
    stats: DeltaStats,
    out: &'a Path,
    /// zdelta: the bases of files without one at their own path.
    cross: Option<CrossBases>,
}

/// Writes the delta from `base` to `target` (full image tarballs in any order, or root
/// directories) to `out`.
pub fn write_delta(
    base: &Path,
    target: &Path,
    out: &Path,
    opts: &DeltaOptions,
) -> Result<DeltaStats, Error> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    fs_err::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let base_image = Image::open(base, &dir)?;
    let target_image = Image::open(target, &dir)?;
    let cross = match opts.kind {
        DeltaKind::Zdelta => Some(CrossBases::collect(&base_image, &target_image, opts, &dir)?),
        DeltaKind::Delta => None,
    };
    let mut base_src = base_image.entries()?;
    let mut target_src = target_image.entries()?;
    let temp = |what: &str| {
        tempfile::tempfile_in(&dir)
            .map_err(|e| Error::io(dir.join(what), e))
            .map(|f| BufWriter::with_capacity(256 * 1024, f))
    };
    let mut merge = Merge {
        opts,
        body: Writer::new(temp("body")?),
        removed: temp("removed")?,
        dirs: Vec::new(),
        written_files: HashSet::new(),
        stats: DeltaStats::default(),
        out,
        cross,
    };
    let mut b = base_src.next_entry()?;
    let mut t = target_src.next_entry()?;
    loop {
        let order = match (&b, &t) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(be), Some(te)) => tar::cmp_paths(&be.path, &te.path),
        };
        match order {
            std::cmp::Ordering::Less => {
                let be = b.take().expect("base entry");
                merge.removed_path(&be.path)?;
                b = base_src.next_entry()?;
            }
            std::cmp::Ordering::Greater => {
                let te = t.take().expect("target entry");
                merge.added(&te, target_src.as_mut())?;
                t = target_src.next_entry()?;
            }
            std::cmp::Ordering::Equal => {
                let be = b.take().expect("base entry");
                let te = t.take().expect("target entry");
                merge.both(&be, &te, base_src.as_mut(), target_src.as_mut())?;
                b = base_src.next_entry()?;
                t = target_src.next_entry()?;
            }
        }
    }
    merge.assemble()
}

impl Merge<'_> {
    fn io(&self, e: io::Error) -> Error {
        Error::io(self.out, e)
    }

    /// Keeps only the directories enclosing `path` on the stack.
    fn enter(&mut self, path: &str) {
        while let Some((dir, _)) = self.dirs.last() {
            if tar::is_ancestor(&dir.path, path) {
                break;
            }
            self.dirs.pop();
        }
    }

    /// Writes the parent directory of `path` if it is not written yet (the client's
    /// delete or unpack there changes its mtime).
    fn touch_parent(&mut self, path: &str) -> Result<(), Error> {
        let Some(parent) = tar::parent(path) else {
            return Ok(());
        };
        if let Some((dir, written)) = self.dirs.last_mut()
            && dir.path == parent
            && !*written
        {
            *written = true;
            let dir = dir.clone();
            self.body.append(&dir).map_err(|e| Error::io(self.out, e))?;
            self.stats.entries += 1;
        }
        Ok(())
    }

    fn removed_path(&mut self, path: &str) -> Result<(), Error> {
        self.enter(path);
        writeln!(self.removed, "{path}").map_err(|e| self.io(e))?;
        self.stats.removed += 1;
        self.touch_parent(path)
    }

    fn push_dir(&mut self, entry: &Entry, written: bool) {
        if entry.kind == Kind::Directory {
            self.dirs.push((entry.clone(), written));
        }
    }

    fn added(&mut self, te: &Entry, target: &mut dyn Source) -> Result<(), Error> {
        self.enter(&te.path);
        self.touch_parent(&te.path)?;
        self.write_streamed(te, target)?;
        self.push_dir(te, true);
        Ok(())
    }

    /// Writes `te` with its data read straight from the target stream, or, for a file
    /// with a base chosen at another path, as a patch when that is smaller.
    fn write_streamed(&mut self, te: &Entry, target: &mut dyn Source) -> Result<(), Error> {
        if te.kind == Kind::File
            && let Some((base_path, base)) = self
                .cross
                .as_mut()
                .map(|c| c.base_of(&te.path))
                .transpose()?
                .flatten()
        {
            let target_data = read_exactly(target, te.size)?;
            return self.write_patch_or_plain(te, Some(base_path), &base, &target_data);
        }
        if te.kind == Kind::File
            && self.opts.kind == DeltaKind::Zdelta
            && te.size >= self.opts.patch_min
            && te.size <= self.opts.patch_max.min(branches::SIZE_MAX)
        {
            let data = read_exactly(target, te.size)?;
            return self.write_alone_or_plain(te, &data);
        }
        self.touch_parent(&te.path)?;
        let mut entry = te.clone();
        entry.pax.clear();
        self.body.append(&entry).map_err(|e| self.io(e))?;
        if entry.kind == Kind::File {
            let origin = target.origin().to_owned();
            self.body
                .copy_data(&mut Data(target))
                .map_err(|e| Error::io(&origin, e))?;
            self.written_files.insert(entry.path.clone());
            self.stats.files += 1;
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// A file with no base: as its x86 code conversion in a frame of its own, when it is
    /// x86-64 code and that is smaller than its own compressed bytes; as it is otherwise.
    fn write_alone_or_plain(&mut self, te: &Entry, data: &[u8]) -> Result<(), Error> {
        let level = self.opts.zstd_level;
        let Some(frame) = zdelta::make_x86_alone(data, level).map_err(|e| self.io(e))? else {
            return self.write_bytes(te, data);
        };
        // What a patch's pax header costs, as in `write_patch_or_plain`.
        if frame.len() as u64 + 1024 >= plain_size(data, level).map_err(|e| self.io(e))? {
            return self.write_bytes(te, data);
        }
        let info = PatchInfo {
            base: None,
            sha256: Sha256::of(data),
            size: data.len() as u64,
            gzip: None,
            x86: Some(Filter::PcRelative),
        };
        self.write_patch_member(te, &info, &frame)?;
        self.stats.alone += 1;
        Ok(())
    }

    /// `te` as a patch member: its frame, described by `info`'s pax records.
    fn write_patch_member(
        &mut self,
        te: &Entry,
        info: &PatchInfo,
        frame: &[u8],
    ) -> Result<(), Error> {
        self.touch_parent(&te.path)?;
        let mut entry = te.clone();
        entry.pax = info.pax_records();
        entry.size = frame.len() as u64;
        self.body
            .append(&entry)
            .and_then(|_| self.body.write_data(frame))
            .map_err(|e| Error::io(self.out, e))?;
        self.written_files.insert(entry.path.clone());
        self.stats.files += 1;
        self.stats.entries += 1;
        Ok(())
    }

    fn write_bytes(&mut self, te: &Entry, data: &[u8]) -> Result<(), Error> {
        self.touch_parent(&te.path)?;
        let mut entry = te.clone();
        entry.pax.clear();
        self.body
            .append(&entry)
            .and_then(|_| self.body.write_data(data))
            .map_err(|e| Error::io(self.out, e))?;
        self.written_files.insert(entry.path.clone());
        self.stats.files += 1;
        self.stats.entries += 1;
        Ok(())
    }

    fn both(
        &mut self,
        be: &Entry,
        te: &Entry,
        base: &mut dyn Source,
        target: &mut dyn Source,
    ) -> Result<(), Error> {
        self.enter(&te.path);
        if be.kind.class() != te.kind.class() {
            // Type change: the client deletes the old path (a whole tree for a
            // directory, whose entries follow as removed) before unpacking.
            writeln!(self.removed, "{}", te.path).map_err(|e| self.io(e))?;
            self.stats.removed += 1;
            self.touch_parent(&te.path)?;
            self.write_streamed(te, target)?;
            self.push_dir(te, true);
            return Ok(());
        }
        let changed = match (be.kind, te.kind) {
            (Kind::File, Kind::File) => return self.both_files(be, te, base, target),
            (Kind::HardLink, Kind::HardLink) => {
                be.link != te.link || self.written_files.contains(&te.link)
            }
            (Kind::File, Kind::HardLink) | (Kind::HardLink, Kind::File) => true,
            _ => !be.same_metadata(te),
        };
        if changed {
            self.write_streamed(te, target)?;
        }
        self.push_dir(te, changed);
        Ok(())
    }

    fn both_files(
        &mut self,
        be: &Entry,
        te: &Entry,
        base: &mut dyn Source,
        target: &mut dyn Source,
    ) -> Result<(), Error> {
        let meta_same = be.same_metadata(te);
        let patchable = self.opts.kind == DeltaKind::Zdelta
            && te.size >= self.opts.patch_min
            && te.size <= self.opts.patch_max
            && be.size > 0
            && be.size <= self.opts.patch_max;
        if patchable {
            let base_data = read_exactly(base, be.size)?;
            let target_data = read_exactly(target, te.size)?;
            if base_data == target_data {
                // Only the metadata changed (a rebuild's new mtime): the entry must be
                // sent again, its data as a patch that says "the same bytes".
                if !meta_same {
                    self.write_patch_or_plain(te, None, &base_data, &target_data)?;
                }
                return Ok(());
            }
            return self.write_patch_or_plain(te, None, &base_data, &target_data);
        }
        if be.size != te.size {
            // Different content for sure; nothing to compare.
            return self.write_streamed(te, target);
        }
        // Same size: compare while keeping the target's bytes.
        let mut spool = Spool::new(self.out)?;
        let mut same = true;
        let mut bbuf = vec![0u8; 256 * 1024];
        let mut tbuf = vec![0u8; 256 * 1024];
        let mut left = te.size;
        while left > 0 {
            let n = bbuf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            fill(target, &mut tbuf[..n])?;
            if same {
                fill(base, &mut bbuf[..n])?;
                same = bbuf[..n] == tbuf[..n];
            }
            spool.write(&tbuf[..n])?;
            left -= n as u64;
        }
        if same && meta_same {
            return Ok(());
        }
        self.touch_parent(&te.path)?;
        let mut entry = te.clone();
        entry.pax.clear();
        self.body.append(&entry).map_err(|e| self.io(e))?;
        spool.copy_into(&mut self.body)?;
        self.written_files.insert(entry.path.clone());
        self.stats.files += 1;
        self.stats.entries += 1;
        Ok(())
    }

    /// The better gzip patch of `target` against `base`, when both are gzip files: the
    /// token patch, unless the content patch is smaller by more than
    /// [`CONTENT_PATCH_PREMIUM`] of the content's size.
    fn gzip_patch(
        &self,
        base: &[u8],
        target: &[u8],
    ) -> Result<Option<(Vec<u8>, GzipPatch)>, Error> {
        if regzip::header_len(base).is_none() || regzip::header_len(target).is_none() {
            return Ok(None);
        }
        let level = self.opts.zstd_level;
        let tokens = zdelta::make_tokens_patch(base, target, level).map_err(|e| self.io(e))?;
        let content = zdelta::make_gzip_patch(base, target, level).map_err(|e| self.io(e))?;
        let cost = |p: &Option<(Vec<u8>, GzipPatch)>| {
            p.as_ref()
                .map(|(frame, g)| frame.len() as u64 + g.records_cost())
        };
        Ok(match (cost(&content), cost(&tokens)) {
            (Some(c), Some(t)) => {
                let content_size = content.as_ref().map_or(0, |(_, g)| g.decoded_size());
                match c + content_size / CONTENT_PATCH_PREMIUM < t {
                    true => content,
                    false => tokens,
                }
            }
            (Some(_), None) => content,
            _ => tokens,
        })
    }

    /// A changed or new file of a zdelta: the patch against `base` (the file at
    /// `base_path`, or at the file's own path) when it is smaller than the file's own
    /// compressed bytes (with the pax header it costs), the file otherwise. A `.gz`
    /// file whose base is one too may instead be patched in its content and compressed
    /// again on the device ([`regzip`](ru_format::image::regzip)), when that is smaller still.
    fn write_patch_or_plain(
        &mut self,
        te: &Entry,
        base_path: Option<String>,
        base: &[u8],
        target: &[u8],
    ) -> Result<(), Error> {
        let level = self.opts.zstd_level;
        let mut patch = zdelta::make_patch(base, target, level).map_err(|e| self.io(e))?;
        // x86-64 code: also from the converted base and file, the smaller kept.
        let converted = zdelta::make_x86_patch(base, target, level, zdelta::X86_FILTER)
            .map_err(|e| self.io(e))?;
        let branches = match converted {
            Some(frame) if frame.len() < patch.len() => {
                patch = frame;
                true
            }
            _ => false,
        };
        let plain = plain_size(target, level).map_err(|e| self.io(e))?;
        let gzip = match self.opts.regzip && base != target {
            true => self.gzip_patch(base, target)?,
            false => None,
        };
        // What the outer stream pays for each: the pax header of a patch takes a header
        // block and a record block; a gzip patch's records carry its header (and
        // corrections) in hex, which the outer zstd brings back near their byte size.
        let patch_cost = patch.len() as u64 + 1024;
        let gzip_cost = gzip
            .as_ref()
            .map(|(frame, g)| frame.len() as u64 + g.records_cost() + 1024);
        let (data, gzip) = match gzip {
            Some((frame, g)) if gzip_cost < Some(patch_cost.min(plain)) => {
                match g.how {
                    Recompress::Content { .. } => self.stats.regzipped += 1,
                    Recompress::Tokens { .. } => self.stats.gzip_tokens += 1,
                }
                (frame, Some(g))
            }
            _ if patch_cost < plain => {
                if branches {
                    self.stats.branches += 1;
                }
                (patch, None)
            }
            _ => return self.write_bytes(te, target),
        };
        if base_path.is_some() {
            self.stats.patched_elsewhere += 1;
        }
        let info = PatchInfo {
            base: Some(PatchBase {
                sha256: Sha256::of(base),
                path: base_path,
            }),
            sha256: Sha256::of(target),
            size: target.len() as u64,
            x86: (branches && gzip.is_none()).then_some(zdelta::X86_FILTER),
            gzip,
        };
        self.write_patch_member(te, &info, &data)?;
        self.stats.patched += 1;
        Ok(())
    }

    /// The delta: `removed`, then the body, through the type's compressor.
    fn assemble(self) -> Result<DeltaStats, Error> {
        let out = self.out;
        let io = |e: io::Error| Error::io(out, e);
        let mut stats = self.stats;
        let mut removed = self.removed.into_inner().map_err(|e| io(e.into_error()))?;
        let removed_len = removed.stream_position().map_err(io)?;
        removed.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut body = self
            .body
            .into_inner()
            .map_err(io)?
            .into_inner()
            .map_err(|e| io(e.into_error()))?;
        body.seek(SeekFrom::Start(0)).map_err(io)?;
        let compression = match self.opts.kind {
            DeltaKind::Delta => Compression::Xz(self.opts.xz_level),
            DeltaKind::Zdelta => Compression::Zstd(self.opts.zstd_level),
        };
        let file = AtomicFile::create(out)?;
        let mut writer = Writer::new(compression.writer(file).map_err(io)?);
        let mut entry = Entry::new("removed".into(), Kind::File);
        entry.size = removed_len;
        entry.mtime = generated_mtime()?;
        writer.append_root_owned(&entry).map_err(io)?;
        writer.copy_data(&mut removed).map_err(io)?;
        writer.copy_raw(&mut io::BufReader::new(body)).map_err(io)?;
        let encoder = writer.finish().map_err(io)?;
        let file = encoder.finish().map_err(io)?;
        stats.size = file.commit()?;
        Ok(stats)
    }
}

/// The base files chosen for target files with no regular file at their own path in the
/// base image, copied out of the base image into an unnamed temporary file.
struct CrossBases {
    /// Target path → base path.
    plan: HashMap<String, String>,
    /// Base path → where its bytes are in `spool`.
    stored: HashMap<String, (u64, u64)>,
    spool: std::fs::File,
    origin: std::path::PathBuf,
}

impl CrossBases {
    /// Lists both images' regular files, chooses the bases, and copies them out of the
    /// base image into a temporary file in `dir`.
    fn collect(
        base: &Image,
        target: &Image,
        opts: &DeltaOptions,
        dir: &Path,
    ) -> Result<Self, Error> {
        let base_files = regular_files(base)?;
        let at_own_path: HashSet<&str> = base_files.iter().map(|f| f.path.as_str()).collect();
        let mut plan = HashMap::new();
        {
            let candidates = BaseIndex::new(
                base_files
                    .iter()
                    .filter(|f| f.size > 0 && f.size <= opts.patch_max)
                    .cloned()
                    .collect(),
            );
            for t in regular_files(target)? {
                if t.size < opts.patch_min
                    || t.size > opts.patch_max
                    || at_own_path.contains(t.path.as_str())
                {
                    continue;
                }
                if let Some(b) = candidates.choose(&t) {
                    plan.insert(t.path, b.path.clone());
                }
            }
        }
        let needed: HashSet<&str> = plan.values().map(String::as_str).collect();
        let spool = tempfile::tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
        let mut writer = BufWriter::with_capacity(256 * 1024, spool);
        let mut stored = HashMap::new();
        let mut offset = 0u64;
        let mut src = base.entries()?;
        let origin = src.origin().to_owned();
        while let Some(entry) = src.next_entry()? {
            if entry.kind != Kind::File || !needed.contains(entry.path.as_str()) {
                continue;
            }
            let n = io::copy(&mut Data(src.as_mut()), &mut writer)
                .map_err(|e| Error::io(&origin, e))?;
            if n != entry.size {
                return Err(Error::SizeMismatch {
                    what: format!("{}: {}", origin.display(), entry.path),
                    expected: entry.size,
                    actual: n,
                });
            }
            stored.insert(entry.path.clone(), (offset, n));
            offset += n;
        }
        let spool = writer
            .into_inner()
            .map_err(|e| Error::io(dir, e.into_error()))?;
        Ok(CrossBases {
            plan,
            stored,
            spool,
            origin,
        })
    }

    /// The base path and bytes chosen for `target_path`, if one was.
    fn base_of(&mut self, target_path: &str) -> Result<Option<(String, Vec<u8>)>, Error> {
        let Some(base_path) = self.plan.get(target_path) else {
            return Ok(None);
        };
        let Some(&(offset, len)) = self.stored.get(base_path) else {
            return Ok(None);
        };
        let mut data = vec![0u8; len as usize];
        let io_err = |e| Error::io(&self.origin, e);
        self.spool.seek(SeekFrom::Start(offset)).map_err(io_err)?;
        self.spool.read_exact(&mut data).map_err(io_err)?;
        Ok(Some((base_path.clone(), data)))
    }
}

/// The regular files of an image (paths and sizes), read without their data.
fn regular_files(image: &Image) -> Result<Vec<FileRef>, Error> {
    let mut src = image.entries()?;
    let mut files = Vec::new();
    while let Some(entry) = src.next_entry()? {
        if entry.kind == Kind::File {
            files.push(FileRef {
                path: entry.path,
                size: entry.size,
            });
        }
    }
    Ok(files)
}

/// The size of `data` as one zstd frame at `level` (what it costs stored whole in the
/// outer stream, near enough).
fn plain_size(data: &[u8], level: i32) -> io::Result<u64> {
    let mut sink = CountingSink(0);
    let mut enc = zstd::stream::write::Encoder::new(&mut sink, level)?;
    // With the size told, zstd sizes its tables to the file: without it, every file,
    // however small, cleared tables for the largest input (61.7 million page faults,
    // half the generation's time, on Debian 12 → 13).
    enc.set_pledged_src_size(Some(data.len() as u64))?;
    enc.window_log(zdelta::window_log_for(0, data.len() as u64))?;
    enc.long_distance_matching(true)?;
    enc.write_all(data)?;
    enc.finish()?;
    Ok(sink.0)
}

struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Fills `buf` from the current entry of `source`.
fn fill(source: &mut dyn Source, buf: &mut [u8]) -> Result<(), Error> {
    let origin = source.origin().to_owned();
    let mut data = Data(source);
    data.read_exact(buf).map_err(|e| Error::io(&origin, e))
}

fn read_exactly(source: &mut dyn Source, size: u64) -> Result<Vec<u8>, Error> {
    let mut data = vec![0u8; size as usize];
    fill(source, &mut data)?;
    Ok(data)
}

/// A file's bytes kept while compared: in memory up to [`SPOOL_IN_MEMORY`], then in an
/// unnamed temporary file next to the output.
struct Spool {
    memory: Vec<u8>,
    file: Option<BufWriter<std::fs::File>>,
    dir: std::path::PathBuf,
}

impl Spool {
    fn new(out: &Path) -> Result<Self, Error> {
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        Ok(Spool {
            memory: Vec::new(),
            file: None,
            dir,
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.file.is_none() && self.memory.len() + data.len() > SPOOL_IN_MEMORY {
            let file = tempfile::tempfile_in(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
            let mut file = BufWriter::new(file);
            file.write_all(&self.memory)
                .map_err(|e| Error::io(&self.dir, e))?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        match &mut self.file {
            Some(file) => file.write_all(data).map_err(|e| Error::io(&self.dir, e)),
            None => {
                self.memory.extend_from_slice(data);
                Ok(())
            }
        }
    }

    fn copy_into<W: Write>(self, writer: &mut Writer<W>) -> Result<(), Error> {
        let dir = self.dir;
        match self.file {
            None => writer
                .write_data(&self.memory)
                .map_err(|e| Error::io(&dir, e)),
            Some(file) => {
                let mut file = file
                    .into_inner()
                    .map_err(|e| Error::io(&dir, e.into_error()))?;
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| Error::io(&dir, e))?;
                writer
                    .copy_data(&mut io::BufReader::new(file))
                    .map_err(|e| Error::io(&dir, e))
            }
        }
    }
}
