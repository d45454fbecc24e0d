//! A device index (`index.json`) as `image::client` uses it: `Index::parse`, its age
//! (`generated_at`), then the pure planning over it (`plan::candidates`, `choose`,
//! `this_round`) from a build number and phase taken from the input's first bytes.
//!
//! Invariants: serialising the index and parsing it again gives the same document (the
//! publisher writes these structs); every chosen path starts where the device is and
//! moves forward.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ru_client::image::index::Index;
use ru_client::image::plan;
use release_upgrader_fuzz as f;
use serde_json::Value;

/// JSON equality, except that floats (which only unknown keys, kept as they are, can
/// hold) may differ in the last bits: serde_json does not promise to read back exactly
/// the float it wrote.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().expect("f64"), y.as_f64().expect("f64"));
            x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

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
    let (a, b) = (
        serde_json::to_value(&again).expect("value"),
        serde_json::to_value(&index).expect("value"),
    );
    assert!(same(&a, &b), "index.json does not round-trip:\n{a}\n{b}");

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
