//! Output files: written under a temporary name and renamed into place only when
//! complete, through the compressor each image type uses.

use std::io::{self, Write};

/// Output files are written through the workspace's one atomic writer.
pub use crate::fsutil::AtomicFile;

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
