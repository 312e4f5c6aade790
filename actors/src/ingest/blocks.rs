//! Blocks: how records travel through the engine.
//!
//! Records never travel one per message. A receiver's records are cut into a [`Block`]
//! (every block interval, or when it is large enough), the block's bytes are written to the
//! receiver WAL *before* anything is acknowledged, and from then on the block is shared by
//! `Arc` between the actors that need it — never copied. The engine does not know what a record
//! means: a record is bytes, and the runtime crate gives them a type.
//!
//! A block's identity is its stream and the WAL handle of its data ([`BlockInfo::stream`],
//! [`BlockInfo::handle`]): durable, enough to read the block back after a crash, and unique —
//! a handle is unique within one WAL (segment ids are never reused), and a stream writes to
//! one WAL.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::wal::RecordHandle;

/// The id of an input stream (one receiver, or one direct source).
pub type StreamId = u32;

/// Metadata of one stored block: what the block tracker records and allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockInfo {
    /// The stream that received it.
    pub stream: StreamId,
    /// Where its data is in the receiver WAL; with `stream`, its identity.
    pub handle: RecordHandle,
    /// How many records it holds.
    pub records: u64,
    /// When it was stored (ms since the Unix epoch).
    pub stored_ms: u64,
}

/// A block of records, shared between actors without copying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Its metadata.
    pub info: BlockInfo,
    /// Its records.
    pub records: Arc<[Bytes]>,
}

/// Encodes records as one WAL payload: postcard `Vec<&[u8]>` (a varint count, then a varint
/// length and the bytes of each record), written directly into a buffer of its exact size
/// (one allocation and one copy of each record: a socket receiver's block is about a
/// hundred thousand short lines, and serde's growing buffer copied them several times).
pub(crate) fn encode_records(records: &[Bytes]) -> Result<Vec<u8>, postcard::Error> {
    let size = varint_len(records.len())
        + records
            .iter()
            .map(|r| varint_len(r.len()) + r.len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    put_varint(&mut out, records.len());
    for record in records {
        put_varint(&mut out, record.len());
        out.extend_from_slice(record);
    }
    Ok(out)
}

/// Bytes of postcard's varint (LEB128) of `n`.
fn varint_len(n: usize) -> usize {
    (usize::BITS - (n | 1).leading_zeros()).div_ceil(7) as usize
}

/// Appends postcard's varint (LEB128: seven bits a byte, low first, the high bit set on every
/// byte but the last) of `n`.
fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Decodes a WAL payload made by [`encode_records`]; the records share `payload`'s memory.
pub(crate) fn decode_records(payload: &Bytes) -> Result<Vec<Bytes>, postcard::Error> {
    let slices: Vec<&[u8]> = postcard::from_bytes(payload)?;
    Ok(slices.into_iter().map(|s| payload.slice_ref(s)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_without_copying() {
        let records = vec![
            Bytes::from_static(b"a"),
            Bytes::new(),
            Bytes::from(vec![7; 300]),
        ];
        let payload = Bytes::from(encode_records(&records).unwrap());
        let back = decode_records(&payload).unwrap();
        assert_eq!(back, records);
        let range = payload.as_ptr_range();
        assert!(
            back.iter()
                .filter(|r| !r.is_empty())
                .all(|r| range.contains(&r.as_ptr()))
        );
    }

    #[test]
    fn the_payload_is_postcards_encoding_byte_for_byte() {
        // Lengths around each varint width, and counts too.
        for lens in [
            vec![],
            vec![0],
            vec![1, 127, 128, 129],
            vec![16_383, 16_384, 300, 5],
            vec![3; 200],
        ] {
            let records: Vec<Bytes> = lens
                .iter()
                .enumerate()
                .map(|(i, &len)| Bytes::from(vec![i as u8; len]))
                .collect();
            let slices: Vec<&[u8]> = records.iter().map(|r| r.as_ref()).collect();
            let ours = encode_records(&records).unwrap();
            assert_eq!(ours, postcard::to_allocvec(&slices).unwrap(), "{lens:?}");
            assert_eq!(ours.len(), ours.capacity(), "{lens:?}: sized exactly");
        }
        for n in [0usize, 1, 127, 128, 16_383, 16_384, usize::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(out.len(), varint_len(n), "{n}");
        }
    }

    #[test]
    fn a_damaged_payload_is_an_error_not_a_panic() {
        let payload = Bytes::from(encode_records(&[Bytes::from_static(b"abc")]).unwrap());
        for cut in 0..payload.len() {
            let _ = decode_records(&payload.slice(..cut));
        }
        assert!(decode_records(&Bytes::from_static(&[5, 200])).is_err());
    }
}
