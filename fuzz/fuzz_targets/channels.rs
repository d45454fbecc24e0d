//! `channels.json` as `image::client` uses it: `parse_channels`, then
//! `resolve_channel` from every channel name (redirects must end, with an answer or an
//! error). Round trip: the channels serialised and parsed again are equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ru_client::image::index::{parse_channels, resolve_channel};
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    let Ok(channels) = parse_channels(data, "fuzz") else {
        return;
    };
    f::trace(&format!("{} channels", channels.len()));
    let written = serde_json::to_vec(&channels).expect("channels serialise");
    let again = parse_channels(&written, "fuzz").expect("written channels parse");
    assert_eq!(again, channels, "channels.json does not round-trip");
    for name in channels.keys().chain(std::iter::once(&"daily".to_owned())) {
        if let Ok((resolved, channel)) = resolve_channel(&channels, name) {
            assert_eq!(channels.get(&resolved), Some(channel));
            assert!(channel.redirect.as_ref().is_none_or(|r| *r == resolved));
        }
    }
});
