//! Which images to install: system-image's candidate paths and weighted scorer, plus a
//! phased-update percentage that is stable per device. Pure functions over an
//! [`Index`]; unit tests run them over system-image's own test data.
//!
//! Candidates (as system-image's `get_candidates`): every full image newer than the
//! current build whose `minversion` allows this build starts a path, as does every
//! delta whose `base` is the current build; each path is then extended through the
//! deltas based on its last image, forking where several are. Score (system-image's
//! `WeightedScorer`, lowest wins): 100 per `bootme` image, plus 1 per MiB above the
//! smallest path, plus 9001 per build short of the highest reachable target, so a path
//! that does not reach the highest target practically never wins. The first path by
//! score (ties: paths through more of our zdeltas first, then the candidates' order, as
//! system-image's sort) whose target is phased in
//! for this device wins; the device's phase is system-image's own number (below), so a
//! device is in or out of a phased rollout with either client.

use sha2::Digest as _;

use crate::image::index::{Image, Index, Kind};

const MIB: u64 = 1024 * 1024;

/// A candidate upgrade path: images in the order they are applied.
pub type Path<'a> = Vec<&'a Image>;

/// Which image types take part in paths.
#[derive(Clone, Copy, Debug)]
pub struct Types {
    /// Our zstd binary deltas (old clients ignore them).
    pub zdelta: bool,
}

impl Default for Types {
    fn default() -> Self {
        Types { zdelta: true }
    }
}

fn is_delta(image: &Image, types: Types) -> bool {
    match image.kind() {
        Some(Kind::Delta) => true,
        Some(Kind::Zdelta) => types.zdelta,
        _ => false,
    }
}

/// Every upgrade path from `build`, in a stable order (index order of the first image,
/// then of the forks).
pub fn candidates(index: &Index, build: u64, types: Types) -> Vec<Path<'_>> {
    let fulls = index
        .images
        .iter()
        .filter(|i| i.kind() == Some(Kind::Full) && i.minversion.unwrap_or(0) <= build);
    let deltas: Vec<&Image> = index.images.iter().filter(|i| is_delta(i, types)).collect();
    let mut queue: std::collections::VecDeque<Path<'_>> = fulls
        .filter(|i| i.version > build)
        .map(|i| vec![i])
        .chain(
            deltas
                .iter()
                .filter(|d| d.base == Some(build))
                .map(|d| vec![*d]),
        )
        .collect();
    let mut paths = Vec::new();
    while let Some(mut path) = queue.pop_front() {
        loop {
            let current = path.last().expect("paths are never empty").version;
            let next: Vec<&Image> = deltas
                .iter()
                .copied()
                // A delta must move forward; a malformed index must not loop us.
                .filter(|d| d.base == Some(current) && d.version > current)
                .collect();
            match next.as_slice() {
                [] => {
                    paths.push(path);
                    break;
                }
                [only] => path.push(only),
                [first, rest @ ..] => {
                    for fork in rest {
                        let mut forked = path.clone();
                        forked.push(fork);
                        queue.push_back(forked);
                    }
                    path.push(first);
                }
            }
        }
    }
    paths
}

