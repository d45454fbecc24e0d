//! Gzip files rebuilt byte for byte from their content, for zdelta patches of `.gz` files.
//!
//! Between two releases most `.gz` files of an image (changelogs, man pages: 8 MB of
//! Debian 12 → 13) change a little in their content and entirely in their compressed
//! bytes, so a patch of the compressed file saves nothing. A zdelta instead patches the
//! *content* and ships what it takes to compress it again into exactly the original
//! bytes: the gzip header, and the corrections of `preflate-rs`, which predicts the
//! deflate encoder's choices (gzip's and zlib's are predicted almost perfectly: the
//! corrections are 2.6% of the compressed size on Debian 13 minbase) and records where
//! the prediction was wrong. Writing our own GNU-gzip-exact deflate would cover only
//! files GNU gzip made, and a mistake in it would only show as a failed rebuild.
//!
//! That prediction is a level-9 match search on the device, so a content patch is the
//! exception: the publisher prefers the patch of the file's deflate tokens
//! ([`gztokens`], about 7 times cheaper to rebuild, 1.8 times larger on Debian 12 → 13)
//! unless the content patch is far smaller. [`GzipPatch`] describes either.
//!
//! Whatever is rebuilt is checked against the SHA256 its patch promises, so a wrong
//! rebuild is an error, never a wrong file.

use std::io::{BufRead, Read};

use super::gztokens;

/// The largest content a rebuilt gzip file may have (as `preflate-rs` bounds it): the
/// content is held in memory on both sides.
pub const CONTENT_MAX: usize = 128 << 20;

/// The zdelta patch method of a `.gz` file rebuilt from its patched content.
pub const PATCH_METHOD: &str = "gzip+zstd-patch-from";
/// Pax record: the gzip header, in hex.
pub const HEADER_KEY: &str = "RELEASE_UPGRADER.gzip-header";
/// Pax record: `preflate-rs` 0.7.6's reconstruction data, in hex.
pub const PREFLATE_KEY: &str = "RELEASE_UPGRADER.preflate";
/// Pax record: the size of the uncompressed content the patch frame decodes to.
pub const CONTENT_SIZE_KEY: &str = "RELEASE_UPGRADER.content-size";

/// What a gzip patch carries besides its zstd frame: the gzip header, and how the frame's
/// output (decoded with [`GzipPatch::reference`] of the base file as reference prefix)
/// becomes the file again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GzipPatch {
    pub header: Vec<u8>,
    pub how: Recompress,
}

/// The two ways a `.gz` file is patched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recompress {
    /// [`PATCH_METHOD`]: the frame decodes against the base's content to the
    /// `content_size` bytes of content, which `preflate-rs` compresses again as
    /// `corrections` say. The smallest patch, and the slowest to rebuild (a level-9
    /// match search).
    Content {
        corrections: Vec<u8>,
        content_size: u64,
    },
    /// [`gztokens::PATCH_METHOD`]: the frame decodes against the base's token stream to
    /// the `tokens_size` bytes of the file's token stream, which is Huffman-coded again
    /// (no search: about 7 times faster, a larger patch).
    Tokens { tokens_size: u64 },
}

impl GzipPatch {
    /// The gzip patch a member's pax records describe, for its patch `method`
    /// (`None`: not a gzip patch method), from `get` (a record's value by key).
    pub fn from_records<'a>(
        method: &str,
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Option<Result<Self, String>> {
        let size = |key: &str, max: usize| -> Result<u64, String> {
            get(key)
                .ok_or_else(|| format!("gzip patch without {key}"))?
                .parse::<u64>()
                .ok()
                .filter(|&n| n <= max as u64)
                .ok_or(format!("{key}: not a size up to {max}"))
        };
        let how = match method {
            PATCH_METHOD => (|| {
                let corrections = get(PREFLATE_KEY)
                    .ok_or_else(|| format!("gzip patch without {PREFLATE_KEY}"))?;
                Ok(Recompress::Content {
                    corrections: from_hex(corrections).ok_or(format!("{PREFLATE_KEY}: not hex"))?,
                    content_size: size(CONTENT_SIZE_KEY, CONTENT_MAX)?,
                })
            })(),
            gztokens::PATCH_METHOD => size(gztokens::TOKENS_SIZE_KEY, gztokens::TOKENS_MAX)
                .map(|tokens_size| Recompress::Tokens { tokens_size }),
            _ => return None,
        };
        Some(how.and_then(|how| {
            let header =
                get(HEADER_KEY).ok_or_else(|| format!("gzip patch without {HEADER_KEY}"))?;
            let header = from_hex(header).ok_or(format!("{HEADER_KEY}: not hex"))?;
            if header_len(&[header.as_slice(), &[0u8; 8]].concat()) != Some(header.len()) {
                return Err(format!("{HEADER_KEY}: not a gzip header"));
            }
            Ok(GzipPatch { header, how })
        }))
    }

