//! A gzip file as the byte stream of its deflate tokens, and back: the cheap way to patch
//! `.gz` files in a zdelta.
//!
//! [`regzip`](super::regzip) patches a `.gz` file's content and compresses it again on
//! the device, which costs a level-9 match search: 1.6 s of CPU for the 25 MB of gzip
//! content between Debian 12 and 13, more than the rest of the apply. Yet the matches
//! are already known. A deflate stream is fully determined by its blocks' headers and
//! its tokens (literal bytes, and length/distance pairs): the Huffman codes are
//! canonical, given by the code lengths in each block's header, and every length and
//! distance has exactly one code with its extra bits (length 258 has a second one,
//! which no common encoder writes and [`split`] refuses). So a file is written here as
//! its tokens, with each block's header bits kept verbatim, and rebuilt by Huffman-coding
//! them again, in linear time and without any search.
//!
//! The patch is then made between the *token streams* of the base and target files.
//! Between two versions of a changelog or a manual, the tokens of the unchanged text are
//! the same matches at the same distances, so the zstd patch finds them, whereas the
//! compressed bytes differ everywhere after the first change (other Huffman tables, other
//! bit alignment). Reading a base's tokens decodes only its Huffman codes: no inflating.
//!
//! The stream, in order (all of it is checked when read, on both sides):
//!
//! ```text
//! stream  := block* pad trailer         (the block with BFINAL set is the last)
//! block   := kind body                  kind: BFINAL | BTYPE << 1
//!   stored  := pad LEN(u16 le) bytes[LEN]
//!   fixed   := token* EOB
//!   dynamic := NBITS(u16 le) bits[ceil(NBITS / 8)] token* EOB   (the header verbatim)
//! token   := b (b != 0xff)                            a literal
//!          | ff LEN-3 (DIST-1: u16 be, < 0x8000)      a match
//!          | ff 00 80 00                              the literal 0xff
//! EOB     := ff 00 80 01
//! pad     := the bits (a byte, low bits first) up to the next byte boundary
//! trailer := the gzip trailer (CRC32, ISIZE), 8 bytes
//! ```
//!
//! 0xff marks the records because it never occurs in UTF-8 text, which most `.gz` files
//! of an image are. A rebuilt file is checked against the SHA256 its patch promises, so a
//! wrong rebuild is an error, never a wrong file.

use std::sync::OnceLock;

/// The zdelta patch method of a `.gz` file rebuilt from its patched token stream.
pub const PATCH_METHOD: &str = "gzip-tokens+zstd-patch-from";
/// Pax record: the size of the token stream the patch frame decodes to.
pub const TOKENS_SIZE_KEY: &str = "RELEASE_UPGRADER.tokens-size";
/// The largest token stream a patch may decode to (held in memory on both sides).
pub const TOKENS_MAX: usize = 256 << 20;

const ESCAPE: u8 = 0xff;
const LITERAL_FF: [u8; 3] = [0x00, 0x80, 0x00];
const END_OF_BLOCK: [u8; 3] = [0x00, 0x80, 0x01];

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// The order in which a dynamic header lists the code length code's lengths.
const CLEN_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// A gzip file split into its header and its token stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The gzip header, up to the deflate stream.
    pub header: Vec<u8>,
    /// The token stream (see the module documentation), trailer included.
    pub tokens: Vec<u8>,
}

/// Splits `gz` (one gzip member, nothing after it) into header and token stream, when
/// [`join`] gives back exactly `gz`.
pub fn split(gz: &[u8]) -> Result<Split, String> {
    let (header, tokens, canonical) = tokenize(gz)?;
    if !canonical {
        return Err("a length of 258 is coded the uncommon way".into());
    }
    let split = Split {
        header: header.to_vec(),
        tokens,
    };
    if join(&split.header, &split.tokens)? != gz {
        return Err("the token stream does not rebuild the file".into());
    }
    Ok(split)
}

/// The token stream of `gz` (the base of a patch): the same on the publisher and on the
/// device, whatever encoder made the file.
pub fn tokens(gz: &[u8]) -> Result<Vec<u8>, String> {
    tokenize(gz).map(|(_, tokens, _)| tokens)
}

