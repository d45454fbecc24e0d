//! A package's `control` file (`deb::Control::parse`), with a round trip: the fields
//! written back as dpkg writes them (`Name: value`, continuation lines as kept) parse to
//! the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ru_format::deb::Control;
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let control = Control::parse(text, Vec::new());
    f::trace(&format!("control: {:?}", control.as_ref().map(|c| c.package.clone())));
    let Ok(control) = control else {
        return;
    };
    assert!(control.package.len() >= 2);
    assert_eq!(control.field("Package"), Some(control.package.as_str()));
    let mut names: Vec<String> = control
        .fields
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), control.fields.len(), "duplicate fields accepted");
    let written: String = control
        .fields
        .iter()
        .map(|(n, v)| format!("{n}: {v}\n"))
        .collect();
    let again = Control::parse(&written, Vec::new())
        .unwrap_or_else(|e| panic!("the written control does not parse: {e}\n{written}"));
    assert_eq!(again.fields, control.fields);
    assert_eq!(again.version, control.version);
    assert_eq!(again.installed_size_kib, control.installed_size_kib);
});
