//! x86 code conversion, for patches of x86-64 code: relative operands become absolute.
//!
//! - [`Filter::Branches`]: the displacement of each `call rel32` (E8) and `jmp rel32`
//!   (E9) that reaches less than 16 MiB either way becomes the absolute target
//!   (displacement plus the offset of the next instruction), modulo 2^25.
//! - [`Filter::PcRelative`]: those, and the `disp32` of each RIP-relative `mov` load or
//!   store and `lea` (opcodes 8B, 89, 8D with ModRM `mod` 00 and `r/m` 101, whatever
//!   prefixes come before), which becomes the displacement plus the offset 6 bytes
//!   after the opcode (the end of the instruction without an immediate), modulo 2^32.
//!
//! A rebuilt binary moves most of its code by a few bytes or kilobytes, and every
//! relative call or data reference across a moved stretch changes its bytes although it
//! reaches the same function or variable; as absolute targets, references whose
//! instruction moved but whose target did not stay the same, so more of the new file
//! matches its base (xz's x86 BCJ filter does the same for branches, for compression).
//! On the Debian 12 → 13 minbase trees the zstd patches of the 40 largest changed ELF
//! files come to 0.950 of plain ones with branches converted, 0.924 with PC-relative
//! operands too; more opcodes (`cmp`, `add`, `call *`, SSE loads…) matched more data
//! by chance and came to 0.935 (benches/README.md).
//!
//! [`decode`] undoes [`encode`] exactly, for any bytes: both make the same decision at
//! every offset, because they look only at opcode and ModRM bytes, which neither changes
//! (a converted operand is skipped whole), and at a branch displacement's top byte,
//! which both keep `0x00` or `0xFF`; after a branch opcode that is not converted, the
//! next 3 bytes start no conversion, since one there would change the byte it looked at.

/// Which operands a conversion turns absolute; each is a patch method of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    /// `call`/`jmp rel32` (the first published conversion).
    Branches,
    /// Branches and RIP-relative `mov`/`lea` displacements.
    PcRelative,
}

impl Filter {
    /// Every conversion a device decodes.
    pub const ALL: [Filter; 2] = [Filter::Branches, Filter::PcRelative];

    /// The `RELEASE_UPGRADER.patch` value of a patch made from the base and file
    /// converted so.
    pub const fn method(self) -> &'static str {
        match self {
            Filter::Branches => "x86-branches+zstd-patch-from",
            Filter::PcRelative => "x86-pcrel+zstd-patch-from",
        }
    }

    /// The conversion a `RELEASE_UPGRADER.patch` value names, if it names one.
    pub fn of_method(method: &str) -> Option<Filter> {
        Filter::ALL.into_iter().find(|f| f.method() == method)
    }
}

/// The `RELEASE_UPGRADER.patch` value of a file with no base: its frame, decoded with no
/// reference prefix, is the file in the [`Filter::PcRelative`] conversion. On Debian
/// 12 → 13 the new `libcrypto.so.3`, `libssl.so.3`, `sqv` and `libsqlite3` come to 0.927
/// of their plain zstd size so (benches/README.md).
pub const ALONE_METHOD: &str = "x86-pcrel+zstd";

/// The largest file such a patch may make: it is converted back in memory, and the
/// device holds base and result of one patch at a time per worker.
pub const SIZE_MAX: u64 = 64 << 20;

/// Converts relative operands to absolute ones.
pub fn encode(buf: &mut [u8], filter: Filter) {
    convert(buf, Direction::Encode, filter);
}

/// Converts absolute operands back to relative ones: [`encode`]'s inverse.
pub fn decode(buf: &mut [u8], filter: Filter) {
    convert(buf, Direction::Decode, filter);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Encode,
    Decode,
}

/// `0x01` in every byte.
const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of every byte of `v` that is zero, and perhaps of some above a zero one
/// (never missing one): for skipping 8 bytes at a time.
fn zero_lanes(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & (0x80 * ONES)
}

