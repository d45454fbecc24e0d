//! The fetcher against a misbehaving server on 127.0.0.1: resume, retries, caps,
//! timeouts. Nothing reaches its destination unless size and digest match.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ru_format::ExitCode;
use ru_format::digest::Sha256;
use ru_testing::serve::{Fault, RequestInfo, Server};
use ru_trust::Error;
use ru_trust::fetch::{FetchConfig, Fetcher, Location, partial_path};

struct Setup {
    dir: tempfile::TempDir,
    data: Vec<u8>,
    sha: Sha256,
    server: Server,
}

fn setup(hook: impl Fn(&RequestInfo) -> Fault + Send + Sync + 'static) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let srv = dir.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    // 300 kB of non-repeating data, so misplaced bytes change the digest.
    let data: Vec<u8> = (0u32..300_000)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(srv.join("file.deb"), &data).unwrap();
    let sha = Sha256::of(&data);
    let server = Server::start_with(&srv, hook).unwrap();
    Setup {
        dir,
        data,
        sha,
        server,
    }
}

fn fetcher(retries: u32) -> Fetcher {
    let mut config = FetchConfig::new("fetch-test");
    config.retries = retries;
    config.retry_delay = Duration::from_millis(5);
    Fetcher::new(config)
}

impl Setup {
    fn location(&self) -> Location {
        Location::parse(&format!("{}file.deb", self.server.url())).unwrap()
    }
    fn dest(&self) -> std::path::PathBuf {
        self.dir.path().join("out/file.deb")
    }
    fn fetch(&self, f: &Fetcher) -> Result<(), Error> {
        f.fetch_file(
            &self.location(),
            &self.dest(),
            self.data.len() as u64,
            self.sha,
            "file.deb",
        )
        .map(|fetched| {
            assert_eq!(fetched.path(), self.dest());
            assert_eq!(std::fs::read(self.dest()).unwrap(), self.data);
        })
    }
    fn ranges(&self) -> Vec<Option<String>> {
        self.server
            .requests()
            .iter()
            .map(|r| r.header("Range").map(str::to_owned))
            .collect()
    }
    fn nothing_left(&self) {
        assert!(!self.dest().exists(), "destination exists after a failure");
        assert!(
            !partial_path(&self.dest()).exists(),
            "partial file left behind"
        );
    }
}

fn first_n(n: usize, fault: Fault) -> impl Fn(&RequestInfo) -> Fault + Send + Sync + 'static {
    move |req| {
        if req.count <= n {
            fault.clone()
        } else {
            Fault::None
        }
    }
}

#[test]
fn plain_download_lands_only_after_verification() {
    let s = setup(|_| Fault::None);
    s.fetch(&fetcher(0)).unwrap();
    assert!(!partial_path(&s.dest()).exists());
}

#[test]
fn interrupted_download_resumes_with_range() {
    let s = setup(first_n(1, Fault::Truncate(100_000)));
    s.fetch(&fetcher(2)).unwrap();
    assert_eq!(s.ranges(), [None, Some("bytes=100000-".to_owned())]);
}

#[test]
fn partial_file_from_an_earlier_run_is_resumed() {
    let s = setup(|_| Fault::None);
    std::fs::create_dir_all(s.dest().parent().unwrap()).unwrap();
    std::fs::write(partial_path(&s.dest()), &s.data[..123_456]).unwrap();
    s.fetch(&fetcher(0)).unwrap();
    assert_eq!(s.ranges(), [Some("bytes=123456-".to_owned())]);
}

#[test]
fn server_ignoring_range_restarts_from_zero() {
    let s = setup(|_| Fault::IgnoreRange);
    std::fs::create_dir_all(s.dest().parent().unwrap()).unwrap();
    std::fs::write(partial_path(&s.dest()), &s.data[..50_000]).unwrap();
    s.fetch(&fetcher(0)).unwrap();
}

#[test]
fn stale_partial_file_is_discarded_after_a_digest_mismatch() {
    let s = setup(|_| Fault::None);
    std::fs::create_dir_all(s.dest().parent().unwrap()).unwrap();
    // A partial from another version of the file: resuming gives a wrong digest once.
    std::fs::write(partial_path(&s.dest()), vec![0u8; 50_000]).unwrap();
    s.fetch(&fetcher(1)).unwrap();
    assert_eq!(s.ranges(), [Some("bytes=50000-".to_owned()), None]);
}

#[test]
fn truncation_without_retries_left_is_a_network_error_and_keeps_the_partial() {
    let s = setup(|_| Fault::Truncate(10_000));
    let err = s.fetch(&fetcher(1)).unwrap_err();
    assert_eq!(err.exit_code(), ExitCode::Network, "{err}");
    assert!(!s.dest().exists());
    // Kept for the next run to resume.
    assert!(partial_path(&s.dest()).exists());
}

#[test]
fn body_cut_without_a_length_is_retried_and_resumed() {
    let s = setup(first_n(1, Fault::TruncateWithoutLength(70_000)));
    s.fetch(&fetcher(1)).unwrap();
    assert_eq!(s.ranges(), [None, Some("bytes=70000-".to_owned())]);
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let s = setup(first_n(2, Fault::Status(502)));
    s.fetch(&fetcher(3)).unwrap();
    assert_eq!(s.server.requests().len(), 3);
}

#[test]
fn server_errors_stop_after_the_retry_budget() {
    let s = setup(|_| Fault::Status(500));
    let err = s.fetch(&fetcher(2)).unwrap_err();
    assert!(
        matches!(err, Error::HttpStatus { status: 500, .. }),
        "{err}"
    );
    assert_eq!(err.exit_code(), ExitCode::Network);
    assert_eq!(s.server.requests().len(), 3);
}

