//! `image build`: a full image tarball from a root directory or a rootfs tarball, and
//! the `version-N.tar.xz` that tells a device its build number and channel.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::output::{AtomicFile, Compression};
use super::source::{Data, DirSource, Names, SortedTar, Source};
use crate::error::Error;
use ru_format::tarfile::{Entry, Kind, Writer};

/// What a full image is built from.
#[derive(Clone, Debug)]
pub enum Input {
    /// A root directory (its top becomes `system/`).
    Root(PathBuf),
    /// A rootfs tarball (xz, zstd, gzip or plain), names relative to its top.
    Tarball(PathBuf),
}

/// What `write_image` wrote.
#[derive(Clone, Debug)]
pub struct Built {
    pub path: PathBuf,
    pub entries: u64,
    pub size: u64,
}

pub use crate::epoch::generated_mtime;

/// Writes the full image of `input` to `out` (xz at `level`), every path under
/// `system/`, in image order, mtimes clamped to SOURCE_DATE_EPOCH when it is set.
pub fn write_image(input: &Input, out: &Path, level: u32) -> Result<Built, Error> {
    let clamp = crate::epoch::from_env()?;
    let file = AtomicFile::create(out)?;
    let mut writer = Writer::new(
        Compression::Xz(level)
            .writer(file)
            .map_err(|e| Error::io(out, e))?,
    );
    let entries = match input {
        Input::Root(root) => {
            let mut source = DirSource::new(root, "system", clamp)?;
            copy_all(&mut source, &mut writer, out)?
        }
        Input::Tarball(tarball) => copy_sorted(tarball, &mut writer, out, clamp)?,
    };
    let encoder = writer.finish().map_err(|e| Error::io(out, e))?;
    let file = encoder.finish().map_err(|e| Error::io(out, e))?;
    let size = file.commit()?;
    Ok(Built {
        path: out.to_owned(),
        entries,
        size,
    })
}

fn copy_all(
    source: &mut dyn Source,
    writer: &mut Writer<impl Write>,
    out: &Path,
) -> Result<u64, Error> {
    let mut n = 0;
    while let Some(entry) = source.next_entry()? {
        writer.append(&entry).map_err(|e| Error::io(out, e))?;
        if entry.kind == Kind::File {
            let origin = source
                .origin()
                .join(entry.path.trim_start_matches("system/"));
            writer
                .copy_data(&mut Data(source))
                .map_err(|e| Error::io(&origin, e))?;
        }
        n += 1;
    }
    Ok(n)
}

/// A rootfs tarball is in whatever order its tool wrote: read it sorted (see
/// [`SortedTar`]), its names under `system/`.
fn copy_sorted(
    tarball: &Path,
    writer: &mut Writer<impl Write>,
    out: &Path,
    clamp: Option<i64>,
) -> Result<u64, Error> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let sorted = SortedTar::open(tarball, Names::Rootfs { clamp }, dir)?;
    copy_all(&mut sorted.entries(), writer, out)
}

/// What goes into `system/etc/system-image/channel.ini` (system-image's layout).
#[derive(Clone, Debug)]
pub struct ChannelIni {
    pub base: String,
    pub http_port: String,
    pub https_port: String,
    pub channel: String,
    pub device: String,
    pub build_number: u64,
    pub version_detail: Option<String>,
}

impl ChannelIni {
    pub fn render(&self) -> String {
        let mut text = format!(
            "[service]\nbase: {}\nhttp_port: {}\nhttps_port: {}\nchannel: {}\ndevice: {}\nbuild_number: {}\n",
            self.base,
            self.http_port,
            self.https_port,
            self.channel,
            self.device,
            self.build_number
        );
        if let Some(detail) = &self.version_detail {
            text.push_str(&format!("version_detail: {detail}\n"));
        }
        text
    }
}

/// Writes `version-N.tar.xz` as the real server does (its `generate_version_tarball`):
/// `system/etc/ubuntu-build` (the build number), `system/etc/system-image/channel.ini`,
/// and the `config.d/` a system-image 3.x client reads, with `00_default.ini ->
/// ../client.ini` and `01_channel.ini -> ../channel.ini` (without them a 3.x client finds
/// no build number), in the server's order.
pub fn write_version_tarball(ini: &ChannelIni, out: &Path) -> Result<u64, Error> {
    let mtime = generated_mtime()?;
    let file = AtomicFile::create(out)?;
    let mut writer = Writer::new(
        Compression::Xz(9)
            .writer(file)
            .map_err(|e| Error::io(out, e))?,
    );
    let members = [
        (
            "system/etc/ubuntu-build",
            format!("{}\n", ini.build_number).into_bytes(),
        ),
        (
            "system/etc/system-image/channel.ini",
            ini.render().into_bytes(),
        ),
    ];
    for (name, data) in members {
        let mut entry = Entry::new(name.into(), Kind::File);
        entry.size = data.len() as u64;
        entry.mtime = mtime;
        writer
            .append_root_owned(&entry)
            .and_then(|_| writer.write_data(&data))
            .map_err(|e| Error::io(out, e))?;
    }
    let config_d = "system/etc/system-image/config.d";
    let mut dir = Entry::new(config_d.into(), Kind::Directory);
    dir.mode = 0o775;
    dir.mtime = mtime;
    writer
        .append_root_owned(&dir)
        .map_err(|e| Error::io(out, e))?;
    for (name, target) in [
        ("00_default.ini", "../client.ini"),
        ("01_channel.ini", "../channel.ini"),
    ] {
        let mut link = Entry::new(format!("{config_d}/{name}"), Kind::Symlink);
        link.mode = 0o777;
        link.link = target.into();
        link.mtime = mtime;
        writer
            .append_root_owned(&link)
            .map_err(|e| Error::io(out, e))?;
    }
    let encoder = writer.finish().map_err(|e| Error::io(out, e))?;
    let file = encoder.finish().map_err(|e| Error::io(out, e))?;
    file.commit().map_err(Error::from)
}

/// Reads a whole small member out of `source` (for tests and the publisher's checks).
pub fn read_all(source: &mut dyn Source) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    Data(source).read_to_end(&mut data)?;
    Ok(data)
}