/// Whether a conversion could start at `p`: a branch opcode with its 4 bytes, or (for
/// [`Filter::PcRelative`]) a move opcode with a RIP-relative ModRM and its 4 bytes.
fn starts_operand(buf: &[u8], p: usize, pc_relative: bool) -> bool {
    let b = buf[p];
    (b | 1 == 0xE9 && p + 5 <= buf.len())
        || (pc_relative
            && matches!(b, 0x8B | 0x89 | 0x8D)
            && p + 6 <= buf.len()
            && buf[p + 1] & 0xC7 == 0x05)
}

/// The first offset at or after `from` where a conversion could start; `usize::MAX` for
/// none. Every other byte only moves the scan on, so it looks at 8 at a time (plus the
/// next, for a ModRM): branch opcodes are the bytes `b | 1 == E9`, move opcodes among
/// `b & F9 == 89` (`8B`, `89`, `8D` and `8F`, checked exactly after).
fn next_start(buf: &[u8], mut from: usize, pc_relative: bool) -> usize {
    let word = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    while from + 9 <= buf.len() {
        let x = word(from);
        let mut lanes = zero_lanes((x | ONES) ^ (0xE9 * ONES));
        if pc_relative {
            let modrm = word(from + 1);
            lanes |= zero_lanes((x & (0xF9 * ONES)) ^ (0x89 * ONES))
                & zero_lanes((modrm & (0xC7 * ONES)) ^ (0x05 * ONES));
        }
        while lanes != 0 {
            let p = from + (lanes.trailing_zeros() / 8) as usize;
            if starts_operand(buf, p, pc_relative) {
                return p;
            }
            lanes &= lanes - 1;
        }
        from += 8;
    }
    (from..buf.len())
        .find(|&p| starts_operand(buf, p, pc_relative))
        .unwrap_or(usize::MAX)
}

fn convert(buf: &mut [u8], direction: Direction, filter: Filter) {
    let pc_relative = filter == Filter::PcRelative;
    // A branch opcode left alone reads the byte 4 after it, which a conversion in the
    // next 3 bytes would change: none starts there, so both directions read it as it was.
    let mut blocked_until = 0;
    let mut i = 0;
    loop {
        i = next_start(buf, i, pc_relative);
        if i == usize::MAX {
            break;
        }
        let next = if buf[i] | 1 == 0xE9 {
            let top = buf[i + 4];
            if i < blocked_until || (top != 0x00 && top != 0xFF) {
                blocked_until = i + 4;
                i += 1;
                continue;
            }
            i + 5
        } else {
            if i < blocked_until {
                i += 1;
                continue;
            }
            i + 6
        };
        let at = next - 4;
        let value = u32::from_le_bytes(buf[at..next].try_into().expect("four bytes"));
        // Offsets beyond 4 GiB wrap the same way on both sides.
        let converted = match direction {
            Direction::Encode => value.wrapping_add(next as u32),
            Direction::Decode => value.wrapping_sub(next as u32),
        };
        let converted = match next - i {
            // 25 bits, sign-extended from bit 24: the top byte stays 0x00 or 0xFF.
            5 => (((converted << 7) as i32) >> 7) as u32,
            _ => converted,
        };
        buf[at..next].copy_from_slice(&converted.to_le_bytes());
        i = next;
    }
}

