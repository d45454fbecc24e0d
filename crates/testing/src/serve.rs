//! A small static HTTP/1.1 file server bound to 127.0.0.1.
//!
//! The demo serves its freshly published pocket and meta-release with it, and the tests
//! use it as the archive that misbehaves on request ([`Fault`]): errors, truncation, a
//! slow trickle, wrong bytes, ignored `Range`, bodies larger than promised. It supports
//! what apt-like clients use: `GET`/`HEAD`, `Range: bytes=N-[M]`, `If-Modified-Since`,
//! `Last-Modified`, and absolute-form request targets (so it can stand in for a proxy).
//! It is not meant to face a network.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// A misbehaviour to inject into one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Serve normally.
    None,
    /// Answer with this status code and a short body.
    Status(u16),
    /// Promise the full length, send only this many body bytes, then close.
    Truncate(usize),
    /// Send no length and only this many body bytes, then close.
    TruncateWithoutLength(usize),
    /// Send the body `chunk` bytes at a time with `delay` between chunks.
    Trickle { chunk: usize, delay: Duration },
    /// Flip one byte in the middle of the body.
    Corrupt,
    /// Answer `Range` requests with the whole file (200).
    IgnoreRange,
    /// Append this many extra bytes, with a matching `Content-Length`.
    Oversize(usize),
    /// Append this many extra bytes and send no length.
    OversizeWithoutLength(usize),
    /// Answer 302 with this `Location`.
    Redirect(String),
}

/// What the fault hook sees of a request.
#[derive(Clone, Debug)]
pub struct RequestInfo {
    pub method: String,
    /// Decoded path, without the leading `/`.
    pub path: String,
    /// How many requests for this path arrived so far, this one included.
    pub count: usize,
    pub headers: Vec<(String, String)>,
}

impl RequestInfo {
    /// A request header, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Hook = Arc<dyn Fn(&RequestInfo) -> Fault + Send + Sync>;

struct Shared {
    root: PathBuf,
    hook: Hook,
    counts: Mutex<HashMap<String, usize>>,
    log: Mutex<Vec<RequestInfo>>,
}

/// A running server; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Server({})", self.url())
    }
}

impl Server {
    /// Serves the files under `root` on an ephemeral port of 127.0.0.1.
    pub fn start(root: impl Into<PathBuf>) -> io::Result<Server> {
        Server::start_with(root, |_| Fault::None)
    }

    /// Like [`Server::start`], asking `hook` how to (mis)behave for each request.
    pub fn start_with(
        root: impl Into<PathBuf>,
        hook: impl Fn(&RequestInfo) -> Fault + Send + Sync + 'static,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            root: root.into(),
            hook: Arc::new(hook),
            counts: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
        });
        let accept = {
            let stop = stop.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("serve-accept".into())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        let shared = shared.clone();
                        let _ = std::thread::Builder::new().name("serve-conn".into()).spawn(
                            move || {
                                let _ = handle(stream, &shared);
                            },
                        );
                    }
                })?
        };
        Ok(Server {
            addr,
            stop,
            accept: Some(accept),
            shared,
        })
    }

    /// `http://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RequestInfo> {
        self.shared.log.lock().expect("log lock").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

fn handle(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut headers = Vec::new();
    let mut header_bytes = 0;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        header_bytes += n;
        if n == 0 || header_bytes > 64 * 1024 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("/");
    // Absolute form, as sent to a proxy: keep only the path.
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let target = target.split(['?', '#']).next().unwrap_or("/");
    let path = percent_decode(target.trim_start_matches('/'));
    let count = {
        let mut counts = shared.counts.lock().expect("count lock");
        let c = counts.entry(path.clone()).or_insert(0);
        *c += 1;
        *c
    };
    let info = RequestInfo {
        method,
        path,
        count,
        headers,
    };
    shared.log.lock().expect("log lock").push(info.clone());
    let fault = (shared.hook)(&info);
    let mut out = stream;
    let result = respond(&mut out, shared, &info, fault);
    let _ = out.flush();
    let _ = out.shutdown(Shutdown::Both);
    result
}

