//! The upgrade's download of the archives apt would fetch (`upgrade::prefetch`), against
//! the fixture server: every archive lands under apt's name only with the right digest.

use ru_client::Error;
use ru_client::upgrade::prefetch::{Archive, fetch_all};
use ru_format::digest::Sha256;
use ru_testing::serve::Server;
use ru_trust::fetch::{FetchConfig, Fetcher};

fn archive(server: &Server, name: &str, bytes: &[u8]) -> Archive {
    Archive {
        uri: format!("{}pool/{name}", server.url()),
        file: name.to_owned(),
        size: bytes.len() as u64,
        sha256: Sha256::of(bytes),
    }
}

fn fetcher() -> Fetcher {
    let mut config = FetchConfig::new("test");
    config.retries = 0;
    Fetcher::new(config)
}

#[test]
fn archives_land_under_their_apt_names_and_are_reused() {
    let srv = tempfile::tempdir().unwrap();
    std::fs::create_dir(srv.path().join("pool")).unwrap();
    let server = Server::start(srv.path()).unwrap();
    let mut archives = Vec::new();
    for i in 0..6 {
        let name = format!("p{i}_1.0_amd64.deb");
        let bytes = vec![b'a' + i as u8; 1000 + i];
        std::fs::write(srv.path().join("pool").join(&name), &bytes).unwrap();
        archives.push(archive(&server, &name, &bytes));
    }
    let dir = tempfile::tempdir().unwrap();
    let fetched = fetch_all(&fetcher(), &archives, dir.path()).unwrap();
    assert_eq!(fetched, archives.iter().map(|a| a.size).sum::<u64>());
    for a in &archives {
        let bytes = std::fs::read(dir.path().join(&a.file)).unwrap();
        assert_eq!(Sha256::of(&bytes), a.sha256);
    }
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), archives.len(), "stray files: {names:?}");
    // A second run finds them all and asks the server for nothing.
    let before = server.requests().len();
    assert_eq!(fetch_all(&fetcher(), &archives, dir.path()).unwrap(), 0);
    assert_eq!(server.requests().len(), before);
}

#[test]
fn a_tampered_archive_never_gets_its_apt_name() {
    let srv = tempfile::tempdir().unwrap();
    std::fs::create_dir(srv.path().join("pool")).unwrap();
    let server = Server::start(srv.path()).unwrap();
    let good = b"the real archive".to_vec();
    let mut evil = good.clone();
    evil[0] ^= 1;
    std::fs::write(srv.path().join("pool/a_1_amd64.deb"), &evil).unwrap();
    let archives = vec![archive(&server, "a_1_amd64.deb", &good)];
    let dir = tempfile::tempdir().unwrap();
    let err = fetch_all(&fetcher(), &archives, dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Trust(ru_trust::Error::HashMismatch { .. })),
        "{err:?}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_wrong_file_of_the_right_size_is_replaced() {
    // apt would install it: it checks only the size of what it finds.
    let srv = tempfile::tempdir().unwrap();
    std::fs::create_dir(srv.path().join("pool")).unwrap();
    let server = Server::start(srv.path()).unwrap();
    let good = b"the real archive".to_vec();
    std::fs::write(srv.path().join("pool/a_1_amd64.deb"), &good).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a_1_amd64.deb"), vec![0u8; good.len()]).unwrap();
    let archives = vec![archive(&server, "a_1_amd64.deb", &good)];
    fetch_all(&fetcher(), &archives, dir.path()).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("a_1_amd64.deb")).unwrap(),
        good
    );
}
