//! `.gz` files as token streams (`image::gztokens`), both ways, as the device uses them:
//! a base file's tokens (`tokens`), and a patched token stream made a file again
//! (`join`, whose input comes out of a patch frame).
//!
//! Mode (first byte) even: the rest is a gzip file. `tokens` of it, joined with its
//! header, tokenise back to the same stream — or the join is refused, and then only for
//! a file coding length 258 the uncommon way, which `split` refuses (its tokens re-code
//! it five bits shorter and the padding may no longer fit); `split` may refuse, but what
//! it accepts joins back to the exact file.
//! Mode odd: the rest is `header SEP tokens`; when the header is one the device accepts
//! (as `regzip::GzipPatch::from_records` checks it) and `join` succeeds, the file it
//! made tokenises back to the same stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ru_client::image::{gztokens, regzip};
use release_upgrader_fuzz as f;

fuzz_target!(init: f::init(), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let gz = rest;
        if let Ok(tokens) = gztokens::tokens(gz) {
            let header = &gz[..regzip::header_len(gz).expect("tokens read a header")];
            match gztokens::join(header, &tokens) {
                Ok(file) => {
                    let again = gztokens::tokens(&file).expect("a joined file tokenises");
                    assert!(again == tokens, "tokens → join → tokens differs");
                }
                Err(e) => assert!(
                    gztokens::split(gz).is_err_and(|s| s.contains("258")),
                    "the tokens of a commonly coded file do not join: {e}"
                ),
            }
        }
        f::trace(&format!("tokens: {:?}, split: {:?}", gztokens::tokens(gz).map(|t| t.len()), gztokens::split(gz).map(|s| s.tokens.len())));
        if let Ok(split) = gztokens::split(gz) {
            let file = gztokens::join(&split.header, &split.tokens).expect("split joins");
            assert!(file == gz, "split → join is not the file");
        }
        return;
    }
    let parts = f::split_parts(rest, 2);
    let (header, tokens) = (parts[0], parts[1]);
    if regzip::header_len(&[header, &[0u8; 8]].concat()) != Some(header.len()) {
        return;
    }
    f::trace(&format!("join: {:?}", gztokens::join(header, tokens).map(|f| f.len())));
    if let Ok(file) = gztokens::join(header, tokens) {
        let again = gztokens::tokens(&file)
            .unwrap_or_else(|e| panic!("a joined file does not tokenise: {e}"));
        assert!(again == tokens, "join → tokens differs from the stream joined");
    }
});
