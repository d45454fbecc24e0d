//! x86 branch conversion, for patches of x86-64 code: the displacement of each
//! `call rel32` (E8) and `jmp rel32` (E9) that reaches less than 16 MiB either way
//! becomes the absolute target (displacement plus the offset of the next instruction),
//! modulo 2^25.
//!
//! A rebuilt binary moves most of its code by a few bytes or kilobytes, and every
//! relative call across a moved stretch changes its bytes although it calls the same
//! function; as absolute targets, calls whose caller moved but whose callee did not stay
//! the same, so more of the new file matches its base (xz's x86 BCJ filter does the same
//! for compression). On the Debian 12 → 13 minbase trees the zstd patches of the ELF
//! files come to 0.949 of plain ones (benches/README.md).
//!
//! [`decode`] undoes [`encode`] exactly, for any bytes: both make the same decision at
//! every offset, because they look only at opcode bytes, which neither changes (a
//! converted displacement is skipped whole), and at a displacement's top byte, which
//! both keep `0x00` or `0xFF`; after an opcode byte that is not converted, the next 3
//! are not either, since a conversion there would change the byte it looked at.

/// The `RELEASE_UPGRADER.patch` value of a patch made from the converted base and file.
pub const PATCH_METHOD: &str = "x86-branches+zstd-patch-from";

/// The largest file such a patch may make: it is converted back in memory, and the
/// device holds base and result of one patch at a time per worker.
pub const SIZE_MAX: u64 = 64 << 20;

/// Converts relative branch targets to absolute ones.
pub fn encode(buf: &mut [u8]) {
    convert(buf, Direction::Encode);
}

/// Converts absolute branch targets back to relative ones: [`encode`]'s inverse.
pub fn decode(buf: &mut [u8]) {
    convert(buf, Direction::Decode);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Encode,
    Decode,
}

fn convert(buf: &mut [u8], direction: Direction) {
    // An opcode byte left alone reads the byte 4 after it, which a conversion in the
    // next 3 bytes would change: none is made there, so both directions read it as it
    // was.
    let mut blocked_until = 0;
    let mut i = 0;
    while i + 5 <= buf.len() {
        // Every other byte only moves the scan on: jump to the next opcode.
        let Some(found) = memchr::memchr2(0xE8, 0xE9, &buf[i..buf.len() - 4]) else {
            break;
        };
        i += found;
        let top = buf[i + 4];
        if i >= blocked_until && (top == 0x00 || top == 0xFF) {
            let operand: [u8; 4] = buf[i + 1..i + 5].try_into().expect("four bytes");
            let value = u32::from_le_bytes(operand);
            // Offsets beyond 4 GiB wrap the same way on both sides.
            let next = (i as u32).wrapping_add(5);
            let converted = match direction {
                Direction::Encode => value.wrapping_add(next),
                Direction::Decode => value.wrapping_sub(next),
            };
            // 25 bits, sign-extended from bit 24: the top byte stays 0x00 or 0xFF.
            let converted = (((converted << 7) as i32) >> 7) as u32;
            buf[i + 1..i + 5].copy_from_slice(&converted.to_le_bytes());
            i += 5;
        } else {
            blocked_until = i + 4;
            i += 1;
        }
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
                match state % 8 {
                    0 => 0xE8,
                    1 => 0xE9,
                    2 => 0x00,
                    3 => 0xFF,
                    _ => (state >> 8) as u8,
                }
            })
            .collect()
    }

    #[test]
    fn decoding_undoes_encoding_for_any_bytes() {
        for seed in 0..200 {
            for len in [0, 1, 4, 5, 6, 9, 10, 64, 4099] {
                let original = noise(len, seed);
                let mut buf = original.clone();
                encode(&mut buf);
                decode(&mut buf);
                assert_eq!(buf, original, "seed {seed}, length {len}");
            }
        }
    }

    /// The conversion as first published: a byte at a time. Patches already made with
    /// it must decode the same, so the scan that jumps between opcodes is pinned to it.
    fn byte_by_byte(buf: &mut [u8], direction: Direction) {
        let mut blocked_until = 0;
        let mut i = 0;
        while i + 5 <= buf.len() {
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
            for direction in [Direction::Encode, Direction::Decode] {
                let mut fast = original.clone();
                convert(&mut fast, direction);
                let mut slow = original.clone();
                byte_by_byte(&mut slow, direction);
                assert!(fast == slow, "length {}", original.len());
            }
        }
    }

    #[test]
    fn a_near_call_becomes_its_absolute_target_and_a_far_one_stays() {
        // call +0x10 at offset 3: the next instruction is at 8, the target at 0x18.
        let mut buf = vec![0x90, 0x90, 0x90, 0xE8, 0x10, 0, 0, 0, 0x90];
        encode(&mut buf);
        assert_eq!(&buf[4..8], &0x18u32.to_le_bytes());
        // jmp -0x20 at 0: next at 5, target -0x1b, kept in 25 bits with a 0xFF top byte.
        let mut back = vec![0xE9];
        back.extend_from_slice(&(-0x20i32).to_le_bytes());
        encode(&mut back);
        assert_eq!(i32::from_le_bytes(back[1..5].try_into().unwrap()), -0x1b);
        // A displacement of 16 MiB or more is no near branch: left alone.
        let mut far = vec![0xE8, 0, 0, 0, 0x01, 0x90];
        let before = far.clone();
        encode(&mut far);
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
        encode(&mut buf);
        assert_eq!(buf[1..5], buf[0x101..0x105]);
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
            let mut buf = original.clone();
            encode(&mut buf);
            assert_ne!(buf, original, "{path}: nothing converted");
            decode(&mut buf);
            assert!(buf == original, "{path} did not round trip");
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
