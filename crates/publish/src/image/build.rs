//! `image build`: a full image tarball from a root directory or a rootfs tarball, and
//! the `version-N.tar.xz` that tells a device its build number and channel.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::output::{AtomicFile, Compression};
use super::source::{self, Data, DirSource, Source};
use crate::error::Error;
use ru_format::tarfile::{self as tar, Entry, Kind, Writer};

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

/// A rootfs tarball is in whatever order its tool wrote: unpack the stream to a
/// temporary plain tar, index it, and copy the entries out in image order. Hard links are
/// re-pointed so that the first path of each group in image order carries the data.
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
    let mut plain = tempfile::tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    {
        let mut input = source::decompressed(tarball)?;
        io::copy(&mut input, &mut plain).map_err(|e| Error::io(tarball, e))?;
    }
    plain
        .seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(tarball, e))?;
    let plain_path = tarball.to_owned();
    // Index: every entry with where its data starts.
    let mut index: Vec<(Entry, u64)> = Vec::new();
    {
        let reader = io::BufReader::new(plain.try_clone().map_err(|e| Error::io(tarball, e))?);
        let mut source = TarSourceOver::new(reader, &plain_path);
        while let Some((entry, offset)) = source.next()? {
            index.push((entry, offset));
        }
    }
    let mut seen_top = false;
    for (entry, _) in &index {
        if entry.path == "system" {
            seen_top = true;
        }
    }
    if !seen_top {
        let mut top = Entry::new("system".into(), Kind::Directory);
        top.mode = 0o755;
        top.mtime = clamp.unwrap_or(0);
        index.push((top, 0));
    }
    index.sort_by(|a, b| tar::cmp_paths(&a.0.path, &b.0.path));
    for pair in index.windows(2) {
        if tar::cmp_paths(&pair[0].0.path, &pair[1].0.path) == Ordering::Equal {
            return Err(Error::Config {
                path: tarball.to_owned(),
                reason: format!("{} is in the archive twice", pair[0].0.path),
            });
        }
    }
    // Hard link groups: the data holder is the group's first path in image order.
    let position: HashMap<String, usize> = index
        .iter()
        .enumerate()
        .map(|(i, (e, _))| (e.path.clone(), i))
        .collect();
    let mut holder_of: HashMap<usize, usize> = HashMap::new(); // data entry -> first path
    for i in 0..index.len() {
        if index[i].0.kind != Kind::HardLink {
            continue;
        }
        let target = *position
            .get(&index[i].0.link)
            .ok_or_else(|| Error::Config {
                path: tarball.to_owned(),
                reason: format!(
                    "{}: hard link to {}, which is not in the archive",
                    index[i].0.path, index[i].0.link
                ),
            })?;
        if index[target].0.kind != Kind::File {
            return Err(Error::Config {
                path: tarball.to_owned(),
                reason: format!(
                    "{}: hard link to {}, which is not a regular file",
                    index[i].0.path, index[i].0.link
                ),
            });
        }
        let first = holder_of.entry(target).or_insert(target);
        *first = (*first).min(i);
    }
    let mut data_from: HashMap<usize, usize> = HashMap::new(); // new holder -> old data entry
    let mut link_to: HashMap<usize, String> = HashMap::new(); // old data entry -> new holder path
    for (&data, &first) in &holder_of {
        if first != data {
            data_from.insert(first, data);
        }
        link_to.insert(data, index[first].0.path.clone());
    }
    let mut n = 0;
    for i in 0..index.len() {
        let (mut entry, mut offset) = index[i].clone();
        if let Some(clamp) = clamp {
            entry.mtime = entry.mtime.min(clamp);
        }
        entry.pax.clear();
        if let Some(&data) = data_from.get(&i) {
            // This link becomes the file; it takes the data entry's metadata and bytes.
            let (holder, data_offset) = &index[data];
            let path = entry.path.clone();
            entry = holder.clone();
            entry.path = path;
            if let Some(clamp) = clamp {
                entry.mtime = entry.mtime.min(clamp);
            }
            offset = *data_offset;
        } else if entry.kind == Kind::HardLink {
            let target = position[&entry.link];
            entry.link = link_to[&target].clone();
        } else if let Some(first) = link_to.get(&i)
            && *first != entry.path
        {
            entry.kind = Kind::HardLink;
            entry.link = first.clone();
            entry.size = 0;
        }
        writer.append(&entry).map_err(|e| Error::io(out, e))?;
        if entry.kind == Kind::File {
            plain
                .seek(SeekFrom::Start(offset))
                .map_err(|e| Error::io(tarball, e))?;
            let mut data = (&mut plain).take(entry.size);
            writer
                .copy_data(&mut data)
                .map_err(|e| Error::io(tarball, e))?;
        }
        n += 1;
    }
    Ok(n)
}

/// Index pass over a plain tar: entries with `system/` prefixed names and data offsets.
struct TarSourceOver<R: io::BufRead> {
    reader: tar::Reader<R>,
    path: PathBuf,
}

impl<R: io::BufRead> TarSourceOver<R> {
    fn new(reader: R, path: &Path) -> Self {
        TarSourceOver {
            reader: tar::Reader::new(reader),
            path: path.to_owned(),
        }
    }

    fn next(&mut self) -> Result<Option<(Entry, u64)>, Error> {
        let bad = |reason: String| Error::Config {
            path: self.path.clone(),
            reason,
        };
        let Some(mut entry) = self
            .reader
            .next_entry()
            .map_err(|e| Error::io(&self.path, e.into()))?
        else {
            return Ok(None);
        };
        let name = tar::normalise(&entry.path).map_err(bad)?;
        entry.path = if name.is_empty() {
            "system".into()
        } else {
            format!("system/{name}")
        };
        if entry.kind == Kind::HardLink {
            let target = tar::normalise(&entry.link).map_err(bad)?;
            entry.link = format!("system/{target}");
        }
        if name.is_empty() && entry.kind != Kind::Directory {
            return Err(Error::Config {
                path: self.path.clone(),
                reason: "the archive's top is not a directory".into(),
            });
        }
        Ok(Some((entry, self.reader.position())))
    }
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

/// Opens an image (tarball or root directory) for reading in image order.
pub fn open_image(path: &Path) -> Result<Box<dyn Source>, Error> {
    source::open(path)
}

/// Reads a whole small member out of `source` (for tests and the publisher's checks).
pub fn read_all(source: &mut dyn Source) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    Data(source).read_to_end(&mut data)?;
    Ok(data)
}
