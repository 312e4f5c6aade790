//! Reading records back: one by handle, or all from a position.
//!
//! Readers never look past a segment's durable length as the writer last recorded it, so a
//! group commit in progress is never seen half-written. Every frame read is checked against its
//! CRC32C again: damage that appears after recovery is reported, never returned.

use std::sync::Arc;

use bytes::Bytes;

use super::error::WalError;
use super::format::{self, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::record::{Position, Record, RecordHandle};
use super::state::Inner;

fn invalid(inner: &Inner, handle: RecordHandle, reason: impl Into<String>) -> WalError {
    WalError::InvalidHandle {
        log: inner.log.clone(),
        handle,
        reason: reason.into(),
    }
}

pub(super) async fn read(inner: &Inner, handle: RecordHandle) -> Result<Record, WalError> {
    let info = inner.meta().get(&handle.segment).copied();
    let Some(info) = info else {
        return Err(invalid(
            inner,
            handle,
            "the segment does not exist (cleaned, or never written)",
        ));
    };
    // In u64, checked: a handle from a crafted checkpoint must not wrap past the end.
    let end = handle
        .offset
        .checked_add(FRAME_HEADER_LEN as u64 + u64::from(handle.length));
    let Some(end) =
        end.filter(|&end| handle.offset >= SEGMENT_HEADER_LEN as u64 && end <= info.bytes)
    else {
        return Err(invalid(
            inner,
            handle,
            format!(
                "the record would end past the segment's durable length of {}",
                info.bytes
            ),
        ));
    };
    let bytes = inner
        .segments
        .read_span(handle.segment, handle.offset, end)
        .await?;
    let frame = format::decode_frame(&bytes, format::MAX_PAYLOAD_LEN).map_err(|reason| {
        WalError::Corrupt {
            log: inner.log.clone(),
            segment: handle.segment,
            offset: handle.offset,
            reason: reason.to_owned(),
        }
    })?;
    if frame.len != handle.length {
        return Err(invalid(
            inner,
            handle,
            format!("the record there is {} bytes long", frame.len),
        ));
    }
    Ok(Record {
        handle,
        time_ms: frame.time_ms,
        payload: bytes.slice(FRAME_HEADER_LEN..),
    })
}

/// An iterator over the records of a [`super::Wal`] from a position, in log order.
///
/// It reads one segment at a time (at most one segment's bytes are held in memory) and yields
/// the records that were durable when it reached that segment. A record is never returned twice
/// or out of order. After an error, the iterator is finished.
#[derive(Debug)]
pub struct WalIter {
    inner: Arc<Inner>,
    from: Position,
    /// The loaded segment: its id, the offset of `bytes[0]`, the bytes, and the cursor in them.
    loaded: Option<(u64, u64, Bytes, usize)>,
    done: bool,
}

impl WalIter {
    pub(super) fn new(inner: Arc<Inner>, from: Position) -> Self {
        WalIter {
            inner,
            from,
            loaded: None,
            done: false,
        }
    }

    /// The next record, `None` at the end of the log.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call loses no record; the next call returns it.
    pub async fn next(&mut self) -> Option<Result<Record, WalError>> {
        while !self.done {
            if let Some(record) = self.decode_loaded() {
                return Some(record);
            }
            if let Err(err) = self.load_next_segment().await {
                self.done = true;
                return Some(Err(err));
            }
        }
        None
    }

    /// The next record of the loaded segment, `None` when it has no more.
    fn decode_loaded(&mut self) -> Option<Result<Record, WalError>> {
        let (segment, base, bytes, cursor) = self.loaded.as_mut()?;
        if *cursor >= bytes.len() {
            return None;
        }
        let at = *cursor;
        let offset = *base + at as u64;
        Some(
            match format::decode_frame(&bytes[at..], format::MAX_PAYLOAD_LEN) {
                Ok(frame) => {
                    let end = at + format::frame_len(frame.len as usize);
                    *cursor = end;
                    Ok(Record {
                        handle: RecordHandle {
                            segment: *segment,
                            offset,
                            length: frame.len,
                        },
                        time_ms: frame.time_ms,
                        payload: bytes.slice(at + FRAME_HEADER_LEN..end),
                    })
                }
                Err(reason) => {
                    self.done = true;
                    Err(WalError::Corrupt {
                        log: self.inner.log.clone(),
                        segment: *segment,
                        offset,
                        reason: reason.to_owned(),
                    })
                }
            },
        )
    }

    /// Loads the durable bytes of the next segment at or after `from`; finishes the iterator
    /// when there is none.
    async fn load_next_segment(&mut self) -> Result<(), WalError> {
        let after = self.loaded.as_ref().map(|(segment, ..)| *segment);
        let next = self
            .inner
            .meta()
            .values()
            .find(|s| match after {
                Some(prev) => s.id > prev,
                None => s.id >= self.from.segment,
            })
            .copied();
        let Some(info) = next else {
            self.done = true;
            return Ok(());
        };
        let start = if info.id == self.from.segment {
            self.from.offset.max(SEGMENT_HEADER_LEN as u64)
        } else {
            SEGMENT_HEADER_LEN as u64
        };
        let bytes = if start < info.bytes {
            self.inner
                .segments
                .read_span(info.id, start, info.bytes)
                .await?
        } else {
            Bytes::new()
        };
        self.loaded = Some((info.id, start, bytes, 0));
        Ok(())
    }

    /// Collects every remaining record.
    pub async fn collect_all(mut self) -> Result<Vec<Record>, WalError> {
        let mut out = Vec::new();
        while let Some(record) = self.next().await {
            out.push(record?);
        }
        Ok(out)
    }
}