/// system-image's weighted scores, one per path (lower is better).
pub fn scores(paths: &[Path<'_>]) -> Vec<u64> {
    let data: Vec<(u64, u64, u64)> = paths
        .iter()
        .map(|path| {
            let target = path.last().map_or(0, |i| i.version);
            let size = path_size(path);
            let reboots = path.iter().filter(|i| i.bootme).count() as u64;
            (target, size, reboots)
        })
        .collect();
    let max_target = data.iter().map(|d| d.0).max().unwrap_or(0);
    let min_size = data.iter().map(|d| d.1).min().unwrap_or(0);
    data.iter()
        .map(|&(target, size, reboots)| {
            let distance = max_target - target;
            // Saturating: sizes and versions are the server's word.
            (100 * reboots)
                .saturating_add((size - min_size) / MIB)
                .saturating_add(distance.saturating_mul(9001))
        })
        .collect()
}

/// The bytes to download for `path` (saturating).
fn path_size(path: &[&Image]) -> u64 {
    path.iter().fold(0, |sum, i| sum.saturating_add(i.size()))
}

/// The highest target among the paths (the phase percentage's seed).
pub fn max_target(paths: &[Path<'_>]) -> Option<u64> {
    paths
        .iter()
        .filter_map(|p| p.last())
        .map(|i| i.version)
        .max()
}

/// The winning path for a device whose phase percentage is `device_percentage`, or
/// `None` when no path is phased in.
pub fn choose<'a>(paths: &[Path<'a>], device_percentage: i64) -> Option<Path<'a>> {
    let scores = scores(paths);
    let mut order: Vec<usize> = (0..paths.len()).collect();
    // Equal scores (system-image counts whole MiB) keep the candidates' order, as
    // system-image's sort over (score, index) does: among the paths a stock client sees,
    // the same one. Paths through our zdeltas, which stock clients never see, go first
    // among their equals, the more zdeltas the sooner: each is the smaller download it was
    // published to be.
    let zdeltas = |i: usize| {
        paths[i]
            .iter()
            .filter(|image| image.kind() == Some(Kind::Zdelta))
            .count()
    };
    order.sort_by_key(|&i| (scores[i], std::cmp::Reverse(zdeltas(i))));
    order.into_iter().map(|i| &paths[i]).find_map(|path| {
        let image_percentage = i64::from(path.last()?.phased_percentage);
        (image_percentage > 0 && device_percentage <= image_percentage).then(|| path.clone())
    })
}

/// This device's percentage for a phased update to `target` on `channel`, in 0..=100:
/// system-image 3.x's `phased_percentage` (helpers.py), so both clients put a device on
/// the same side of a rollout. It is `random.Random('<channel>.<target>.<machine-id>')
/// .randint(0, 100)` in CPython: the string seeds MT19937 as CPython's version-2 seeding
/// does ([`cpython_str_seed`]), and `randint` draws 7 bits until one is below 101.
pub fn phased_percentage(machine_id: &str, channel: &str, target: u64) -> i64 {
    let seed = format!("{channel}.{target}.{}", machine_id.trim());
    let mut mt = rand_mt::Mt::new_with_key(cpython_str_seed(&seed));
    loop {
        let r = mt.next_u32() >> (32 - 7);
        if r < 101 {
            return i64::from(r);
        }
    }
}

/// The key CPython's `random.seed(str)` (version 2) gives `init_by_array`: the string's
/// UTF-8 bytes followed by their SHA-512, read as one big-endian integer, cut into 32-bit
/// words from the least significant up (no leading zero words; one zero word for 0).
fn cpython_str_seed(seed: &str) -> Vec<u32> {
    let mut bytes = seed.as_bytes().to_vec();
    bytes.extend_from_slice(&sha2::Sha512::digest(seed.as_bytes()));
    let mut words: Vec<u32> = bytes
        .rchunks(4)
        .map(|chunk| {
            chunk
                .iter()
                .fold(0u32, |word, &b| (word << 8) | u32::from(b))
        })
        .collect();
    while words.len() > 1 && words.last() == Some(&0) {
        words.pop();
    }
    words
}

