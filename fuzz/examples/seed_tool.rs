//! Makes the seeds `fuzz/seed.sh` cannot make with command-line tools, with the crate's
//! own writers (a plain build: `cargo run --example seed_tool`, never instrumented):
//!
//! - `tokens FILE.gz`: `header SEP tokens` of a gzip file (`image::gztokens::split`);
//! - `zdelta plain|content|tokens|branches|pcrel|alone BASE TARGET [BASE_PATH]`: `records SEP
//!   base SEP frame`
//!   of a zdelta patch member (`publish::image::zdelta`), as the zdelta target reads it.
//!
//! Output goes to stdout.

use std::io::Write;

use ru_format::digest::Sha256;
use ru_format::image::branches::Filter;
use ru_format::image::gztokens;
use ru_publish::image::zdelta::{self, PatchBase, PatchInfo};
use release_upgrader_fuzz::SEP;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let read = |p: &str| std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let mut out = Vec::new();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["tokens", gz] => {
            let split = gztokens::split(&read(gz)).expect("a gzip file tokens can rebuild");
            out.extend_from_slice(&split.header);
            out.extend_from_slice(SEP);
            out.extend_from_slice(&split.tokens);
        }
        ["zdelta", kind, base, target, rest @ ..] => {
            let (base, target) = (read(base), read(target));
            let x86 = match *kind {
                "branches" => Some(Filter::Branches),
                "pcrel" => Some(Filter::PcRelative),
                _ => None,
            };
            let (frame, gzip) = match (*kind, x86) {
                ("plain", _) => (zdelta::make_patch(&base, &target, 3).expect("patch"), None),
                ("alone", _) => (
                    zdelta::make_x86_alone(&target, 3)
                        .expect("patch")
                        .expect("the file is an x86-64 ELF file"),
                    None,
                ),
                (_, Some(filter)) => (
                    zdelta::make_x86_patch(&base, &target, 3, filter)
                        .expect("patch")
                        .expect("both files are x86-64 ELF files"),
                    None,
                ),
                ("content", _) => {
                    let (frame, gzip) = zdelta::make_gzip_patch(&base, &target, 3)
                        .expect("patch")
                        .expect("both files rebuild from their content");
                    (frame, Some(gzip))
                }
                ("tokens", _) => {
                    let (frame, gzip) = zdelta::make_tokens_patch(&base, &target, 3)
                        .expect("patch")
                        .expect("both files rebuild from their tokens");
                    (frame, Some(gzip))
                }
                (other, _) => panic!("unknown patch kind {other}"),
            };
            let info = PatchInfo {
                base: (*kind != "alone").then(|| PatchBase {
                    sha256: Sha256::of(&base),
                    path: rest.first().map(|p| p.to_string()),
                }),
                sha256: Sha256::of(&target),
                size: target.len() as u64,
                gzip,
                x86: match *kind {
                    "alone" => Some(Filter::PcRelative),
                    _ => x86,
                },
            };
            for (k, v) in info.pax_records() {
                out.extend_from_slice(format!("{k}={v}\n").as_bytes());
            }
            out.extend_from_slice(SEP);
            out.extend_from_slice(&base);
            out.extend_from_slice(SEP);
            out.extend_from_slice(&frame);
        }
        _ => {
            eprintln!(
                "usage: seed_tool tokens FILE.gz | seed_tool zdelta plain|content|tokens|branches|pcrel|alone BASE TARGET [BASE_PATH]"
            );
            std::process::exit(2);
        }
    }
    std::io::stdout().write_all(&out).expect("stdout");
}
