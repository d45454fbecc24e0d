//! A device index (`index.json`) as `image::client` uses it: `Index::parse`, its age
//! (`generated_at`), then the pure planning over it (`plan::candidates`, `choose`,
//! `this_round`) from a build number and phase taken from the input's first bytes.
//!
//! Invariants: serialising the index and parsing it again gives the same document (the
//! publisher writes these structs); every chosen path starts where the device is and
//! moves forward.
#![no_main]

use libfuzzer_sys::fuzz_target;
use release_upgrader::image::index::Index;
use release_upgrader::image::plan;
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let build = u64::from(data[0]) * 10;
    let percentage = i64::from(data[1] % 101);
    let json = &data[2..];
    let Ok(index) = Index::parse(json, "fuzz") else {
        return;
    };
    let _ = index.generated_at();
    for image in &index.images {
        let _ = (image.kind(), image.description(), image.size(), image.ordered_files());
    }

    f::trace(&format!("{} images", index.images.len()));
    let written = serde_json::to_vec(&index).expect("an index serialises");
    let again = Index::parse(&written, "fuzz").expect("a written index parses");
    assert_eq!(
        serde_json::to_value(&again).expect("value"),
        serde_json::to_value(&index).expect("value"),
        "index.json does not round-trip"
    );

    for zdelta in [false, true] {
        let paths = plan::candidates(&index, build, plan::Types { zdelta });
        for path in &paths {
            let first = path.first().expect("paths are never empty");
            assert!(first.version > build || first.base == Some(build));
            for pair in path.windows(2) {
                assert_eq!(pair[1].base, Some(pair[0].version));
                assert!(pair[1].version > pair[0].version);
            }
        }
        let _ = plan::max_target(&paths);
        if let Some(chosen) = plan::choose(&paths, percentage) {
            assert!(!chosen.is_empty());
            let round = plan::this_round(&chosen);
            assert!(!round.is_empty() && round.len() <= chosen.len());
        }
    }
});
