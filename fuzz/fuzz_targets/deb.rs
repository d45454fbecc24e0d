//! A whole .deb as the client reads a downloaded helper: `deb::read_control`, then
//! `deb::extract` under the helper policy (ar container, member order, compressed
//! control and data members, control file, tar entries, placement and link checks).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: release_upgrader_fuzz::init(), |data: &[u8]| {
    release_upgrader_fuzz::extract_and_check(data, true);
});