/// `gz`'s header, its token stream, and whether every token has its one code.
fn tokenize(gz: &[u8]) -> Result<(&[u8], Vec<u8>, bool), String> {
    let start = super::regzip::header_len(gz).ok_or("not a gzip file")?;
    let body = &gz[start..];
    let mut out = Vec::with_capacity(gz.len() * 3);
    let (used, canonical) = decode(body, &mut out)?;
    if body.len() - used != 8 {
        return Err(format!(
            "{} bytes after the deflate stream, not the 8 of a gzip trailer",
            body.len() - used
        ));
    }
    out.extend_from_slice(&body[used..]);
    Ok((&gz[..start], out, canonical))
}

/// The gzip file from its header and token stream.
pub fn join(header: &[u8], tokens: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(header.len() + tokens.len() / 2);
    out.extend_from_slice(header);
    let used = encode(tokens, &mut out)?;
    let trailer = &tokens[used..];
    if trailer.len() != 8 {
        return Err(format!(
            "{} bytes after the last block, not the 8 of a gzip trailer",
            trailer.len()
        ));
    }
    out.extend_from_slice(trailer);
    Ok(out)
}

/// Reads a deflate stream's bits, low bits first.
struct BitReader<'a> {
    data: &'a [u8],
    /// The next byte of `data` to load into `bits`.
    at: usize,
    bits: u64,
    count: u32,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            at: 0,
            bits: 0,
            count: 0,
        }
    }

    /// Loads whole bytes while there is room (zero bits past the end, which
    /// [`Self::check_within`] notices).
    #[inline]
    fn refill(&mut self) {
        if self.at + 8 <= self.data.len() {
            let word = u64::from_le_bytes(self.data[self.at..self.at + 8].try_into().unwrap());
            self.bits |= word << self.count;
            let taken = (63 - self.count) / 8;
            self.at += taken as usize;
            self.count += taken * 8;
        } else {
            while self.count <= 56 {
                let byte = self.data.get(self.at).copied().unwrap_or(0);
                self.bits |= u64::from(byte) << self.count;
                self.at += 1;
                self.count += 8;
            }
        }
    }

    #[inline]
    fn peek(&mut self, n: u32) -> u32 {
        if self.count < n {
            self.refill();
        }
        (self.bits & ((1u64 << n) - 1)) as u32
    }

    #[inline]
    fn skip(&mut self, n: u32) {
        self.bits >>= n;
        self.count -= n;
    }

    #[inline]
    fn read(&mut self, n: u32) -> u32 {
        let value = self.peek(n);
        self.skip(n);
        value
    }

    /// Bits consumed so far.
    fn position(&self) -> usize {
        self.at * 8 - self.count as usize
    }

    fn check_within(&self) -> Result<(), String> {
        match self.position() <= self.data.len() * 8 {
            true => Ok(()),
            false => Err("the deflate stream is cut short".into()),
        }
    }
}

/// Writes bits, low bits first.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    bits: u64,
    count: u32,
}

impl BitWriter<'_> {
    #[inline]
    fn write(&mut self, value: u32, n: u32) {
        debug_assert!(n <= 32 && u64::from(value) < 1u64 << n);
        self.bits |= u64::from(value) << self.count;
        self.count += n;
        if self.count >= 32 {
            self.out
                .extend_from_slice(&(self.bits as u32).to_le_bytes());
            self.bits >>= 32;
            self.count -= 32;
        }
    }

    /// Bits written so far.
    fn position(&self) -> usize {
        self.out.len() * 8 + self.count as usize
    }

    fn flush(&mut self) {
        while self.count > 0 {
            self.out.push(self.bits as u8);
            self.bits >>= 8;
            self.count = self.count.saturating_sub(8);
        }
        self.bits = 0;
    }
}

