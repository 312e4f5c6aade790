//! [`KafkaRecord`]: one record of a Kafka topic as a Kafka stream delivers it — where it was
//! (topic, partition, offset), its key, value, timestamp and headers. It owns what it holds:
//! the bytes are copied out of librdkafka's buffers once, when the batch is read, into
//! buffers shared by many records (a record's key and value are slices of one allocation
//! shared with its neighbours), so a record is cheap to clone and outlives the consumer.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};

/// When a record was created or appended, as Kafka stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KafkaTimestamp {
    /// The record has no timestamp (a message format older than Kafka 0.10).
    NotAvailable,
    /// Set by the producer: milliseconds since the Unix epoch.
    CreateTime(i64),
    /// Set by the broker when it appended the record: milliseconds since the Unix epoch.
    LogAppendTime(i64),
}

impl KafkaTimestamp {
    /// The milliseconds since the Unix epoch, whichever kind; `None` if not available.
    pub fn millis(&self) -> Option<i64> {
        match self {
            KafkaTimestamp::NotAvailable => None,
            KafkaTimestamp::CreateTime(ms) | KafkaTimestamp::LogAppendTime(ms) => Some(*ms),
        }
    }
}

/// One record read from Kafka: where it was, and what it holds. The fields are public; a
/// record is a plain value (cloning shares its bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaRecord {
    /// The topic (shared by the records of one partition in a batch).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset in its partition.
    pub offset: i64,
    /// The key (`None`: the record has no key).
    pub key: Option<Bytes>,
    /// The value (`None`: a null value, e.g. a tombstone in a compacted topic).
    pub value: Option<Bytes>,
    /// The timestamp.
    pub timestamp: KafkaTimestamp,
    /// The headers, in order: name and value (`None`: a null value).
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl KafkaRecord {
    /// The value's bytes, empty for a null value.
    pub fn value_bytes(&self) -> Bytes {
        self.value.clone().unwrap_or_default()
    }

    /// The value as UTF-8 text, if it is.
    pub fn value_str(&self) -> Option<&str> {
        self.value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first header named `name`, if any (its value may be null).
    pub fn header(&self, name: &str) -> Option<Option<&Bytes>> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// Key and value bytes together: what the byte budget of a batch counts.
    pub fn size(&self) -> u64 {
        let key = self.key.as_ref().map_or(0, Bytes::len);
        let value = self.value.as_ref().map_or(0, Bytes::len);
        (key + value) as u64
    }
}

/// Copies records out of librdkafka's buffers into large shared buffers: each record's bytes
/// are a slice of a chunk of at least [`CHUNK`] bytes, so a batch of small records makes few
/// allocations.
#[derive(Debug, Default)]
pub(crate) struct RecordBuilder {
    buffer: BytesMut,
}

/// The size of the shared buffers records are copied into.
const CHUNK: usize = 256 * 1024;

impl RecordBuilder {
    /// A copy of `bytes` in the current shared buffer.
    fn copy(&mut self, bytes: &[u8]) -> Bytes {
        if self.buffer.capacity() - self.buffer.len() < bytes.len() {
            self.buffer = BytesMut::with_capacity(CHUNK.max(bytes.len()));
        }
        self.buffer.extend_from_slice(bytes);
        self.buffer.split().freeze()
    }

    /// The record `message` holds, from partition `topic`.
    pub(crate) fn record(
        &mut self,
        topic: &Arc<str>,
        message: &BorrowedMessage<'_>,
    ) -> KafkaRecord {
        let key = message.key().map(|k| self.copy(k));
        let value = message.payload().map(|v| self.copy(v));
        let timestamp = match message.timestamp() {
            rdkafka::Timestamp::NotAvailable => KafkaTimestamp::NotAvailable,
            rdkafka::Timestamp::CreateTime(ms) => KafkaTimestamp::CreateTime(ms),
            rdkafka::Timestamp::LogAppendTime(ms) => KafkaTimestamp::LogAppendTime(ms),
        };
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(|v| self.copy(v))))
                    .collect()
            })
            .unwrap_or_default();
        KafkaRecord {
            topic: Arc::clone(topic),
            partition: message.partition(),
            offset: message.offset(),
            key,
            value,
            timestamp,
            headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_one_buffer_and_a_large_one_gets_its_own() {
        let mut builder = RecordBuilder::default();
        let a = builder.copy(b"hello");
        let b = builder.copy(b"world");
        assert_eq!((&a[..], &b[..]), (&b"hello"[..], &b"world"[..]));
        // Adjacent in one allocation.
        assert_eq!(a.as_ptr().wrapping_add(5), b.as_ptr());
        let big = vec![7u8; CHUNK + 1];
        let c = builder.copy(&big);
        assert_eq!(c.len(), CHUNK + 1);
        assert!(c.iter().all(|x| *x == 7));
    }
}
