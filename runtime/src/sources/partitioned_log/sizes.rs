//! How many records of a segment fit in a byte budget, told from the segment's sparse index
//! and its frame headers without reading a payload: what a direct stream asks when it plans a
//! batch (`OffsetSource::byte_prefix`). Pure over a "read these bytes at this position"
//! function, so it is tested on a byte vector; the log in `partitioned_log.rs` does the I/O.
//!
//! Invariant: the answer is exact — the payload bytes of whole records, counted from the
//! frames' length fields — and it reads only bytes before the segment's valid length, which
//! hold whole, checked frames. Cost: at most two runs of [`INDEX_EVERY`](super) headers (one
//! to find where the first record starts, one after the last whole index block that fits);
//! the index blocks in between are summed from the index alone.

use std::io;

use super::frame::FRAME_HEADER;

/// One segment as the walk sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct SegmentSpan<'a> {
    /// (offset, byte position) of every [`INDEX_EVERY`](super)-th record, starting with the
    /// segment's first record at position 0, ascending.
    pub(super) index: &'a [(u64, u64)],
    /// One past the segment's last whole record.
    pub(super) end: u64,
    /// The bytes those records take.
    pub(super) valid_len: u64,
}

/// How far a walk got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Walked {
    /// One past the last record taken.
    pub(super) until: u64,
    /// Their payload bytes.
    pub(super) bytes: u64,
    /// Whether the walk stopped because the next record did not fit (rather than at `until`
    /// or the segment's end).
    pub(super) full: bool,
}