    /// Its patch method.
    pub fn method(&self) -> &'static str {
        match self.how {
            Recompress::Content { .. } => PATCH_METHOD,
            Recompress::Tokens { .. } => gztokens::PATCH_METHOD,
        }
    }

    /// Its pax records (after the method's and the digests').
    pub fn pax_records(&self) -> Vec<(String, String)> {
        let mut records = vec![(HEADER_KEY.into(), to_hex(&self.header))];
        match &self.how {
            Recompress::Content {
                corrections,
                content_size,
            } => {
                records.push((PREFLATE_KEY.into(), to_hex(corrections)));
                records.push((CONTENT_SIZE_KEY.into(), content_size.to_string()));
            }
            Recompress::Tokens { tokens_size } => {
                records.push((gztokens::TOKENS_SIZE_KEY.into(), tokens_size.to_string()))
            }
        }
        records
    }

    /// What the patch frame was made against, from the base file: its content, or its
    /// token stream.
    pub fn reference(&self, base: &[u8]) -> Result<Vec<u8>, String> {
        match self.how {
            Recompress::Content { .. } => gunzip(base),
            Recompress::Tokens { .. } => gztokens::tokens(base),
        }
    }

    /// How many bytes the frame decodes to.
    pub fn decoded_size(&self) -> u64 {
        match self.how {
            Recompress::Content { content_size, .. } => content_size,
            Recompress::Tokens { tokens_size } => tokens_size,
        }
    }

    /// The bytes its records add to a zdelta (the outer zstd brings hex back near its
    /// byte size).
    pub fn records_cost(&self) -> u64 {
        let extra = match &self.how {
            Recompress::Content { corrections, .. } => corrections.len(),
            Recompress::Tokens { .. } => 0,
        };
        (self.header.len() + extra) as u64
    }

    /// The file this patch makes of the base file's bytes and its `frame`, checked
    /// against the size and SHA256 its patch promises (`what` names it in errors).
    pub fn apply(
        &self,
        base: &[u8],
        frame: &mut dyn Read,
        size: u64,
        sha256: &crate::digest::Sha256,
        what: &str,
    ) -> Result<Vec<u8>, crate::error::Error> {
        let reference = self
            .reference(base)
            .map_err(|e| crate::error::Error::Malformed {
                what: what.to_owned(),
                reason: format!("base of the patch: {e}"),
            })?;
        let decoded = decode_content(&reference, frame, self.decoded_size(), what)?;
        self.rebuild_checked(&decoded, size, sha256, what)
    }

    /// The file again, from what the frame decoded to, checked against the size and
    /// SHA256 its patch promises (`what` names it in errors).
    pub fn rebuild_checked(
        &self,
        decoded: &[u8],
        size: u64,
        sha256: &crate::digest::Sha256,
        what: &str,
    ) -> Result<Vec<u8>, crate::error::Error> {
        use crate::error::Error;
        let file = match &self.how {
            Recompress::Content { corrections, .. } => rebuild(&self.header, decoded, corrections),
            Recompress::Tokens { .. } => gztokens::join(&self.header, decoded),
        }
        .map_err(|reason| Error::Malformed {
            what: what.to_owned(),
            reason,
        })?;
        if file.len() as u64 != size {
            return Err(Error::SizeMismatch {
                what: what.to_owned(),
                expected: size,
                actual: file.len() as u64,
            });
        }
        let digest = crate::digest::Sha256::of(&file);
        if digest != *sha256 {
            return Err(Error::HashMismatch {
                what: what.to_owned(),
                expected: sha256.to_hex(),
                actual: digest.to_hex(),
            });
        }
        Ok(file)
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A gzip file split into what rebuilds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The header bytes, up to the deflate stream (10 bytes for `gzip -n`).
    pub header: Vec<u8>,
    /// The uncompressed content.
    pub content: Vec<u8>,
    /// `preflate-rs`'s reconstruction data for the deflate stream.
    pub corrections: Vec<u8>,
}