/// Whether `bytes` start like a little-endian 64-bit ELF file for x86-64: the files
/// whose patches use [`encode`].
pub fn is_x86_64_elf(bytes: &[u8]) -> bool {
    bytes.len() >= 20
        && bytes.starts_with(b"\x7fELF")
        && bytes[4] == 2
        && bytes[5] == 1
        && u16::from_le_bytes([bytes[18], bytes[19]]) == 62
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes rich in branch opcodes and 0x00/0xFF bytes.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                match state % 12 {
                    0 => 0xE8,
                    1 => 0xE9,
                    2 => 0x00,
                    3 => 0xFF,
                    4 => [0x8B, 0x89, 0x8D, 0x8F][(state >> 8) as usize % 4],
                    5 => [0x05, 0x3D, 0x15][(state >> 8) as usize % 3],
                    _ => (state >> 8) as u8,
                }
            })
            .collect()
    }

    #[test]
    fn decoding_undoes_encoding_for_any_bytes() {
        for filter in Filter::ALL {
            for seed in 0..200 {
                for len in [0, 1, 4, 5, 6, 7, 9, 10, 64, 4099] {
                    let original = noise(len, seed);
                    let mut buf = original.clone();
                    encode(&mut buf, filter);
                    decode(&mut buf, filter);
                    assert_eq!(buf, original, "{filter:?}, seed {seed}, length {len}");
                }
            }
        }
    }

    /// The conversion a byte at a time, as first published for branches. Patches
    /// already made must decode the same, so the scan that jumps between opcodes is
    /// pinned to it.
    fn byte_by_byte(buf: &mut [u8], direction: Direction, filter: Filter) {
        let mut blocked_until = 0;
        let mut i = 0;
        while i + 5 <= buf.len() {
            if filter == Filter::PcRelative
                && matches!(buf[i], 0x8B | 0x89 | 0x8D)
                && i + 6 <= buf.len()
                && buf[i + 1] & 0xC7 == 0x05
                && i >= blocked_until
            {
                let value = u32::from_le_bytes(buf[i + 2..i + 6].try_into().unwrap());
                let next = (i as u32).wrapping_add(6);
                let converted = match direction {
                    Direction::Encode => value.wrapping_add(next),
                    Direction::Decode => value.wrapping_sub(next),
                };
                buf[i + 2..i + 6].copy_from_slice(&converted.to_le_bytes());
                i += 6;
                continue;
            }
            if buf[i] != 0xE8 && buf[i] != 0xE9 {
                i += 1;
                continue;
            }
            let top = buf[i + 4];
            if i >= blocked_until && (top == 0x00 || top == 0xFF) {
                let value = u32::from_le_bytes(buf[i + 1..i + 5].try_into().unwrap());
                let next = (i as u32).wrapping_add(5);
                let converted = match direction {
                    Direction::Encode => value.wrapping_add(next),
                    Direction::Decode => value.wrapping_sub(next),
                };
                let converted = (((converted << 7) as i32) >> 7) as u32;
                buf[i + 1..i + 5].copy_from_slice(&converted.to_le_bytes());
                i += 5;
            } else {
                blocked_until = i + 4;
                i += 1;
            }
        }
    }

    #[test]
    fn the_scan_between_opcodes_converts_exactly_as_the_byte_loop() {
        let mut inputs: Vec<Vec<u8>> = (0..100)
            .flat_map(|seed| [0, 4, 5, 6, 9, 37, 4099].map(|len| noise(len, seed)))
            .collect();
        inputs.extend(
            ["/usr/bin/dpkg", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
                .iter()
                .filter_map(|p| std::fs::read(p).ok()),
        );
        for original in inputs {
            for (direction, filter) in [Direction::Encode, Direction::Decode]
                .into_iter()
                .flat_map(|d| Filter::ALL.map(|f| (d, f)))
            {
                let mut fast = original.clone();
                convert(&mut fast, direction, filter);
                let mut slow = original.clone();
                byte_by_byte(&mut slow, direction, filter);
                assert!(fast == slow, "{filter:?}, length {}", original.len());
            }
        }
    }

    #[test]
    fn a_near_call_becomes_its_absolute_target_and_a_far_one_stays() {
        // call +0x10 at offset 3: the next instruction is at 8, the target at 0x18.
        let mut buf = vec![0x90, 0x90, 0x90, 0xE8, 0x10, 0, 0, 0, 0x90];
        encode(&mut buf, Filter::Branches);
        assert_eq!(&buf[4..8], &0x18u32.to_le_bytes());
        // jmp -0x20 at 0: next at 5, target -0x1b, kept in 25 bits with a 0xFF top byte.
        let mut back = vec![0xE9];
        back.extend_from_slice(&(-0x20i32).to_le_bytes());
        encode(&mut back, Filter::Branches);
        assert_eq!(i32::from_le_bytes(back[1..5].try_into().unwrap()), -0x1b);
        // A displacement of 16 MiB or more is no near branch: left alone.
        let mut far = vec![0xE8, 0, 0, 0, 0x01, 0x90];
        let before = far.clone();
        encode(&mut far, Filter::Branches);
        assert_eq!(far, before);
    }

    #[test]
    fn two_calls_to_one_function_read_the_same_once_encoded() {
        // Calls from offsets 0 and 0x100 to 0x1000: different bytes, one target.
        let mut buf = vec![0x90; 0x110];
        buf[0] = 0xE8;
        buf[1..5].copy_from_slice(&(0x1000i32 - 5).to_le_bytes());
        buf[0x100] = 0xE8;
        buf[0x101..0x105].copy_from_slice(&(0x1000i32 - 0x105).to_le_bytes());
        assert_ne!(buf[1..5], buf[0x101..0x105]);
        encode(&mut buf, Filter::Branches);
        assert_eq!(buf[1..5], buf[0x101..0x105]);
    }

    #[test]
    fn two_loads_of_one_variable_read_the_same_once_encoded() {
        // mov rax, [rip+d] at 0x10 and lea rdi, [rip+d] at 0x200, both of 0x3000; and a
        // mov with a register operand (ModRM 0xC0), which is no memory reference.
        let mut buf = vec![0x90; 0x220];
        buf[0x0F..0x12].copy_from_slice(&[0x48, 0x8B, 0x05]);
        buf[0x12..0x16].copy_from_slice(&(0x3000i32 - 0x16).to_le_bytes());
        buf[0x1FF..0x202].copy_from_slice(&[0x48, 0x8D, 0x3D]);
        buf[0x202..0x206].copy_from_slice(&(0x3000i32 - 0x206).to_le_bytes());
        buf[0x210..0x212].copy_from_slice(&[0x89, 0xC0]);
        buf[0x212..0x216].copy_from_slice(&[1, 2, 3, 4]);
        let original = buf.clone();
        encode(&mut buf, Filter::Branches);
        assert_eq!(buf, original, "branches alone leave data references");
        encode(&mut buf, Filter::PcRelative);
        assert_eq!(buf[0x12..0x16], buf[0x202..0x206]);
        assert_eq!(buf[0x12..0x16], 0x3000u32.to_le_bytes());
        assert_eq!(buf[0x210..], original[0x210..]);
        decode(&mut buf, Filter::PcRelative);
        assert_eq!(buf, original);
    }

    #[test]
    fn each_conversion_is_its_own_patch_method() {
        for filter in Filter::ALL {
            assert_eq!(Filter::of_method(filter.method()), Some(filter));
        }
        assert_eq!(Filter::Branches.method(), "x86-branches+zstd-patch-from");
        assert_eq!(Filter::of_method("zstd-patch-from"), None);
    }

    #[test]
    fn the_systems_own_programs_round_trip() {
        for path in ["/usr/bin/dpkg", "/usr/lib/x86_64-linux-gnu/libc.so.6"] {
            let Ok(original) = std::fs::read(path) else {
                continue;
            };
            if !is_x86_64_elf(&original) {
                continue;
            }
            for filter in Filter::ALL {
                let mut buf = original.clone();
                encode(&mut buf, filter);
                assert_ne!(buf, original, "{path}: nothing converted");
                decode(&mut buf, filter);
                assert!(buf == original, "{path} did not round trip ({filter:?})");
            }
        }
    }

    #[test]
    fn only_little_endian_64_bit_x86_elf_files_qualify() {
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2;
        header[5] = 1;
        header[18] = 62;
        assert!(is_x86_64_elf(&header));
        let mut arm = header.clone();
        arm[18] = 183; // aarch64
        assert!(!is_x86_64_elf(&arm));
        let mut elf32 = header.clone();
        elf32[4] = 1;
        assert!(!is_x86_64_elf(&elf32));
        assert!(!is_x86_64_elf(b"#!/bin/sh\n"));
        assert!(!is_x86_64_elf(&header[..19]));
    }
}