/// From record `from` of `segment`, the longest run of records before `until` whose payloads
/// total at most `max_bytes`. `read_at(position, buf)` fills `buf` with the segment's bytes
/// at `position`.
///
/// # Errors
///
/// `read_at` failed (`Ok(Err(reason))`: a frame header points past the valid bytes, which a
/// scanned segment never does).
pub(super) fn walk(
    segment: SegmentSpan<'_>,
    from: u64,
    until: u64,
    max_bytes: u64,
    mut read_at: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
) -> io::Result<Result<Walked, String>> {
    let until = until.min(segment.end);
    let Some(first) = segment.index.first() else {
        return Ok(Err("a segment without an index".to_owned()));
    };
    if from < first.0 {
        return Ok(Err(format!(
            "record {from} is before the segment's first, {}",
            first.0
        )));
    }
    if from >= until {
        return Ok(Ok(Walked {
            until: from,
            bytes: 0,
            full: false,
        }));
    }
    let header = FRAME_HEADER as u64;
    // The payload length of the record whose frame starts at `pos`.
    let mut payload_at = |pos: u64| -> io::Result<Result<u64, String>> {
        let mut frame = [0u8; FRAME_HEADER];
        if pos + header > segment.valid_len {
            return Ok(Err(format!(
                "a frame at byte {pos} past the valid length {}",
                segment.valid_len
            )));
        }
        read_at(pos, &mut frame)?;
        let len = u64::from(u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]));
        if pos + header + len > segment.valid_len {
            return Ok(Err(format!(
                "a frame at byte {pos} of {len} bytes past the valid length {}",
                segment.valid_len
            )));
        }
        Ok(Ok(len))
    };
    // Where `from` starts: from the index entry at or before it, header by header.
    let i = segment.index.partition_point(|(o, _)| *o <= from) - 1;
    let (mut cur, mut pos) = segment.index[i];
    while cur < from {
        match payload_at(pos)? {
            Ok(len) => pos += header + len,
            Err(reason) => return Ok(Err(reason)),
        }
        cur += 1;
    }
    let mut bytes = 0u64;
    // Whole index blocks, summed from the index (the segment's end is the last boundary).
    let boundaries = segment.index[i + 1..]
        .iter()
        .copied()
        .chain(std::iter::once((segment.end, segment.valid_len)));
    for (offset, at) in boundaries {
        if offset <= cur {
            continue;
        }
        if offset > until {
            break;
        }
        let payload = (at - pos).saturating_sub((offset - cur) * header);
        if bytes + payload > max_bytes {
            break;
        }
        bytes += payload;
        (cur, pos) = (offset, at);
    }
    // Then record by record.
    while cur < until {
        let len = match payload_at(pos)? {
            Ok(len) => len,
            Err(reason) => return Ok(Err(reason)),
        };
        if bytes + len > max_bytes {
            return Ok(Ok(Walked {
                until: cur,
                bytes,
                full: true,
            }));
        }
        bytes += len;
        pos += header + len;
        cur += 1;
    }
    Ok(Ok(Walked {
        until: cur,
        bytes,
        full: false,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::sources::partitioned_log::frame::encode_frame;

    /// A segment of records with the given payload lengths, and its index every `every`.
    fn segment(lens: &[usize], every: u64) -> (Vec<u8>, Vec<(u64, u64)>) {
        let mut bytes = Vec::new();
        let mut index = vec![(0, 0)];
        for (i, len) in lens.iter().enumerate() {
            encode_frame(&mut bytes, &vec![b'x'; *len]);
            let n = i as u64 + 1;
            if n.is_multiple_of(every) {
                index.push((n, bytes.len() as u64));
            }
        }
        (bytes, index)
    }

    fn run(bytes: &[u8], index: &[(u64, u64)], from: u64, until: u64, max: u64) -> Walked {
        let span = SegmentSpan {
            index,
            end: count_frames(bytes),
            valid_len: bytes.len() as u64,
        };
        walk(span, from, until, max, |pos, buf| {
            let pos = usize::try_from(pos).unwrap();
            buf.copy_from_slice(&bytes[pos..pos + buf.len()]);
            Ok(())
        })
        .unwrap()
        .unwrap()
    }

    fn count_frames(bytes: &[u8]) -> u64 {
        let mut pos = 0;
        let mut n = 0;
        while pos < bytes.len() {
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            pos += FRAME_HEADER + len;
            n += 1;
        }
        n
    }

    /// The answer computed the slow way: record by record.
    fn expected(lens: &[usize], from: u64, until: u64, max: u64) -> Walked {
        let mut bytes = 0;
        let mut cur = from;
        while cur < until.min(lens.len() as u64) {
            let len = lens[cur as usize] as u64;
            if bytes + len > max {
                return Walked {
                    until: cur,
                    bytes,
                    full: true,
                };
            }
            bytes += len;
            cur += 1;
        }
        Walked {
            until: cur,
            bytes,
            full: false,
        }
    }

    #[test]
    fn the_walk_counts_payload_bytes_exactly_with_and_without_the_index() {
        let lens: Vec<usize> = (0..100).map(|i| (i * 37) % 50).collect();
        let total: u64 = lens.iter().map(|l| *l as u64).sum();
        for every in [1, 3, 7, 1000] {
            let (bytes, index) = segment(&lens, every);
            for from in [0, 1, 5, 33, 99, 100] {
                for until in [from, from + 1, 50, 100, 200] {
                    for max in [0, 1, 24, 100, 1000, total, u64::MAX] {
                        assert_eq!(
                            run(&bytes, &index, from, until, max),
                            expected(&lens, from, until.max(from), max),
                            "every {every}, from {from}, until {until}, max {max}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_record_larger_than_the_budget_is_not_taken() {
        let (bytes, index) = segment(&[10, 500, 10], 2);
        assert_eq!(
            run(&bytes, &index, 1, 3, 100),
            Walked {
                until: 1,
                bytes: 0,
                full: true
            }
        );
    }

    #[test]
    fn a_header_pointing_past_the_valid_bytes_is_an_error_not_a_panic() {
        let (mut bytes, _) = segment(&[10, 10], 1000);
        bytes[0] = 200; // the first frame now claims 200 bytes
        let index = [(0, 0)];
        let span = SegmentSpan {
            index: &index,
            end: 2,
            valid_len: bytes.len() as u64,
        };
        let walked = walk(span, 1, 2, 1000, |pos, buf| {
            let pos = usize::try_from(pos).unwrap();
            buf.copy_from_slice(&bytes[pos..pos + buf.len()]);
            Ok(())
        })
        .unwrap();
        assert!(walked.unwrap_err().contains("past the valid length"));
    }
}
