//! The commit marker of a batch directory, `_COMMITTED`: which part files make up the batch,
//! with each one's length and CRC32C, and which batch it is — encoded and decoded here, with
//! no I/O (the sink in `batch_dir.rs` reads, writes and checks it against the files).
//!
//! The bytes are specified in `docs/architecture.md` ("On-storage formats", "Batch commit
//! marker"); the offsets below are chained from one another, and `tests::golden_*` pins them
//! to the document.
//!
//! Invariant: a marker decodes only if every byte of it is as an encoder wrote it (the CRC32C
//! covers all of them) and it lists each partition at most once, in ascending order.

/// The marker's file name inside a batch directory. It starts with `_`, so readers that skip
/// `_`- and `.`-prefixed files (Hadoop, Spark, weir's own file stream) never take it for data.
pub const MARKER_FILE: &str = "_COMMITTED";

/// `\x89WEIRCMT`: a non-ASCII first byte, then ASCII (PNG-style).
const MAGIC: [u8; 8] = *b"\x89WEIRCMT";
/// The only format version this build writes and reads.
const VERSION: u16 = 1;

const MAGIC_END: usize = MAGIC.len();
const VERSION_END: usize = MAGIC_END + 2;
const RESERVED_END: usize = VERSION_END + 2;
const BATCH_TIME_END: usize = RESERVED_END + 8;
const COUNT_END: usize = BATCH_TIME_END + 4;
/// Bytes before the first entry.
const HEADER_LEN: usize = COUNT_END;
/// One entry: `u64 partition | u64 len | u32 crc32c`.
const ENTRY_LEN: usize = 8 + 8 + 4;
/// The trailing checksum.
const CRC_LEN: usize = 4;

/// The largest marker a reader accepts (a million partitions fit): anything longer is not a
/// marker, and is not read whole into memory.
pub(crate) const MAX_MARKER_BYTES: u64 = 32 << 20;

/// One part file as the marker lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The partition: the file is `part-<partition, at least 5 digits>`.
    pub(crate) partition: u64,
    /// Its length in bytes.
    pub(crate) len: u64,
    /// The CRC32C of its bytes.
    pub(crate) crc32c: u32,
}

/// The name of partition `partition`'s part file.
pub(crate) fn part_name(partition: u64) -> String {
    format!("part-{partition:05}")
}

/// A decoded marker: the batch and its parts, in ascending partition order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) batch_time_ms: u64,
    pub(crate) parts: Vec<Entry>,
}