fn respond(
    out: &mut TcpStream,
    shared: &Shared,
    info: &RequestInfo,
    fault: Fault,
) -> io::Result<()> {
    if info.method != "GET" && info.method != "HEAD" {
        return simple(out, 405, "Method Not Allowed");
    }
    if let Fault::Status(code) = fault {
        return simple(out, code, "injected fault");
    }
    if let Fault::Redirect(location) = &fault {
        return write!(
            out,
            "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
    let Some(file) = resolve(&shared.root, &info.path) else {
        return simple(out, 404, "Not Found");
    };
    let Ok(meta) = std::fs::metadata(&file) else {
        return simple(out, 404, "Not Found");
    };
    if !meta.is_file() {
        return simple(out, 404, "Not Found");
    }
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let last_modified = httpdate::fmt_http_date(modified);
    if let Some(since) = info
        .header("If-Modified-Since")
        .and_then(|v| httpdate::parse_http_date(v).ok())
    {
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        if secs(modified) <= secs(since) {
            return write!(
                out,
                "HTTP/1.1 304 Not Modified\r\nLast-Modified: {last_modified}\r\nConnection: close\r\n\r\n"
            );
        }
    }
    let mut body = Vec::new();
    std::fs::File::open(&file)?.read_to_end(&mut body)?;
    let total = body.len();
    let mut status = "200 OK";
    let mut content_range = None;
    if let Some(range) = info.header("Range").filter(|_| fault != Fault::IgnoreRange) {
        match parse_range(range, total) {
            Some((start, end)) => {
                body = body[start..=end].to_vec();
                status = "206 Partial Content";
                content_range = Some(format!("bytes {start}-{end}/{total}"));
            }
            None => {
                return write!(
                    out,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        }
    }
    let mut length = Some(body.len());
    match &fault {
        Fault::Corrupt if !body.is_empty() => {
            let mid = body.len() / 2;
            body[mid] ^= 0x55;
        }
        Fault::Oversize(extra) => {
            body.extend(std::iter::repeat_n(b'x', *extra));
            length = Some(body.len());
        }
        Fault::OversizeWithoutLength(extra) => {
            body.extend(std::iter::repeat_n(b'x', *extra));
            length = None;
        }
        Fault::TruncateWithoutLength(n) => {
            body.truncate(*n);
            length = None;
        }
        _ => {}
    }
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n\
         Last-Modified: {last_modified}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n"
    );
    if let Some(length) = length {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    if let Some(range) = content_range {
        head.push_str(&format!("Content-Range: {range}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if info.method == "HEAD" {
        return Ok(());
    }
    match fault {
        Fault::Truncate(n) => out.write_all(&body[..n.min(body.len())]),
        Fault::Trickle { chunk, delay } => {
            for piece in body.chunks(chunk.max(1)) {
                out.write_all(piece)?;
                out.flush()?;
                std::thread::sleep(delay);
            }
            Ok(())
        }
        _ => out.write_all(&body),
    }
}

fn simple(out: &mut TcpStream, code: u16, text: &str) -> io::Result<()> {
    let body = format!("{code} {text}\n");
    write!(
        out,
        "HTTP/1.1 {code} {text}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Maps a request path to a file under `root`, refusing anything that could leave it.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path);
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    Some(root.join(relative))
}

/// `bytes=N-` or `bytes=N-M` → inclusive range within `total`.
fn parse_range(header: &str, total: usize) -> Option<(usize, usize)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: usize = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => total.checked_sub(1)?,
        e => e.parse::<usize>().ok()?.min(total.checked_sub(1)?),
    };
    (start <= end && start < total).then_some((start, end))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_within_bounds() {
        assert_eq!(parse_range("bytes=0-", 10), Some((0, 9)));
        assert_eq!(parse_range("bytes=4-6", 10), Some((4, 6)));
        assert_eq!(parse_range("bytes=4-60", 10), Some((4, 9)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("bytes=0-", 0), None);
        assert_eq!(parse_range("items=0-", 10), None);
    }

    #[test]
    fn paths_cannot_leave_the_root() {
        let root = Path::new("/srv");
        assert_eq!(resolve(root, "a/b"), Some(PathBuf::from("/srv/a/b")));
        assert_eq!(resolve(root, "../etc/passwd"), None);
        assert_eq!(resolve(root, "a/../../b"), None);
        assert_eq!(percent_decode("a%2Fb%41%"), "a/bA%");
    }
}
