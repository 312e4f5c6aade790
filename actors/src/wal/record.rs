//! Records and where they are: [`RecordHandle`] (one record's segment, offset and length),
//! [`Position`] (where to read from), [`Record`] (one read back).

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::format;

/// Where one record is: its segment, the byte offset of its frame, and its payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordHandle {
    /// The segment id.
    pub segment: u64,
    /// The offset of the record's frame within the segment.
    pub offset: u64,
    /// The payload's length in bytes.
    pub length: u32,
}

impl RecordHandle {
    /// The position just after this record: where iteration continues. For a handle whose
    /// record would end past `u64::MAX` (never one the log handed out) it is offset `u64::MAX`,
    /// past every record of the segment, rather than a wrapped offset before them.
    pub fn next_position(&self) -> Position {
        let len = format::FRAME_HEADER_LEN as u64 + u64::from(self.length);
        Position {
            segment: self.segment,
            offset: self.offset.saturating_add(len),
        }
    }

    /// The position of this record.
    pub fn position(&self) -> Position {
        Position {
            segment: self.segment,
            offset: self.offset,
        }
    }
}

impl fmt::Display for RecordHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "segment {} offset {} ({} bytes)",
            self.segment, self.offset, self.length
        )
    }
}

/// A place in the log to iterate from: records at or after it are returned.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    /// The segment id.
    pub segment: u64,
    /// The byte offset within the segment.
    pub offset: u64,
}

impl Position {
    /// The start of the log.
    pub const START: Position = Position {
        segment: 0,
        offset: 0,
    };
}

/// A record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Where it is.
    pub handle: RecordHandle,
    /// Its time (ms since the Unix epoch), given at append.
    pub time_ms: u64,
    /// Its bytes.
    pub payload: Bytes,
}