impl Marker {
    /// The marker's bytes. `parts` must be in ascending partition order, each once (the
    /// sink keeps them in a `BTreeMap`).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.parts.len() * ENTRY_LEN + CRC_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.batch_time_ms.to_le_bytes());
        // A batch of more than u32::MAX partitions cannot be planned: saturate, and the
        // length check on reading rejects the marker.
        let count = u32::try_from(self.parts.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        for part in &self.parts {
            out.extend_from_slice(&part.partition.to_le_bytes());
            out.extend_from_slice(&part.len.to_le_bytes());
            out.extend_from_slice(&part.crc32c.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a marker, or says what is wrong with it (a sentence with the values).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Marker, String> {
        if bytes.len() < HEADER_LEN + CRC_LEN {
            return Err(format!(
                "{} bytes, shorter than the {} of an empty marker",
                bytes.len(),
                HEADER_LEN + CRC_LEN
            ));
        }
        if bytes[..MAGIC_END] != MAGIC {
            return Err("it does not start with the marker's magic \\x89WEIRCMT".to_owned());
        }
        let version = u16::from_le_bytes([bytes[MAGIC_END], bytes[MAGIC_END + 1]]);
        if version != VERSION {
            return Err(format!(
                "format version {version}, this build reads only version {VERSION}"
            ));
        }
        let reserved = u16::from_le_bytes([bytes[VERSION_END], bytes[VERSION_END + 1]]);
        if reserved != 0 {
            return Err(format!("reserved field {reserved}, not 0"));
        }
        let batch_time_ms = u64_at(bytes, RESERVED_END);
        let count = u32::from_le_bytes([
            bytes[BATCH_TIME_END],
            bytes[BATCH_TIME_END + 1],
            bytes[BATCH_TIME_END + 2],
            bytes[BATCH_TIME_END + 3],
        ]) as usize;
        let expected = count
            .checked_mul(ENTRY_LEN)
            .and_then(|n| n.checked_add(HEADER_LEN + CRC_LEN));
        if expected != Some(bytes.len()) {
            return Err(format!(
                "{} bytes for {count} parts, which take {}",
                bytes.len(),
                expected.map_or_else(|| "more".to_owned(), |n| n.to_string())
            ));
        }
        let body = bytes.len() - CRC_LEN;
        let stored = u32::from_le_bytes([
            bytes[body],
            bytes[body + 1],
            bytes[body + 2],
            bytes[body + 3],
        ]);
        let computed = crc32c::crc32c(&bytes[..body]);
        if stored != computed {
            return Err(format!(
                "its CRC32C is {stored:#010x} but its bytes give {computed:#010x}"
            ));
        }
        let mut parts: Vec<Entry> = Vec::with_capacity(count);
        for entry in bytes[HEADER_LEN..body].chunks_exact(ENTRY_LEN) {
            let part = Entry {
                partition: u64_at(entry, 0),
                len: u64_at(entry, 8),
                crc32c: u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]),
            };
            if let Some(previous) = parts.last()
                && previous.partition >= part.partition
            {
                return Err(format!(
                    "partition {} listed after partition {}",
                    part.partition, previous.partition
                ));
            }
            parts.push(part);
        }
        Ok(Marker {
            batch_time_ms,
            parts,
        })
    }
}

/// The u64 LE at `at` (the caller checked the length).
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    /// Batch 1000 of two partitions: `a<TAB>1\n`, and an empty one.
    fn example() -> Marker {
        Marker {
            batch_time_ms: 1000,
            parts: vec![
                Entry {
                    partition: 0,
                    len: 4,
                    crc32c: crc32c::crc32c(b"a\t1\n"),
                },
                Entry {
                    partition: 1,
                    len: 0,
                    crc32c: crc32c::crc32c(b""),
                },
            ],
        }
    }

    /// The hex bytes of the block after `marker` in `docs/architecture.md`.
    fn doc_bytes(marker: &str) -> Vec<u8> {
        weir_actors::testing::golden_bytes(include_str!("../../../../docs/architecture.md"), marker)
    }

    #[test]
    fn golden_marker_bytes_match_the_example_in_the_architecture_document() {
        let bytes = example().encode();
        assert_eq!(bytes, doc_bytes("<!-- golden: commit-marker-example -->"));
        assert_eq!(Marker::decode(&bytes).unwrap(), example());
    }

    #[test]
    fn every_damaged_byte_and_every_truncation_is_rejected() {
        let good = example().encode();
        for at in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[at] ^= 1 << bit;
                assert!(Marker::decode(&bad).is_err(), "byte {at} bit {bit}");
            }
        }
        for len in 0..good.len() {
            assert!(Marker::decode(&good[..len]).is_err(), "length {len}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(Marker::decode(&longer).is_err());
    }

    #[test]
    fn rejections_name_the_problem() {
        let mut future = example().encode();
        future[MAGIC_END] = 2;
        let body = future.len() - CRC_LEN;
        let crc = crc32c::crc32c(&future[..body]).to_le_bytes();
        future[body..].copy_from_slice(&crc);
        assert_eq!(
            Marker::decode(&future).unwrap_err(),
            "format version 2, this build reads only version 1"
        );

        let twice = Marker {
            batch_time_ms: 5,
            parts: vec![example().parts[0], example().parts[0]],
        };
        assert_eq!(
            Marker::decode(&twice.encode()).unwrap_err(),
            "partition 0 listed after partition 0"
        );
        assert!(
            Marker::decode(b"part-00000")
                .unwrap_err()
                .contains("shorter than the 28")
        );
    }

    #[test]
    fn an_empty_batch_has_a_marker_too() {
        let empty = Marker {
            batch_time_ms: u64::MAX,
            parts: Vec::new(),
        };
        let bytes = empty.encode();
        assert_eq!(bytes.len(), HEADER_LEN + CRC_LEN);
        assert_eq!(Marker::decode(&bytes).unwrap(), empty);
        assert_eq!(part_name(7), "part-00007");
        assert_eq!(part_name(123_456), "part-123456");
    }
}
