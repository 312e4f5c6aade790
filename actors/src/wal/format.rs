//! The WAL's bytes: the segment header and the record frame.
//!
//! `docs/architecture.md` ("On-storage formats", "WAL segment") is the specification; the offsets below are chained so
//! they cannot drift from one another, and `tests::golden_*` pin them to the document.
//!
//! ```text
//! segment = { header (32 bytes) | frame* }
//! header  = { magic [8] | u16 version | u16 flags | u64 segment id | u64 created ms | u32 crc32c }
//! frame   = { u32 payload len | u32 crc32c(len ‖ time ‖ payload) | u64 time ms | payload }
//! ```
//!
//! All integers are little-endian. A frame's checksum covers its length and time, so a torn or
//! flipped length is caught, and a region of zero bytes never parses as a frame (the CRC32C of
//! twelve zero bytes is not zero).

/// The first eight bytes of every segment. PNG-style: a non-ASCII byte first, so the file is
/// not mistaken for text, then a readable name.
pub const SEGMENT_MAGIC: [u8; 8] = [0x89, b'W', b'E', b'I', b'R', b'W', b'A', b'L'];
/// The segment format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + SEGMENT_MAGIC.len();
const FLAGS_OFFSET: usize = VERSION_OFFSET + size_of::<u16>();
const SEGMENT_ID_OFFSET: usize = FLAGS_OFFSET + size_of::<u16>();
const CREATED_OFFSET: usize = SEGMENT_ID_OFFSET + size_of::<u64>();
const HEADER_CRC_OFFSET: usize = CREATED_OFFSET + size_of::<u64>();
/// The length of a segment header in bytes.
pub const SEGMENT_HEADER_LEN: usize = HEADER_CRC_OFFSET + size_of::<u32>();

const FRAME_LEN_OFFSET: usize = 0;
const FRAME_CRC_OFFSET: usize = FRAME_LEN_OFFSET + size_of::<u32>();
const FRAME_TIME_OFFSET: usize = FRAME_CRC_OFFSET + size_of::<u32>();
/// The length of a record frame's header in bytes (the payload follows).
pub const FRAME_HEADER_LEN: usize = FRAME_TIME_OFFSET + size_of::<u64>();

/// The largest payload a frame can describe.
pub const MAX_PAYLOAD_LEN: u32 = u32::MAX - FRAME_HEADER_LEN as u32;

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Encodes the header of segment `id`, created at `created_ms` (ms since the Unix epoch).
pub fn encode_header(id: u64, created_ms: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&SEGMENT_MAGIC);
    h[VERSION_OFFSET..FLAGS_OFFSET].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[FLAGS_OFFSET..SEGMENT_ID_OFFSET].copy_from_slice(&0u16.to_le_bytes());
    h[SEGMENT_ID_OFFSET..CREATED_OFFSET].copy_from_slice(&id.to_le_bytes());
    h[CREATED_OFFSET..HEADER_CRC_OFFSET].copy_from_slice(&created_ms.to_le_bytes());
    let crc = crc32c::crc32c(&h[..HEADER_CRC_OFFSET]);
    h[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A decoded, valid segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment id.
    pub id: u64,
    /// When the segment was created (ms since the Unix epoch).
    pub created_ms: u64,
}

/// Decodes and validates a segment header. `expected_id` is the id in the segment's name.
pub fn decode_header(bytes: &[u8], expected_id: u64) -> Result<SegmentHeader, String> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(format!(
            "segment header is truncated ({} of {SEGMENT_HEADER_LEN} bytes)",
            bytes.len()
        ));
    }
    if bytes[MAGIC_OFFSET..VERSION_OFFSET] != SEGMENT_MAGIC {
        return Err("not a weir WAL segment (bad magic number)".to_owned());
    }
    let stored = u32_at(bytes, HEADER_CRC_OFFSET);
    if crc32c::crc32c(&bytes[..HEADER_CRC_OFFSET]) != stored {
        return Err("segment header checksum mismatch".to_owned());
    }
    let version = u16_at(bytes, VERSION_OFFSET);
    if version != FORMAT_VERSION {
        return Err(format!(
            "segment format version {version} is not supported (this build reads version \
             {FORMAT_VERSION})"
        ));
    }
    let id = u64_at(bytes, SEGMENT_ID_OFFSET);
    if id != expected_id {
        return Err(format!(
            "segment header says id {id}, but its name says {expected_id}"
        ));
    }
    Ok(SegmentHeader {
        id,
        created_ms: u64_at(bytes, CREATED_OFFSET),
    })
}

/// The checksum of a frame: CRC32C over its length, time and payload.
fn frame_crc(len: u32, time_ms: u64, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &time_ms.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

/// Appends the frame for `payload` to `out`. The caller has checked the payload's length.
pub fn encode_frame(out: &mut Vec<u8>, time_ms: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    debug_assert!(len <= MAX_PAYLOAD_LEN);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&frame_crc(len, time_ms, payload).to_le_bytes());
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The size of the frame that holds a payload of `payload_len` bytes.
pub fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_LEN + payload_len
}

/// One valid frame found by [`decode_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The payload's length.
    pub len: u32,
    /// The record's time (ms since the Unix epoch).
    pub time_ms: u64,
}