/// The canonical Huffman codes of `lengths` (deflate's rule), bit-reversed for writing
/// low bits first; an error when the lengths over-subscribe the code space.
fn codes(lengths: &[u8]) -> Result<Vec<u16>, String> {
    let mut count = [0u16; 16];
    for &l in lengths {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut next = [0u32; 16];
    let mut code = 0u32;
    for bits in 1..16 {
        code = (code + u32::from(count[bits - 1])) << 1;
        next[bits] = code;
        if code + u32::from(count[bits]) > 1 << bits {
            return Err("a Huffman code with more codes than it has room for".into());
        }
    }
    Ok(lengths
        .iter()
        .map(|&l| {
            if l == 0 {
                return 0;
            }
            let c = next[l as usize];
            next[l as usize] += 1;
            (c.reverse_bits() >> (32 - u32::from(l))) as u16
        })
        .collect())
}

/// A decoding table: the next `bits` bits (low first) index an entry
/// `symbol | length << 16`, 0 where no code starts with those bits.
struct Table {
    entries: Vec<u32>,
    bits: u32,
}

impl Table {
    fn new(lengths: &[u8]) -> Result<Table, String> {
        let codes = codes(lengths)?;
        let bits = u32::from(lengths.iter().copied().max().unwrap_or(0)).max(1);
        let mut entries = vec![0u32; 1 << bits];
        for (symbol, (&l, &code)) in lengths.iter().zip(&codes).enumerate() {
            if l == 0 {
                continue;
            }
            let entry = symbol as u32 | u32::from(l) << 16;
            let mut i = code as usize;
            while i < entries.len() {
                entries[i] = entry;
                i += 1 << l;
            }
        }
        Ok(Table { entries, bits })
    }

    #[inline]
    fn decode(&self, reader: &mut BitReader) -> Result<u16, String> {
        let entry = self.entries[reader.peek(self.bits) as usize];
        if entry == 0 {
            return Err("bits that are no code of the block's Huffman table".into());
        }
        reader.skip(entry >> 16);
        Ok(entry as u16)
    }
}

/// The code lengths of the fixed Huffman codes (literal/length, distance).
fn fixed_lengths() -> (Vec<u8>, Vec<u8>) {
    let mut lit = vec![8u8; 288];
    lit[144..256].fill(9);
    lit[256..280].fill(7);
    (lit, vec![5u8; 30])
}

/// Reads a dynamic block's header (after BFINAL and BTYPE): its literal/length and
/// distance code lengths.
fn read_dynamic_header(reader: &mut BitReader) -> Result<(Vec<u8>, Vec<u8>), String> {
    let hlit = reader.read(5) as usize + 257;
    let hdist = reader.read(5) as usize + 1;
    let hclen = reader.read(4) as usize + 4;
    if hlit > 286 || hdist > 30 {
        return Err("a block header with more codes than deflate has".into());
    }
    let mut clen = [0u8; 19];
    for &i in &CLEN_ORDER[..hclen] {
        clen[i] = reader.read(3) as u8;
    }
    let table = Table::new(&clen)?;
    let mut lengths = Vec::with_capacity(hlit + hdist);
    while lengths.len() < hlit + hdist {
        let (value, repeat) = match table.decode(reader)? {
            symbol @ 0..=15 => (symbol as u8, 1),
            16 => {
                let previous = *lengths
                    .last()
                    .ok_or("a block header repeats a length before the first")?;
                (previous, 3 + reader.read(2) as usize)
            }
            17 => (0, 3 + reader.read(3) as usize),
            _ => (0, 11 + reader.read(7) as usize),
        };
        if lengths.len() + repeat > hlit + hdist {
            return Err("a block header with more code lengths than it declares".into());
        }
        lengths.extend(std::iter::repeat_n(value, repeat));
    }
    if lengths[256] == 0 {
        return Err("a block without an end-of-block code".into());
    }
    let dist = lengths.split_off(hlit);
    Ok((lengths, dist))
}

/// Decodes the deflate stream at the start of `data` into `out` as tokens: the bytes it
/// used, and whether every length was coded canonically.
fn decode(data: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), String> {
    let mut reader = BitReader::new(data);
    let mut canonical = true;
    loop {
        let kind = reader.read(3);
        let (last, btype) = (kind & 1 == 1, kind >> 1);
        out.push(kind as u8);
        let (lit, dist) = match btype {
            0 => {
                let pad = (8 - reader.position() % 8) % 8;
                out.push(reader.read(pad as u32) as u8);
                let len = reader.read(16);
                let nlen = reader.read(16);
                if len != !nlen & 0xffff {
                    return Err("a stored block whose length check is wrong".into());
                }
                out.extend_from_slice(&(len as u16).to_le_bytes());
                // Whole bytes now: the reader's bit buffer holds the next few.
                for _ in 0..len {
                    out.push(reader.read(8) as u8);
                }
                reader.check_within()?;
                if last {
                    break;
                }
                continue;
            }
            1 => {
                let (lit, dist) = fixed_lengths();
                (Table::new(&lit)?, Table::new(&dist)?)
            }
            2 => {
                let start = reader.position();
                let (lit, dist) = read_dynamic_header(&mut reader)?;
                let nbits = reader.position() - start;
                reader.check_within()?;
                out.extend_from_slice(&(nbits as u16).to_le_bytes());
                copy_bits(data, start, nbits, out);
                (Table::new(&lit)?, Table::new(&dist)?)
            }
            _ => return Err("a block of the reserved type 3".into()),
        };
        loop {
            // Past the end the reader gives zero bits, which may well be codes.
            if reader.at > data.len() + 8 {
                return Err("the deflate stream is cut short".into());
            }
            if out.len() > TOKENS_MAX {
                return Err(format!("a token stream of more than {TOKENS_MAX} bytes"));
            }
            let symbol = lit.decode(&mut reader)?;
            match symbol {
                0..=254 => out.push(symbol as u8),
                255 => {
                    out.push(ESCAPE);
                    out.extend_from_slice(&LITERAL_FF);
                }
                256 => {
                    out.push(ESCAPE);
                    out.extend_from_slice(&END_OF_BLOCK);
                    break;
                }
                257..=285 => {
                    let i = usize::from(symbol - 257);
                    let extra = reader.read(u32::from(LENGTH_EXTRA[i]));
                    if symbol == 284 && extra == 31 {
                        canonical = false;
                    }
                    let length = (u32::from(LENGTH_BASE[i]) + extra).min(258);
                    let d = dist.decode(&mut reader)?;
                    if d >= 30 {
                        return Err("a distance code deflate does not have".into());
                    }
                    let distance = u32::from(DIST_BASE[d as usize])
                        + reader.read(u32::from(DIST_EXTRA[d as usize]));
                    out.push(ESCAPE);
                    out.push((length - 3) as u8);
                    out.extend_from_slice(&((distance - 1) as u16).to_be_bytes());
                }
                _ => return Err("a length code deflate does not have".into()),
            }
        }
        reader.check_within()?;
        if last {
            break;
        }
    }
    let pad = (8 - reader.position() % 8) % 8;
    out.push(reader.read(pad as u32) as u8);
    reader.check_within()?;
    Ok((reader.position() / 8, canonical))
}

/// Appends `nbits` bits of `data` from bit `start` to `out`, packed low bits first.
fn copy_bits(data: &[u8], start: usize, nbits: usize, out: &mut Vec<u8>) {
    let mut reader = BitReader::new(data);
    let mut skip = start;
    while skip > 0 {
        let n = skip.min(32) as u32;
        reader.read(n);
        skip -= n as usize;
    }
    let mut left = nbits;
    while left > 0 {
        let n = left.min(8) as u32;
        out.push(reader.read(n) as u8);
        left -= n as usize;
    }
}

/// Reads a token stream's bytes.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let bytes = self
            .data
            .get(self.at..self.at + n)
            .ok_or("the token stream is cut short")?;
        self.at += n;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16_le(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
}

/// The length code of each match length (3..=258, index `length - 3`).
fn length_codes() -> &'static [u8; 256] {
    static TABLE: OnceLock<[u8; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [0u8; 256];
        for (code, (&base, &extra)) in LENGTH_BASE.iter().zip(&LENGTH_EXTRA).enumerate() {
            for length in base..base + (1 << extra) {
                if length <= 258 {
                    table[usize::from(length - 3)] = code as u8;
                }
            }
        }
        table[255] = 28;
        table
    })
}

