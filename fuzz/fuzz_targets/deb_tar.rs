//! The tar members of a .deb, reached through the real entry points: the fuzzed bytes are
//! an uncompressed tar (header checksums fixed up unless the first byte says not to)
//! placed as `data.tar` of a helper package and extracted under the helper or the
//! upstream policy, or placed as `control.tar` and read by `deb::read_control`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    let Some((mode, tar)) = f::tar_input(data) else {
        return;
    };
    if mode & 4 != 0 {
        let deb = f::deb(&[("control.tar", &tar), ("data.tar", f::helper_control_tar())]);
        let path = f::scratch_file("input.deb", &deb);
        if let Ok(control) = ru_format::deb::read_control(&path) {
            for script in &control.maintainer_scripts {
                assert!(ru_format::deb::MAINTAINER_SCRIPTS.contains(&script.as_str()));
            }
        }
        return;
    }
    let deb = f::deb(&[("control.tar", f::helper_control_tar()), ("data.tar", &tar)]);
    f::extract_and_check(&deb, mode & 2 == 0);
});
