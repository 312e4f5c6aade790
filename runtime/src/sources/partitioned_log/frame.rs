//! The partitioned log's record frame, `[len: u32 LE][crc32c(len ‖ payload): u32 LE][payload]`:
//! encoding, reading one frame, and the search that tells a torn tail from damage followed by
//! valid records — pure functions over bytes, no files (the log in `partitioned_log.rs` does
//! the I/O).
//!
//! Invariant: a frame is accepted only if its length is at most [`MAX_RECORD_BYTES`], all of
//! its bytes are present, and its CRC32C (over the length bytes and the payload) matches, so a
//! torn or flipped length is caught like a flipped payload.

use std::io::{self, Read};

/// The largest record accepted (a longer length field is damage, not a record).
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// Bytes before a frame's payload: the length, then the checksum.
pub(super) const FRAME_HEADER: usize = 8;

/// The checksum of a frame: CRC32C over its length bytes, then its payload.
pub(super) fn frame_crc(len: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len), payload)
}

/// Appends the frame of `payload` to `buf` (the caller checked its length).
pub(crate) fn encode_frame(buf: &mut Vec<u8>, payload: &[u8]) {
    // At most MAX_RECORD_BYTES, which fits in a u32.
    let len = (payload.len() as u32).to_le_bytes();
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&frame_crc(len, payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Reads one frame at the reader's position: `Ok(None)` at a clean end of file, `Err(reason)`
/// for an incomplete or damaged frame.
pub(crate) fn read_frame(reader: &mut impl Read) -> io::Result<Result<Option<Vec<u8>>, String>> {
    let mut header = [0u8; FRAME_HEADER];
    let mut got = 0;
    while got < FRAME_HEADER {
        match reader.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(Ok(None)),
            Ok(0) => {
                return Ok(Err(format!(
                    "an incomplete frame header ({got} of 8 bytes)"
                )));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD_BYTES {
        return Ok(Err(format!(
            "a frame length of {len} bytes, over the maximum"
        )));
    }
    let mut payload = Vec::new();
    let read = reader.take(len as u64).read_to_end(&mut payload)?;
    if read < len {
        return Ok(Err(format!("an incomplete record ({read} of {len} bytes)")));
    }
    if frame_crc(len_bytes, &payload) != crc {
        return Ok(Err("a record whose CRC32C does not match".to_owned()));
    }
    Ok(Ok(Some(payload)))
}

/// Where the first valid frame starts in `bytes`, trying every position from `from` on: the
/// test that tells damage followed by valid records (corruption) from a torn tail (nothing
/// valid after the damage). A damaged length field hides where the next frame starts, so
/// every byte position is a candidate.
///
/// Each candidate whose length fits is checked in O(log length), not by re-reading its
/// payload: CRC32C is linear, so with `C(i)` the CRC32C of `bytes[..i]`, the frame at `q`
/// with payload `bytes[q+8..e]` has the checksum
/// `shift(crc32c(len bytes) ^ C(q+8), e-q-8) ^ C(e)`, where `shift(c, n)` appends `n` zero
/// bytes' worth of polynomial multiplication (zlib's `crc32_combine`). `C` is kept every
/// [`STRIDE`] bytes and completed from there. Memory: `bytes` plus 1/16 of it.
pub(crate) fn find_valid_frame(bytes: &[u8], from: usize) -> Option<usize> {
    let last_start = bytes.len().checked_sub(FRAME_HEADER)?;
    let prefix = PrefixCrc::new(bytes);
    let shift = Shift::new();
    (from..=last_start).find(|&q| {
        let len_bytes = [bytes[q], bytes[q + 1], bytes[q + 2], bytes[q + 3]];
        let len = u32::from_le_bytes(len_bytes) as usize;
        let stored = u32::from_le_bytes([bytes[q + 4], bytes[q + 5], bytes[q + 6], bytes[q + 7]]);
        let start = q + FRAME_HEADER;
        if len > MAX_RECORD_BYTES || len > bytes.len() - start {
            return false;
        }
        let end = start + len;
        let computed = if len <= STRIDE {
            frame_crc(len_bytes, &bytes[start..end])
        } else {
            shift.apply(crc32c::crc32c(&len_bytes) ^ prefix.at(start), len) ^ prefix.at(end)
        };
        computed == stored
    })
}

/// How far apart [`PrefixCrc`] keeps its values; candidates with payloads this short are
/// checked directly.
const STRIDE: usize = 64;

/// `C(i)`, the CRC32C of `bytes[..i]`, for any `i`: kept every [`STRIDE`] bytes.
struct PrefixCrc<'a> {
    bytes: &'a [u8],
    every: Vec<u32>,
}

impl<'a> PrefixCrc<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let mut every = Vec::with_capacity(bytes.len() / STRIDE + 1);
        let mut crc = 0;
        every.push(crc);
        for chunk in bytes.chunks_exact(STRIDE) {
            crc = crc32c::crc32c_append(crc, chunk);
            every.push(crc);
        }
        PrefixCrc { bytes, every }
    }

    fn at(&self, i: usize) -> u32 {
        let k = i / STRIDE;
        crc32c::crc32c_append(self.every[k], &self.bytes[k * STRIDE..i])
    }
}

/// Multiplication by `x^(8n)` modulo the CRC32C polynomial, in the reflected bit order of the
/// checksum (after zlib's `crc32_combine_gen`/`multmodp`): `shift(crc32c(a), |b|) ^
/// crc32c(b) == crc32c(a ‖ b)`.
struct Shift {
    /// `x^(2^k)` modulo the polynomial.
    x2n: [u32; 32],
}

/// The CRC32C (Castagnoli) polynomial, reflected.
const POLY: u32 = 0x82F6_3B78;

impl Shift {
    fn new() -> Self {
        let mut x2n = [0u32; 32];
        let mut p = 1 << 30; // x^1
        x2n[0] = p;
        for slot in x2n.iter_mut().skip(1) {
            p = mul_mod(p, p);
            *slot = p;
        }
        Shift { x2n }
    }

    /// `crc` times `x^(8 n)`.
    fn apply(&self, crc: u32, n: usize) -> u32 {
        // x^(8n) = product of x^(2^k) over the set bits of 8n.
        let mut power = 1u32 << 31; // x^0
        let mut rest = n as u64;
        let mut k = 3; // 8 = 2^3
        while rest != 0 {
            if rest & 1 == 1 {
                power = mul_mod(self.x2n[k & 31], power);
            }
            rest >>= 1;
            k += 1;
        }
        mul_mod(power, crc)
    }
}

/// `a * b` modulo the polynomial, both in reflected order.
fn mul_mod(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut m = 1u32 << 31;
    while m != 0 {
        if a & m != 0 {
            product ^= b;
        }
        m >>= 1;
        b = if b & 1 == 1 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    product
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use proptest::prelude::*;

    use super::*;

    /// The search, the slow way: every position, every payload re-read.
    fn find_directly(bytes: &[u8], from: usize) -> Option<usize> {
        (from..bytes.len()).find(|&q| matches!(read_frame(&mut &bytes[q..]), Ok(Ok(Some(_)))))
    }

    #[test]
    fn shift_is_crc_concatenation() {
        let shift = Shift::new();
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
        for split in [0, 1, 63, 64, 65, 1000, 4999, 5000] {
            let (a, b) = data.split_at(split);
            assert_eq!(
                shift.apply(crc32c::crc32c(a), b.len()) ^ crc32c::crc32c(b),
                crc32c::crc32c(&data),
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_frame_after_damage_is_found_wherever_it_starts() {
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, b"first");
        let second = bytes.len();
        encode_frame(&mut bytes, &[0xab; 300]); // long enough for the shifted check
        let third = bytes.len();
        encode_frame(&mut bytes, b"");
        // The first frame's length says 1000: the next frame is found where it is.
        bytes[..4].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(find_valid_frame(&bytes, 1), Some(second));
        assert_eq!(find_valid_frame(&bytes, second + 1), Some(third));
        assert_eq!(find_valid_frame(&bytes, third + 1), None);
        // Zeros are never a frame (the CRC32C of four zero bytes is not zero).
        assert_eq!(find_valid_frame(&[0; 4096], 0), None);
        assert_eq!(find_valid_frame(&[0; 7], 0), None);
    }

    proptest! {
        #[test]
        fn the_fast_search_agrees_with_reading_every_position(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..6),
            noise in proptest::collection::vec(any::<u8>(), 0..300),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..4),
            cut in any::<prop::sample::Index>(),
            from in any::<prop::sample::Index>(),
        ) {
            let mut bytes = noise;
            for record in &records {
                encode_frame(&mut bytes, record);
            }
            if !bytes.is_empty() {
                for (at, bit) in flips {
                    let at = at.index(bytes.len());
                    bytes[at] ^= 1 << bit;
                }
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            let from = from.index(bytes.len() + 1);
            prop_assert_eq!(find_valid_frame(&bytes, from), find_directly(&bytes, from));
        }
    }
}