/// Decodes the frame at the start of `bytes`; the payload is `bytes[FRAME_HEADER_LEN..][..len]`.
///
/// A length larger than `max_payload`, or than the bytes present, is rejected before anything
/// is read, so a corrupt length never makes a reader read past what it holds.
pub fn decode_frame(bytes: &[u8], max_payload: u32) -> Result<Frame, &'static str> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err("record header is truncated");
    }
    let len = u32_at(bytes, FRAME_LEN_OFFSET);
    if len > max_payload {
        return Err("record length exceeds the maximum record size");
    }
    let end = FRAME_HEADER_LEN + len as usize;
    if bytes.len() < end {
        return Err("record is truncated");
    }
    let time_ms = u64_at(bytes, FRAME_TIME_OFFSET);
    if frame_crc(len, time_ms, &bytes[FRAME_HEADER_LEN..end]) != u32_at(bytes, FRAME_CRC_OFFSET) {
        return Err("record checksum mismatch");
    }
    Ok(Frame { len, time_ms })
}

/// What scanning a segment's bytes found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scan {
    /// The header, if it was valid.
    pub(crate) header: Option<SegmentHeader>,
    /// The number of valid bytes from the start: the header plus every valid frame before the
    /// first invalid byte.
    pub(crate) valid_len: u64,
    /// How many valid records there are.
    pub(crate) records: u64,
    /// The newest record time among the valid records.
    pub(crate) max_time_ms: Option<u64>,
    /// The first problem: its offset and a description. `None` if every byte is valid.
    pub(crate) damage: Option<(u64, String)>,
}

/// Scans a segment's bytes from the start, calling `visit(offset, frame, payload)` for every
/// valid frame, and stops at the first invalid byte.
pub(crate) fn scan(
    bytes: &[u8],
    expected_id: u64,
    max_payload: u32,
    mut visit: impl FnMut(u64, Frame, &[u8]),
) -> Scan {
    let header = match decode_header(bytes, expected_id) {
        Ok(h) => h,
        Err(reason) => {
            return Scan {
                header: None,
                valid_len: 0,
                records: 0,
                max_time_ms: None,
                damage: Some((0, reason)),
            };
        }
    };
    let mut at = SEGMENT_HEADER_LEN;
    let mut records = 0;
    let mut max_time_ms: Option<u64> = None;
    let mut damage = None;
    while at < bytes.len() {
        match decode_frame(&bytes[at..], max_payload) {
            Ok(frame) => {
                let end = at + frame_len(frame.len as usize);
                visit(at as u64, frame, &bytes[at + FRAME_HEADER_LEN..end]);
                records += 1;
                max_time_ms = Some(max_time_ms.map_or(frame.time_ms, |t| t.max(frame.time_ms)));
                at = end;
            }
            Err(reason) => {
                damage = Some((at as u64, reason.to_owned()));
                break;
            }
        }
    }
    Scan {
        header: Some(header),
        valid_len: at as u64,
        records,
        max_time_ms,
        damage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_segment_header_bytes() {
        let h = encode_header(7, 0x0102_0304_0506_0708);
        let mut expected = vec![0x89, b'W', b'E', b'I', b'R', b'W', b'A', b'L', 1, 0, 0, 0];
        expected.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        expected.extend_from_slice(&crc32c::crc32c(&expected).to_le_bytes());
        assert_eq!(h.as_slice(), expected.as_slice());
        assert_eq!(SEGMENT_HEADER_LEN, 32);
        assert_eq!(
            decode_header(&h, 7),
            Ok(SegmentHeader {
                id: 7,
                created_ms: 0x0102030405060708
            })
        );
    }

    #[test]
    fn golden_frame_bytes() {
        let mut out = Vec::new();
        encode_frame(&mut out, 5, b"hi");
        let mut crc_input = vec![2, 0, 0, 0];
        crc_input.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0]);
        crc_input.extend_from_slice(b"hi");
        let crc = crc32c::crc32c(&crc_input).to_le_bytes();
        let expected = [&[2, 0, 0, 0][..], &crc, &[5, 0, 0, 0, 0, 0, 0, 0], b"hi"].concat();
        assert_eq!(out, expected);
        assert_eq!(decode_frame(&out, 1024), Ok(Frame { len: 2, time_ms: 5 }));
    }

    #[test]
    fn zero_bytes_never_parse_as_a_frame() {
        for len in 0..64 {
            assert!(
                decode_frame(&vec![0; len], u32::MAX).is_err(),
                "{len} zero bytes parsed"
            );
        }
    }

    #[test]
    fn header_for_another_segment_is_rejected() {
        let h = encode_header(3, 1);
        assert!(decode_header(&h, 4).unwrap_err().contains("name says 4"));
    }

    #[test]
    fn unknown_version_is_rejected_with_its_number() {
        let mut h = encode_header(1, 1);
        h[VERSION_OFFSET] = 9;
        let crc = crc32c::crc32c(&h[..HEADER_CRC_OFFSET]);
        h[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode_header(&h, 1).unwrap_err().contains("version 9"));
    }

    #[test]
    fn oversized_length_is_rejected_before_reading() {
        let mut out = Vec::new();
        encode_frame(&mut out, 1, &[1; 100]);
        assert_eq!(
            decode_frame(&out, 99),
            Err("record length exceeds the maximum record size")
        );
    }

    #[test]
    fn scan_stops_at_first_invalid_frame() {
        let mut seg = encode_header(1, 0).to_vec();
        encode_frame(&mut seg, 1, b"a");
        let good = seg.len();
        encode_frame(&mut seg, 2, b"bb");
        seg[good + FRAME_HEADER_LEN] ^= 1;
        let mut seen = Vec::new();
        let s = scan(&seg, 1, 1024, |off, _, p| seen.push((off, p.to_vec())));
        assert_eq!(seen, vec![(SEGMENT_HEADER_LEN as u64, b"a".to_vec())]);
        assert_eq!(s.valid_len, good as u64);
        assert_eq!(
            s.damage,
            Some((good as u64, "record checksum mismatch".to_owned()))
        );
    }
}