#[test]
fn client_errors_are_not_retried() {
    let s = setup(|_| Fault::Status(403));
    let err = s.fetch(&fetcher(3)).unwrap_err();
    assert!(
        matches!(err, Error::HttpStatus { status: 403, .. }),
        "{err}"
    );
    assert_eq!(s.server.requests().len(), 1);
}

#[test]
fn wrong_bytes_are_refused_and_removed() {
    let s = setup(|_| Fault::Corrupt);
    let err = s.fetch(&fetcher(3)).unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
    assert_eq!(err.exit_code(), ExitCode::Verification);
    assert_eq!(
        s.server.requests().len(),
        1,
        "a digest mismatch is not retried"
    );
    s.nothing_left();
}

#[test]
fn body_larger_than_promised_is_cut_off() {
    for fault in [Fault::Oversize(1), Fault::OversizeWithoutLength(100_000)] {
        let s = setup(move |_| fault.clone());
        let err = s.fetch(&fetcher(3)).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        s.nothing_left();
    }
}

#[test]
fn metadata_is_capped_without_a_promised_size() {
    let s = setup(|_| Fault::None);
    let err = fetcher(0).fetch_bytes(&s.location(), 1000).unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 1000, .. }), "{err}");
    assert_eq!(
        fetcher(0).fetch_bytes(&s.location(), 300_000).unwrap(),
        s.data
    );
}

#[test]
fn slow_trickle_is_abandoned() {
    let s = setup(|_| Fault::Trickle {
        chunk: 100,
        delay: Duration::from_millis(100),
    });
    let mut config = FetchConfig::new("fetch-test");
    config.retries = 0;
    config.low_speed_limit = 10_000;
    config.low_speed_time = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let err = Fetcher::new(config)
        .fetch_bytes(&s.location(), 1 << 20)
        .unwrap_err();
    assert!(err.to_string().contains("too slow"), "{err}");
    assert_eq!(err.exit_code(), ExitCode::Network);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn stalled_transfer_times_out() {
    let s = setup(|_| Fault::Trickle {
        chunk: 1000,
        delay: Duration::from_secs(30),
    });
    let mut config = FetchConfig::new("fetch-test");
    config.retries = 0;
    config.stall_timeout = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let err = Fetcher::new(config)
        .fetch_bytes(&s.location(), 1 << 20)
        .unwrap_err();
    assert_eq!(err.exit_code(), ExitCode::Network, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn if_modified_since_gets_not_modified() {
    let s = setup(|_| Fault::None);
    let f = fetcher(0);
    let first = f.fetch_if_modified(&s.location(), 1 << 20, None).unwrap();
    let stamp = match first {
        ru_trust::fetch::Conditional::Modified { last_modified, .. } => last_modified.unwrap(),
        other => panic!("{other:?}"),
    };
    let second = f
        .fetch_if_modified(&s.location(), 1 << 20, Some(&stamp))
        .unwrap();
    assert!(matches!(second, ru_trust::fetch::Conditional::NotModified));
}

#[test]
fn concurrent_fetches_share_one_client() {
    let s = Arc::new(setup(|_| Fault::None));
    let f = Arc::new(fetcher(0));
    let done = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (s, f, done) = (s.clone(), f.clone(), done.clone());
            std::thread::spawn(move || {
                let dest = s.dir.path().join(format!("out/{i}.deb"));
                f.fetch_file(&s.location(), &dest, s.data.len() as u64, s.sha, "x")
                    .unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 4);
}

/// A server whose `moved.deb` redirects to `target`, where `{http}` and `{https}` stand
/// for the server's own address with that scheme.
fn redirecting(target: &'static str) -> Setup {
    let base: Arc<std::sync::Mutex<String>> = Arc::default();
    let hook_base = base.clone();
    let s = setup(move |req| {
        if req.path == "moved.deb" {
            let address = hook_base.lock().unwrap().clone();
            Fault::Redirect(
                target
                    .replace("{http}", &format!("http://{address}"))
                    .replace("{https}", &format!("https://{address}")),
            )
        } else {
            Fault::None
        }
    });
    *base.lock().unwrap() = s.server.addr().to_string();
    s
}

#[test]
fn a_redirect_between_http_locations_is_followed_without_the_ca_store() {
    let s = redirecting("{http}/file.deb");
    let moved = Location::parse(&format!("{}moved.deb", s.server.url())).unwrap();
    fetcher(0)
        .fetch_file(&moved, &s.dest(), s.data.len() as u64, s.sha, "moved.deb")
        .unwrap();
    assert_eq!(std::fs::read(s.dest()).unwrap(), s.data);
    let paths: Vec<String> = s.server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["moved.deb", "file.deb"]);
}

#[test]
fn a_redirect_from_http_to_https_is_handed_to_the_tls_client() {
    // The plain client stops at the redirect; the TLS client asks again and follows it to
    // https, where this plain-HTTP server cannot complete a TLS handshake.
    let s = redirecting("{https}/file.deb");
    let moved = Location::parse(&format!("{}moved.deb", s.server.url())).unwrap();
    let err = fetcher(0)
        .fetch_file(&moved, &s.dest(), s.data.len() as u64, s.sha, "moved.deb")
        .unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err:?}");
    assert!(
        !err.to_string().contains("302"),
        "the redirect was not followed: {err}"
    );
    let asked = s
        .server
        .requests()
        .iter()
        .filter(|r| r.path == "moved.deb")
        .count();
    assert_eq!(asked, 2, "plain client, then the TLS client");
    assert!(!s.dest().exists());
}