/// The distance code of each distance (1..=32768, index `distance - 1`).
fn distance_codes() -> &'static [u8; 32768] {
    static TABLE: OnceLock<Box<[u8; 32768]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = Box::new([0u8; 32768]);
        for (code, (&base, &extra)) in DIST_BASE.iter().zip(&DIST_EXTRA).enumerate() {
            let end = (usize::from(base) + (1 << extra)).min(32769);
            table[usize::from(base) - 1..end - 1].fill(code as u8);
        }
        table
    })
}

/// A block's codes for writing: (bit-reversed code, length) of each symbol.
struct Codes {
    lit: Vec<(u16, u8)>,
    dist: Vec<(u16, u8)>,
}

impl Codes {
    fn new(lit: &[u8], dist: &[u8]) -> Result<Codes, String> {
        let pair = |lengths: &[u8]| -> Result<Vec<(u16, u8)>, String> {
            Ok(codes(lengths)?
                .into_iter()
                .zip(lengths.iter().copied())
                .collect())
        };
        Ok(Codes {
            lit: pair(lit)?,
            dist: pair(dist)?,
        })
    }

    #[inline]
    fn put(table: &[(u16, u8)], symbol: usize, writer: &mut BitWriter) -> Result<(), String> {
        match table.get(symbol) {
            Some(&(code, len)) if len > 0 => {
                writer.write(u32::from(code), u32::from(len));
                Ok(())
            }
            _ => Err("a token the block's Huffman table has no code for".into()),
        }
    }
}