/// The images whose files are fetched and applied in one go: the path up to and
/// including the first `bootme` image (the rest follows after that reboot), as
/// system-image's `iter_path`.
pub fn this_round<'a>(path: &[&'a Image]) -> Vec<&'a Image> {
    let mut images = Vec::new();
    for image in path {
        images.push(*image);
        if image.bootme {
            break;
        }
    }
    images
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(name: &str) -> Index {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("tests/conformance/system-image/client-testdata")
            .join(name);
        Index::parse(&std::fs::read(path).unwrap(), name).unwrap()
    }

    fn descriptions(path: &[&Image]) -> Vec<String> {
        path.iter().map(|i| i.description().to_owned()).collect()
    }

    fn versions(path: &[&Image]) -> Vec<u64> {
        path.iter().map(|i| i.version).collect()
    }

    const ALL: Types = Types { zdelta: true };

    // The assertions below are those of system-image's tests/test_candidates.py on the
    // same files.
    #[test]
    fn candidates_as_system_image() {
        assert!(candidates(&index("candidates.index_01.json"), 1400, ALL).is_empty());
        let i = index("candidates.index_02.json");
        assert!(candidates(&i, 100, ALL).is_empty());
        let c = candidates(&i, 800, ALL);
        assert_eq!(c.len(), 1);
        assert_eq!(descriptions(&c[0]), ["New full build 1"]);
        let i = index("candidates.index_03.json");
        let mut c = candidates(&i, 400, ALL);
        c.sort_by_key(|p| p[0].version);
        assert_eq!(c.len(), 2);
        assert_eq!(descriptions(&c[0]), ["New full build 1"]);
        assert_eq!(descriptions(&c[1]), ["New full build 2"]);
        let i = index("candidates.index_04.json");
        assert!(candidates(&i, 100, ALL).is_empty());
        let c = candidates(&i, 500, ALL);
        assert_eq!(c.len(), 1);
        assert_eq!(descriptions(&c[0]), ["Delta 2"]);
        let i = index("candidates.index_05.json");
        let mut c = candidates(&i, 1100, ALL);
        assert_eq!(c.len(), 2);
        c.sort_by_key(|p| p[0].version);
        assert_eq!(
            [descriptions(&c[0]), descriptions(&c[1])].concat(),
            ["Delta 2", "Delta 1"]
        );
        let i = index("candidates.index_06.json");
        let c = candidates(&i, 1000, ALL);
        assert_eq!(c.len(), 1);
        assert_eq!(versions(&c[0]), [1300, 1301, 1302]);
        assert_eq!(descriptions(&c[0]), ["Full 1", "Delta 1", "Delta 2"]);
        let c = candidates(&i, 1300, ALL);
        assert_eq!(versions(&c[0]), [1301, 1302]);
        let i = index("candidates.index_07.json");
        let mut c = candidates(&i, 1200, ALL);
        assert_eq!(c.len(), 2);
        c.sort_by_key(|p| p.len());
        assert_eq!(versions(&c[0]), [1300, 1302]);
        assert_eq!(descriptions(&c[0]), ["Full 1", "Delta 2"]);
        assert_eq!(versions(&c[1]), [1300, 1301, 1302]);
        assert_eq!(descriptions(&c[1]), ["Full 1", "Delta 1", "Delta 3"]);
    }

    #[test]
    fn downloads_as_system_image() {
        // test_get_downloads: path B wins; all files of its three images.
        let i = index("candidates.index_08.json");
        let c = candidates(&i, 600, ALL);
        let winner = choose(&c, 0).unwrap();
        assert_eq!(descriptions(&winner), ["Full B", "Delta B.1", "Delta B.2"]);
        let mut paths: Vec<&str> = this_round(&winner)
            .iter()
            .flat_map(|i| i.files.iter().map(|f| f.path.as_str()))
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "/3/4/5.txt",
                "/4/5/6.txt",
                "/5/6/7.txt",
                "/6/7/8.txt",
                "/7/8/9.txt",
                "/8/9/a.txt",
                "/9/a/b.txt",
                "/e/d/c.txt",
                "/f/e/d.txt"
            ]
        );
        // test_get_downloads_with_bootme: Delta B.1 has bootme; B.2 waits.
        let i = index("candidates.index_09.json");
        let c = candidates(&i, 600, ALL);
        let winner = choose(&c, 0).unwrap();
        assert_eq!(descriptions(&winner), ["Full B", "Delta B.1", "Delta B.2"]);
        let files: usize = this_round(&winner).iter().map(|i| i.files.len()).sum();
        assert_eq!(files, 6);
    }

    #[test]
    fn new_version_regime() {
        let i = index("candidates.index_13.json");
        let c = candidates(&i, 0, ALL);
        assert_eq!(c.len(), 3);
        assert_eq!(descriptions(&c[0]), ["Full A", "Delta A.1", "Delta A.2"]);
        assert_eq!(descriptions(&c[1]), ["Full B", "Delta B.1", "Delta B.2"]);
        assert_eq!(descriptions(&c[2]), ["Full C", "Delta C.1"]);
        let winner = choose(&c, 0).unwrap();
        assert_eq!(descriptions(&winner), ["Full B", "Delta B.1", "Delta B.2"]);
        assert_eq!(versions(&winner), [200, 201, 304]);
    }

    // system-image's tests/test_scores.py (its index_08/09/17/22/26 are the
    // scores.index_02/03/04/05/01 samples here).
    #[test]
    fn scores_as_system_image() {
        let i = index("scores.index_02.json");
        let c = candidates(&i, 600, ALL);
        assert_eq!(scores(&c), [200]);
        assert_eq!(versions(&choose(&c, 0).unwrap()), [1300, 1301]);

        let i = index("scores.index_03.json");
        let c = candidates(&i, 600, ALL);
        assert_eq!(scores(&c), [300, 200, 9401]);
        let winner = choose(&c, 0).unwrap();
        assert_eq!(versions(&winner), [1200, 1201, 1304]);
        assert_eq!(descriptions(&winner), ["Full B", "Delta B.1", "Delta B.2"]);

        // Tied candidates (LP: #1206866).
        let i = index("scores.index_04.json");
        let c = candidates(&i, 1, ALL);
        let winner = choose(&c, 0).unwrap();
        assert_eq!(versions(&winner), [1800]);
    }

    #[test]
    fn phases_as_system_image() {
        let i = index("scores.index_05.json");
        let c = candidates(&i, 100, ALL);
        // Outside B's 50% phase: A; inside or equal: B.
        assert_eq!(descriptions(&choose(&c, 66).unwrap())[0], "Full A");
        assert_eq!(descriptions(&choose(&c, 50).unwrap())[0], "Full B");
        assert_eq!(descriptions(&choose(&c, 22).unwrap())[0], "Full B");
        // B is pulled (0%): never B, whatever the device percentage.
        let i = index("scores.index_01.json");
        let c = candidates(&i, 100, ALL);
        for p in [0, -100] {
            assert_eq!(
                descriptions(&choose(&c, p).unwrap()),
                ["Full A", "Delta A.1", "Delta A.2"]
            );
        }
        assert!(choose(&c, 1000).is_none());
    }

    #[test]
    fn winner_samples() {
        for name in ["winner.index_01.json", "winner.index_02.json"] {
            let i = index(name);
            let c = candidates(&i, 100, ALL);
            assert_eq!(c.len(), 3, "{name}");
            assert_eq!(descriptions(&c[0]), ["Full A", "Delta A.1", "Delta A.2"]);
            assert_eq!(descriptions(&c[1]), ["Full B", "Delta B.1", "Delta B.2"]);
            assert_eq!(descriptions(&c[2]), ["Full C", "Delta C.1"]);
            let winner = choose(&c, 0).unwrap();
            assert_eq!(descriptions(&winner), ["Full B", "Delta B.1", "Delta B.2"]);
        }
    }

    /// system-image's own numbers: 60 channel/target/machine-id vectors computed by its
    /// `phased_percentage` (CPython's random module), in the shared conformance data.
    #[test]
    fn the_phase_is_system_images_own_for_every_conformance_vector() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("tests/conformance/system-image/phased-percentage-vectors.tsv");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut checked = 0;
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let fields: Vec<&str> = line.split('\t').collect();
            let [channel, target, machine_id, expected] = fields[..] else {
                panic!("bad line {line:?}");
            };
            assert_eq!(
                phased_percentage(machine_id, channel, target.parse().unwrap()),
                expected.parse::<i64>().unwrap(),
                "{line}"
            );
            checked += 1;
        }
        assert_eq!(checked, 60);
    }

    #[test]
    fn phase_is_stable_per_device_and_spread_over_devices() {
        let a = phased_percentage("0123abcd", "stable", 1304);
        assert_eq!(a, phased_percentage("0123abcd\n", "stable", 1304));
        assert!((0..=100).contains(&a));
        let spread: std::collections::BTreeSet<i64> = (0..200)
            .map(|n| phased_percentage(&format!("machine-{n}"), "stable", 1304))
            .collect();
        assert!(spread.len() > 50);
    }

    #[test]
    fn equal_scores_keep_the_candidates_order_as_system_image_does() {
        // A full image of `full_size` bytes listed before a 3000-byte delta.
        let scored = |full_size: u64| {
            let i: Index = serde_json::from_str(&format!(
                r#"{{"global": {{"generated_at": "1"}}, "images": [
                  {{"type": "full", "version": 2, "files": [{{"size": {full_size}}}]}},
                  {{"type": "delta", "base": 1, "version": 2, "files": [{{"size": 3000}}]}}]}}"#
            ))
            .unwrap();
            let c = candidates(&i, 1, ALL);
            (scores(&c), choose(&c, 0).unwrap()[0].kind.clone())
        };
        // Within one MiB the scores tie: system-image keeps the first candidate (the full
        // image), however many bytes the other saves.
        assert_eq!(scored(900_000), (vec![0, 0], "full".to_owned()));
        // One MiB more is a point more, and the delta wins.
        assert_eq!(scored(2_000_000), (vec![1, 0], "delta".to_owned()));
    }

    #[test]
    fn a_zdelta_path_goes_first_among_equals_and_stock_order_holds_without_it() {
        let i: Index = serde_json::from_str(
            r#"{"global": {"generated_at": "1"}, "images": [
              {"type": "full", "version": 2, "files": [{"size": 9000}]},
              {"type": "delta", "base": 1, "version": 2, "files": [{"size": 3000}]},
              {"type": "zdelta", "base": 1, "version": 2, "files": [{"size": 2000}]}]}"#,
        )
        .unwrap();
        let c = candidates(&i, 1, ALL);
        assert_eq!(scores(&c), [0, 0, 0]);
        assert_eq!(choose(&c, 0).unwrap()[0].kind, "zdelta");
        let c = candidates(&i, 1, Types { zdelta: false });
        assert_eq!(choose(&c, 0).unwrap()[0].kind, "full");
    }

    #[test]
    fn zdelta_takes_part_only_when_enabled() {
        let i: Index = serde_json::from_str(
            r#"{"global": {"generated_at": "1"}, "images": [
              {"type": "delta", "base": 1, "version": 2, "files": [{"size": 300000000}]},
              {"type": "zdelta", "base": 1, "version": 2, "files": [{"size": 100}]}]}"#,
        )
        .unwrap();
        let winner = choose(&candidates(&i, 1, ALL), 0).unwrap();
        assert_eq!(winner[0].kind, "zdelta");
        let winner = choose(&candidates(&i, 1, Types { zdelta: false }), 0).unwrap();
        assert_eq!(winner[0].kind, "delta");
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/index.rs`): a path whose sizes add up beyond
    /// 64 bits, or a target so far beyond another that 9001 per build overflows, panicked
    /// (or wrapped to a small, winning score in release builds). Scores saturate: such a
    /// path scores worst, and the sane path still wins.
    #[test]
    fn scores_of_huge_sizes_and_distances_saturate() {
        let i: Index = serde_json::from_str(
            r#"{"global": {"generated_at": "1"}, "images": [
              {"type": "delta", "base": 1, "version": 2, "files": [{"size": 100}]},
              {"type": "delta", "base": 1, "version": 3, "files": [{"size": 18446744073709551615}]},
              {"type": "delta", "base": 3, "version": 4, "files": [{"size": 18446744073709551615}]},
              {"type": "delta", "base": 1, "version": 18446744073709551615, "files": [{"size": 1}],
               "phased-percentage": 0}]}"#,
        )
        .unwrap();
        let c = candidates(&i, 1, ALL);
        assert_eq!(versions(&c[0]), [2]);
        assert_eq!(versions(&c[1]), [3, 4]);
        let s = scores(&c);
        assert_eq!(s[0], u64::MAX, "2 is far below the highest target");
        assert_eq!(s[1], u64::MAX, "3 → 4 is far below it too, and huge");
        assert_eq!(s[2], 0);
        // The highest target is not phased in; of the rest, the smaller download wins.
        assert_eq!(versions(&choose(&c, 50).unwrap()), [2]);
    }
}
