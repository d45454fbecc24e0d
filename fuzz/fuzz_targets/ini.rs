//! INI files (`ini::Ini::parse`) and the system-image configuration built from them
//! (`image::config::Config::from_texts`: config.d, then the `channel.ini` an image
//! writes), then the server URLs the client derives from it.
//!
//! Input: `config.d text SEP channel.ini text`. Invariants: every key `section()` lists
//! is found by `get()` (keys are case-insensitive); merging a document over itself
//! changes nothing.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use ru_client::image::config::{self, Config};
use ru_format::ini::Ini;
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    let parts = f::split_parts(data, 2);
    let texts: Vec<(PathBuf, String)> = parts
        .iter()
        .zip(["config.d/00.ini", "channel.ini"])
        .map(|(p, name)| (PathBuf::from(name), String::from_utf8_lossy(p).into_owned()))
        .collect();
    if let Ok(ini) = Ini::parse(&texts[0].1) {
        let mut merged = ini.clone();
        merged.merge(ini.clone());
        assert_eq!(merged, ini);
        for line in texts[0].1.lines() {
            // Indented lines may be continuations, not sections.
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some(name) = line.trim().strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
                continue;
            };
            let section = ini.section(name.trim()).expect("a parsed section exists");
            for (key, value) in section {
                assert_eq!(ini.get(name.trim(), key), Some(value.as_str()));
                assert_eq!(ini.get(name.trim(), &key.to_ascii_uppercase()), Some(value.as_str()));
            }
        }
    }
    let config = Config::from_texts(&texts);
    f::trace(&format!("config: {:?}", config.as_ref().map(|c| c.channel.clone()).map_err(|e| e.to_string())));
    if let Ok(config) = config {
        let _ = config.metadata_base();
        let _ = config.files_base();
        if let Some(timeout) = config.ini.get("system", "timeout") {
            assert_eq!(config::parse_duration(timeout), Some(config.timeout));
        }
    }
});