/// Writes the deflate stream of the token stream `tokens` to `out`: how much of
/// `tokens` it used (what follows is the trailer).
fn encode(tokens: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
    let mut input = Cursor {
        data: tokens,
        at: 0,
    };
    let mut writer = BitWriter {
        out,
        bits: 0,
        count: 0,
    };
    let (length_codes, distance_codes) = (length_codes(), distance_codes());
    let pad = |writer: &mut BitWriter, value: u8| -> Result<(), String> {
        let n = ((8 - writer.position() % 8) % 8) as u32;
        if u32::from(value) >= 1 << n {
            return Err("padding with more bits than it takes to the byte boundary".into());
        }
        writer.write(u32::from(value), n);
        Ok(())
    };
    loop {
        let kind = input.byte()?;
        if kind > 5 {
            return Err(format!("a block kind {kind} deflate does not have"));
        }
        writer.write(u32::from(kind), 3);
        let last = kind & 1 == 1;
        let codes = match kind >> 1 {
            0 => {
                pad(&mut writer, input.byte()?)?;
                let len = input.u16_le()?;
                writer.write(u32::from(len), 16);
                writer.write(u32::from(!len), 16);
                for &b in input.take(usize::from(len))? {
                    writer.write(u32::from(b), 8);
                }
                if last {
                    break;
                }
                continue;
            }
            1 => {
                let (lit, dist) = fixed_lengths();
                Codes::new(&lit, &dist)?
            }
            _ => {
                let nbits = usize::from(input.u16_le()?);
                let bits = input.take(nbits.div_ceil(8))?;
                let mut reader = BitReader::new(bits);
                let (lit, dist) = read_dynamic_header(&mut reader)?;
                if reader.position() != nbits {
                    return Err("a block header of another size than it declares".into());
                }
                for (i, &b) in bits.iter().enumerate() {
                    let n = (nbits - i * 8).min(8) as u32;
                    if u32::from(b) >= 1 << n {
                        return Err("a block header with bits past its end".into());
                    }
                    writer.write(u32::from(b), n);
                }
                Codes::new(&lit, &dist)?
            }
        };
        loop {
            let b = input.byte()?;
            if b != ESCAPE {
                Codes::put(&codes.lit, usize::from(b), &mut writer)?;
                continue;
            }
            let record = input.take(3)?;
            if record[1] < 0x80 {
                let length = usize::from(record[0]);
                let distance = usize::from(u16::from_be_bytes([record[1], record[2]]));
                let lcode = usize::from(length_codes[length]);
                Codes::put(&codes.lit, 257 + lcode, &mut writer)?;
                let extra = LENGTH_EXTRA[lcode];
                if extra > 0 {
                    let value = length + 3 - usize::from(LENGTH_BASE[lcode]);
                    writer.write(value as u32, u32::from(extra));
                }
                let dcode = usize::from(distance_codes[distance]);
                Codes::put(&codes.dist, dcode, &mut writer)?;
                let extra = DIST_EXTRA[dcode];
                if extra > 0 {
                    let value = distance + 1 - usize::from(DIST_BASE[dcode]);
                    writer.write(value as u32, u32::from(extra));
                }
            } else if record == LITERAL_FF {
                Codes::put(&codes.lit, 255, &mut writer)?;
            } else if record == END_OF_BLOCK {
                Codes::put(&codes.lit, 256, &mut writer)?;
                break;
            } else {
                return Err("a token record the stream does not have".into());
            }
        }
        if last {
            break;
        }
    }
    pad(&mut writer, input.byte()?)?;
    writer.flush();
    Ok(input.at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn text(seed: u64, lines: usize) -> Vec<u8> {
        let words = [
            "apt",
            "dpkg",
            "release",
            "upgrade",
            "the",
            "of",
            "fix",
            "CVE-2024-",
            "\n",
        ];
        let mut state = seed;
        let mut out = Vec::new();
        for _ in 0..lines * 8 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            out.extend_from_slice(words[(state >> 33) as usize % words.len()].as_bytes());
            out.push(if state >> 40 & 7 == 0 { b'\n' } else { b' ' });
        }
        out
    }

    fn gzip_with(args: &[&str], content: &[u8]) -> Vec<u8> {
        let mut child = std::process::Command::new("gzip")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip");
        let mut stdin = child.stdin.take().unwrap();
        let content = content.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&content));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    fn flate2_gzip(content: &[u8], level: u32) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        enc.write_all(content).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_files_of_every_level_and_block_type_rebuild_exactly() {
        let mut binary: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        binary.extend(text(3, 400));
        for content in [
            text(1, 3000),
            binary,
            b"x".to_vec(),
            Vec::new(),
            vec![0xff; 5000],
        ] {
            let mut files = vec![gzip_with(&["-9n"], &content), gzip_with(&["-1n"], &content)];
            files.extend((0..=9).map(|level| flate2_gzip(&content, level)));
            for gz in files {
                let split = split(&gz).expect("splits");
                assert_eq!(join(&split.header, &split.tokens).unwrap(), gz);
                assert_eq!(tokens(&gz).unwrap(), split.tokens);
            }
        }
    }

    #[test]
    fn unchanged_text_keeps_its_tokens_across_versions() {
        let old = text(7, 4000);
        let mut new = text(8, 200);
        new.extend_from_slice(&old);
        let (a, b) = (gzip_with(&["-9n"], &old), gzip_with(&["-9n"], &new));
        let (ta, tb) = (tokens(&a).unwrap(), tokens(&b).unwrap());
        // The old file's tokens, past the first 32 KiB window, are in the new one's.
        let tail = &ta[ta.len() / 2..ta.len() - 64];
        assert!(tb.windows(tail.len()).any(|w| w == tail));
    }

    #[test]
    fn a_non_canonical_length_is_refused_and_garbage_is_an_error() {
        // A fixed block: literal 'a', then length 258 as code 284 + extra 31, distance 1.
        let gz = uncommon_258(0);
        assert!(split(&gz).unwrap_err().contains("258"));
        assert!(tokens(&gz).is_ok());

        let good = flate2_gzip(&text(2, 500), 9);
        let toks = tokens(&good).unwrap();
        for cut in [0, 1, 5, toks.len() / 2, toks.len() - 9] {
            assert!(join(&[], &toks[..cut]).is_err(), "cut at {cut}");
        }
        assert!(tokens(&good[..good.len() / 2]).is_err());
        let mut extra = good.clone();
        extra.push(0);
        assert!(tokens(&extra).is_err());
    }

    /// A file coding length 258 the uncommon way (code 284 + 31) with `pad` in its final
    /// padding bits.
    fn uncommon_258(pad: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = BitWriter {
            out: &mut out,
            bits: 0,
            count: 0,
        };
        w.write(0b011, 3);
        let (lit, dist) = fixed_lengths();
        let (lc, dc) = (codes(&lit).unwrap(), codes(&dist).unwrap());
        w.write(u32::from(lc[usize::from(b'a')]), 8);
        w.write(u32::from(lc[284]), 8);
        w.write(31, 5);
        w.write(u32::from(dc[0]), 5);
        w.write(u32::from(lc[256]), 7);
        // 36 bits so far: four padding bits.
        w.write(pad, 4);
        w.flush();
        let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        gz.extend_from_slice(&out);
        gz.extend_from_slice(&[0; 8]);
        gz
    }

    /// The fuzzer's find: the tokens of such a file re-code 258 the common way, five bits
    /// shorter, so they join to another file (which is why `split` refuses it), and
    /// padding bits that no longer fit before the byte boundary are refused, not written.
    /// The device only joins token streams `split` made.
    #[test]
    fn the_tokens_of_an_uncommonly_coded_file_join_to_another_file_or_not_at_all() {
        let zero_pad = uncommon_258(0);
        let toks = tokens(&zero_pad).unwrap();
        let joined = join(&zero_pad[..10], &toks).unwrap();
        assert_ne!(joined, zero_pad);
        assert_eq!(tokens(&joined).unwrap(), toks);
        let set_pad = uncommon_258(0b1111);
        let toks = tokens(&set_pad).unwrap();
        let err = join(&set_pad[..10], &toks).unwrap_err();
        assert!(err.contains("padding"), "{err}");
        assert!(split(&set_pad).unwrap_err().contains("258"));
    }

    #[test]
    fn tampered_token_streams_never_panic() {
        let gz = flate2_gzip(&text(4, 800), 6);
        let toks = tokens(&gz).unwrap();
        let mut state = 99u64;
        for _ in 0..2000 {
            let mut t = toks.clone();
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let i = (state >> 20) as usize % t.len();
            t[i] ^= 1 << (state >> 8 & 7);
            let _ = join(&[], &t);
            let mut g = gz.clone();
            let j = 10 + (state >> 24) as usize % (g.len() - 10);
            g[j] ^= 1 << (state >> 12 & 7);
            let _ = tokens(&g);
        }
    }
}
