//! Output files: written under a temporary name and renamed into place only when
//! complete, through the compressor each image type uses.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::fsutil;

/// A file written to a temporary sibling and renamed over `path` by [`AtomicFile::commit`];
/// dropped uncommitted, the temporary is removed.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<std::fs::File>>,
    written: u64,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<Self, Error> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        fs_err::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let tmp = fsutil::temp_name(path);
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(AtomicFile {
            path: path.to_owned(),
            tmp,
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            written: 0,
        })
    }

    /// fsyncs, renames into place, fsyncs the directory; returns the file's size.
    pub fn commit(mut self) -> Result<u64, Error> {
        let file = self.file.take().expect("committed once");
        let file = file
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        fs_err::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        fsutil::sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(self.written)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_mut().expect("not committed").write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The compressors of image files.
#[derive(Clone, Copy, Debug)]
pub enum Compression {
    /// xz at a preset (system-image uses 9), CRC64 check as `xz` writes.
    Xz(u32),
    /// zstd at a level with long-distance matching over a 2^27 window (what a decoder
    /// accepts without raising its limit), content checksum on.
    Zstd(i32),
}

/// A compressing writer; [`Encoder::finish`] ends the stream and returns the output.
pub enum Encoder<W: Write> {
    Xz(liblzma::write::XzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl Compression {
    pub fn writer<W: Write>(self, out: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            Compression::Xz(level) => Encoder::Xz(liblzma::write::XzEncoder::new(out, level)),
            Compression::Zstd(level) => {
                let mut enc = zstd::stream::write::Encoder::new(out, level)?;
                enc.long_distance_matching(true)?;
                enc.window_log(27)?;
                enc.include_checksum(true)?;
                Encoder::Zstd(enc)
            }
        })
    }
}

impl<W: Write> Encoder<W> {
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Xz(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Xz(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Xz(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}