/// The length of the gzip header at the start of `data` (one member, deflate), or
/// `None` when `data` does not start with one.
pub fn header_len(data: &[u8]) -> Option<usize> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if data.len() < 18 || data[..3] != [0x1f, 0x8b, 8] || data[3] & 0xe0 != 0 {
        return None;
    }
    let flags = data[3];
    let mut at = 10usize;
    if flags & FEXTRA != 0 {
        let len = u16::from_le_bytes([*data.get(at)?, *data.get(at + 1)?]) as usize;
        at += 2 + len;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += data.get(at..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    (at + 8 <= data.len()).then_some(at)
}

/// Splits `gz` into header, content and corrections when it is one gzip member that
/// `preflate-rs` can rebuild exactly (checked by rebuilding it), `None` otherwise.
pub fn split(gz: &[u8]) -> Option<Split> {
    let start = header_len(gz)?;
    let body = &gz[start..gz.len() - 8];
    let config = preflate_rs::PreflateConfig {
        plain_text_limit: CONTENT_MAX,
        ..Default::default()
    };
    let (chunk, plain) =
        guarded(|| preflate_rs::preflate_whole_deflate_stream(body, &config))?.ok()?;
    // The deflate stream must end where the trailer starts: one member, nothing after.
    if chunk.compressed_size != body.len() {
        return None;
    }
    let split = Split {
        header: gz[..start].to_vec(),
        content: plain.text().to_vec(),
        corrections: chunk.corrections,
    };
    (rebuild(&split.header, &split.content, &split.corrections).ok()? == gz).then_some(split)
}

/// The gzip file of `header`, then `content` compressed as `corrections` say, then the
/// CRC32 and size trailer. An error when the corrections do not fit the content (the
/// caller's SHA256 check catches a rebuild that fits but differs).
pub fn rebuild(header: &[u8], content: &[u8], corrections: &[u8]) -> Result<Vec<u8>, String> {
    rebuild_within(rebuild_budget(content.len()), header, content, corrections)
}

/// How long the rebuild of `len` bytes of content may take before it is given up: a
/// minute (or what [`set_rebuild_budget`] says), and a second more per MiB. preflate-rs
/// rebuilds several MB a second; corrections that do not fit their content can make it
/// spin forever (found by fuzzing), and a device must not hang on one file.
fn rebuild_budget(len: usize) -> std::time::Duration {
    use std::sync::atomic::Ordering;
    let base = match REBUILD_BUDGET_MS.load(Ordering::Relaxed) {
        0 => 60_000,
        ms => ms,
    };
    std::time::Duration::from_millis(base.saturating_add((len as u64 >> 20).saturating_mul(1000)))
}

static REBUILD_BUDGET_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets the base of the rebuild's time budget (the fuzz targets make it short).
#[doc(hidden)]
pub fn set_rebuild_budget(base: std::time::Duration) {
    let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(1);
    REBUILD_BUDGET_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

fn rebuild_within(
    budget: std::time::Duration,
    header: &[u8],
    content: &[u8],
    corrections: &[u8],
) -> Result<Vec<u8>, String> {
    if header_len(&[header, &[0u8; 8]].concat()) != Some(header.len()) {
        return Err("not a gzip header".into());
    }
    let (content_owned, corrections) = (content.to_vec(), corrections.to_vec());
    let body = guarded_within(budget, move || {
        preflate_rs::recreate_whole_deflate_stream(&content_owned, &corrections)
    })?
    .map_err(|e| format!("the deflate rebuild failed: {e:?}"))?;
    let mut crc = flate2::Crc::new();
    crc.update(content);
    let mut out = Vec::with_capacity(header.len() + body.len() + 8);
    out.extend_from_slice(header);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(content.len() as u32).to_le_bytes());
    Ok(out)
}

/// The content of the gzip file `gz` (every member), refused beyond [`CONTENT_MAX`].
pub fn gunzip(gz: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(gz)
        .take(CONTENT_MAX as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not a gzip file: {e}"))?;
    if out.len() > CONTENT_MAX {
        return Err(format!("more than {CONTENT_MAX} bytes uncompressed"));
    }
    Ok(out)
}

/// What a gzip patch's zstd frame (exactly one, nothing after it) decodes to with `prefix`
/// as reference: `size` bytes (at most [`gztokens::TOKENS_MAX`]), or an error.
pub fn decode_content(
    prefix: &[u8],
    frame: &mut dyn Read,
    size: u64,
    what: &str,
) -> Result<Vec<u8>, crate::error::Error> {
    let malformed = |reason: String| crate::error::Error::Malformed {
        what: what.to_owned(),
        reason,
    };
    let mut decoder =
        zstd::stream::read::Decoder::with_ref_prefix(std::io::BufReader::new(frame), prefix)
            .map_err(|e| malformed(format!("zstd: {e}")))?
            .single_frame();
    decoder
        .window_log_max(crate::compress::ZSTD_WINDOW_LOG_MAX)
        .map_err(|e| malformed(format!("zstd: {e}")))?;
    let mut content = Vec::with_capacity(size.min(gztokens::TOKENS_MAX as u64) as usize);
    (&mut decoder)
        .take(size + 1)
        .read_to_end(&mut content)
        .map_err(|e| malformed(format!("patch does not decode: {e}")))?;
    if content.len() as u64 != size {
        return Err(crate::error::Error::SizeMismatch {
            what: format!("{what} (content of the patch)"),
            expected: size,
            actual: content.len() as u64,
        });
    }
    let mut rest = decoder.finish();
    let trailing = rest
        .fill_buf()
        .map_err(|e| malformed(format!("reading the patch: {e}")))?;
    if !trailing.is_empty() {
        return Err(malformed("data after the patch frame".into()));
    }
    Ok(content)
}

/// Runs `f`, turning a panic into `None`: `preflate-rs` is fed data from the network
/// (checked against a signed digest, but still), and a bug there must be an error of
/// the one file, not an abort of the whole apply.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// [`guarded`] on a thread of its own, given up after `budget`. A thread cannot be
/// stopped from outside: one that overruns is left to spin until the process ends,
/// which the error this returns soon makes it do (the apply fails and rolls back).
fn guarded_within<T: Send + 'static>(
    budget: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("deflate-rebuild".into())
        .spawn(move || {
            let _ = tx.send(guarded(f));
        })
        .map_err(|e| format!("starting the deflate rebuild: {e}"))?;
    match rx.recv_timeout(budget) {
        Ok(Some(value)) => Ok(value),
        Ok(None) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err("the deflate rebuild failed".into())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "the deflate rebuild did not finish in {} s: its corrections do not fit the content",
            budget.as_secs_f32()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (`fuzz/fuzz_targets/zdelta.rs`): in optimised builds, preflate-rs
    /// 0.7.6 spins forever on these corrections of this 5 KB content (stopped after 5
    /// minutes; unoptimised, it fails at once). The rebuild gives up after its budget, and
    /// the file is an error either way.
    #[test]
    fn corrections_that_never_finish_are_given_up_after_the_budget() {
        let fixture = |name: &str| {
            std::fs::read(
                std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
                    .join("tests/fixtures/preflate")
                    .join(name),
            )
            .unwrap()
        };
        let (header, content, corrections) = (
            fixture("spin-header"),
            fixture("spin-content"),
            fixture("spin-corrections"),
        );
        let budget = std::time::Duration::from_millis(300);
        assert!(rebuild_within(budget, &header, &content, &corrections).is_err());
        assert_eq!(rebuild_budget(0), std::time::Duration::from_secs(60));
        assert_eq!(rebuild_budget(10 << 20), std::time::Duration::from_secs(70));
    }

    /// The guard itself: a result in time is returned, a panic is an error, and work that
    /// never ends is given up after the budget.
    #[test]
    fn guarded_work_that_never_ends_is_given_up_after_its_budget() {
        let ample = std::time::Duration::from_secs(60);
        assert_eq!(guarded_within(ample, || 7), Ok(7));
        let panicked = guarded_within(ample, || -> u8 { panic!("inside the guard") });
        assert_eq!(panicked, Err("the deflate rebuild failed".to_owned()));
        let budget = std::time::Duration::from_millis(200);
        let spinning = guarded_within(budget, || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        let err: Result<(), String> = spinning;
        assert!(err.unwrap_err().contains("did not finish in 0.2 s"));
    }
    use std::io::Write;

    fn text() -> Vec<u8> {
        (0..4000)
            .flat_map(|i| format!("{i} * changelog entry number {}\n", i % 97).into_bytes())
            .collect()
    }

    fn gnu_gzip(data: &[u8]) -> Vec<u8> {
        let mut child = std::process::Command::new("gzip")
            .args(["-9n", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    #[test]
    fn gnu_gzip_and_zlib_files_rebuild_exactly() {
        let content = text();
        let mut zlib = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        zlib.write_all(&content).unwrap();
        for gz in [gnu_gzip(&content), zlib.finish().unwrap()] {
            let split = split(&gz).expect("splits");
            assert_eq!(split.content, content);
            assert!(split.corrections.len() < gz.len() / 20);
            assert_eq!(
                rebuild(&split.header, &split.content, &split.corrections).unwrap(),
                gz
            );
            assert_eq!(gunzip(&gz).unwrap(), content);
        }
    }

    #[test]
    fn other_content_or_corrections_do_not_rebuild_the_file() {
        let content = text();
        let gz = gnu_gzip(&content);
        let split = split(&gz).unwrap();
        let mut other = content.clone();
        other[100] ^= 1;
        let rebuilt = rebuild(&split.header, &other, &split.corrections);
        assert!(rebuilt.map_or(true, |r| r != gz));
        for i in [0, split.corrections.len() / 2, split.corrections.len() - 1] {
            let mut bad = split.corrections.clone();
            bad[i] ^= 0x55;
            let rebuilt = rebuild(&split.header, &content, &bad);
            assert!(rebuilt.map_or(true, |r| r != gz), "corrections byte {i}");
        }
        assert!(rebuild(b"not a header", &content, &split.corrections).is_err());
    }

    #[test]
    fn only_single_member_gzip_files_split() {
        let gz = gnu_gzip(&text());
        assert!(split(&[gz.as_slice(), gz.as_slice()].concat()).is_none());
        assert!(split(b"plain text, not gzip at all").is_none());
        let mut truncated = gz.clone();
        truncated.truncate(gz.len() - 20);
        assert!(split(&truncated).is_none());
        let mut flipped = gz.clone();
        let mid = gz.len() / 2;
        flipped[mid] ^= 0x10;
        assert!(split(&flipped).is_none_or(|s| s.content != text()));
        assert!(gunzip(b"plain").is_err());
    }

    #[test]
    fn gzip_patch_records_round_trip_and_bad_ones_are_refused() {
        let header = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3];
        let content = GzipPatch {
            header: header.clone(),
            how: Recompress::Content {
                corrections: vec![0, 1, 0xfe, 0xff],
                content_size: 12345,
            },
        };
        let tokens = GzipPatch {
            header,
            how: Recompress::Tokens { tokens_size: 777 },
        };
        let parse = |method: &str, records: &[(String, String)]| {
            GzipPatch::from_records(method, |k| {
                records
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.as_str())
            })
        };
        assert!(parse("zstd-patch-from", &content.pax_records()).is_none());
        for (patch, bad_values) in [
            (
                content,
                vec![
                    (HEADER_KEY, "1f8b"),
                    (HEADER_KEY, "zz"),
                    (PREFLATE_KEY, "abc"),
                    (CONTENT_SIZE_KEY, "-1"),
                    (CONTENT_SIZE_KEY, "999999999999"),
                ],
            ),
            (
                tokens,
                vec![
                    (HEADER_KEY, "00"),
                    (gztokens::TOKENS_SIZE_KEY, "x"),
                    (gztokens::TOKENS_SIZE_KEY, "999999999999"),
                ],
            ),
        ] {
            let records = patch.pax_records();
            let method = patch.method();
            assert_eq!(parse(method, &records).unwrap().unwrap(), patch);
            for (key, bad) in bad_values {
                let mut changed = records.clone();
                changed.iter_mut().find(|(k, _)| k == key).unwrap().1 = bad.into();
                assert!(
                    parse(method, &changed).unwrap().is_err(),
                    "{key}={bad} accepted"
                );
            }
            for i in 0..records.len() {
                let mut without = records.clone();
                without.remove(i);
                assert!(parse(method, &without).unwrap().is_err());
            }
        }
    }

    #[test]
    fn headers_with_a_name_and_extra_field_are_measured() {
        let mut gz = vec![0x1f, 0x8b, 8, 4 | 8, 0, 0, 0, 0, 0, 3, 2, 0, b'x', b'y'];
        gz.extend_from_slice(b"name\0");
        let len = gz.len();
        gz.extend_from_slice(&[0u8; 8]);
        assert_eq!(header_len(&gz), Some(len));
        assert_eq!(header_len(&gz[..len + 4]), None);
        gz[3] = 0x20;
        assert_eq!(header_len(&gz), None);
    }
}
