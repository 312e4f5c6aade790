//! What the Kafka sink puts in every record, and where it sends it: the record type
//! ([`KafkaRecordOut`]), the stamp the sink adds to each record's headers ([`Stamp`]: batch
//! time, index and count within the batch's share of the partition, the topic's partition count
//! and the writer's id), and the record → partition assignment ([`assign_partition`]).
//!
//! Invariant: both are functions of the record and the topic's partition count only — no
//! clock, no random, no producer state — so a batch run again after a crash sends every record
//! to the same partition with the same stamp as the attempt that died, which is what lets the
//! exactly-once mode recognise what that attempt already wrote. Header values are decimal
//! ASCII, so any consumer (`kcat -f '%h'`, a Java client) can read them.

use std::cmp::Ordering;

/// Header: the batch time (ms since the Unix epoch) of the batch that wrote the record.
pub const HEADER_BATCH: &str = "weir.batch";
/// Header: the record's index (0-based) among the records its batch wrote to its partition.
pub const HEADER_INDEX: &str = "weir.index";
/// Header: how many records its batch wrote to its partition (a consumer that sees all
/// `weir.count` of them has the batch's whole share of the partition).
pub const HEADER_COUNT: &str = "weir.count";
/// Header: the topic's partition count when the record was assigned its partition.
pub const HEADER_PARTITIONS: &str = "weir.partitions";
/// Header: the id of the sink that wrote the record
/// ([`KafkaSinkBuilder::writer_id`](super::writer::KafkaSinkBuilder::writer_id)).
pub const HEADER_WRITER: &str = "weir.writer";

/// One record for the Kafka sink to write: what a stream's element becomes.
///
/// With `partition` unset the sink picks it: a record with a key goes where Kafka's Java
/// client (and librdkafka's `murmur2_random`) sends that key — `murmur2(key) & 0x7fffffff`
/// modulo the partition count —, a record without a key goes by the same hash of its value.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KafkaRecordOut {
    /// The record's key.
    pub key: Option<Vec<u8>>,
    /// The record's value (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers of the application's own, written after the sink's `weir.*` headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The partition, if the application chooses it; it must be below the partition count.
    pub partition: Option<i32>,
}

impl KafkaRecordOut {
    /// A record with this value and no key.
    #[must_use]
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        KafkaRecordOut {
            value: Some(value.into()),
            ..Self::default()
        }
    }

    /// A record with this key and value.
    #[must_use]
    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        KafkaRecordOut {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Self::default()
        }
    }

    /// This record with one more header of the application's.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// This record sent to `partition`.
    #[must_use]
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// The order the sink writes a batch's records of one partition in (unless told to keep
    /// the stream's order): by key, value, then headers — the content, never the position, so
    /// that a re-run numbers the records as the dead attempt did.
    pub(crate) fn content_cmp(&self, other: &Self) -> Ordering {
        (&self.key, &self.value, &self.headers).cmp(&(&other.key, &other.value, &other.headers))
    }
}

/// Kafka's `murmur2` (`org.apache.kafka.common.utils.Utils.murmur2`), the hash its Java
/// client's default partitioner applies to keys.
#[must_use]
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    // Java hashes the length as an `int`; longer inputs wrap the same way.
    #[allow(clippy::cast_possible_truncation, reason = "Java's int arithmetic")]
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    i32::from_le_bytes(h.to_le_bytes())
}

/// The partition `record` goes to in a topic of `partitions` partitions (> 0): its own, or
/// by the hash of its key (else of its value). `Err` with the record's partition if that is
/// out of range.
pub fn assign_partition(record: &KafkaRecordOut, partitions: i32) -> Result<i32, i32> {
    if let Some(p) = record.partition {
        return if (0..partitions).contains(&p) {
            Ok(p)
        } else {
            Err(p)
        };
    }
    let bytes = record
        .key
        .as_deref()
        .or(record.value.as_deref())
        .unwrap_or(&[]);
    Ok((murmur2(bytes) & 0x7fff_ffff) % partitions.max(1))
}

/// The sink's stamp on one record, carried in its `weir.*` headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// [`HEADER_BATCH`].
    pub batch_time_ms: u64,
    /// [`HEADER_INDEX`].
    pub index: u64,
    /// [`HEADER_COUNT`].
    pub count: u64,
    /// [`HEADER_PARTITIONS`].
    pub partitions: i32,
    /// [`HEADER_WRITER`].
    pub writer: String,
}

impl Stamp {
    /// The headers, in the order the sink writes them.
    #[must_use]
    pub fn headers(&self) -> [(&'static str, String); 5] {
        [
            (HEADER_BATCH, self.batch_time_ms.to_string()),
            (HEADER_INDEX, self.index.to_string()),
            (HEADER_COUNT, self.count.to_string()),
            (HEADER_PARTITIONS, self.partitions.to_string()),
            (HEADER_WRITER, self.writer.clone()),
        ]
    }

    /// The stamp in a record's headers: `None` if it has none of the `weir.*` headers (a
    /// record some other producer wrote), `Err` naming the header if it has some but one is
    /// missing or does not parse.
    ///
    /// # Errors
    ///
    /// A `weir.*` header missing or malformed, named.
    pub fn parse<'a>(
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Result<Option<Stamp>, String> {
        let mut found: [Option<&[u8]>; 5] = [None; 5];
        let names = [
            HEADER_BATCH,
            HEADER_INDEX,
            HEADER_COUNT,
            HEADER_PARTITIONS,
            HEADER_WRITER,
        ];
        for (key, value) in headers {
            if let Some(i) = names.iter().position(|n| *n == key) {
                found[i] = Some(value.unwrap_or(&[]));
            }
        }
        if found.iter().all(Option::is_none) {
            return Ok(None);
        }
        let text = |i: usize| -> Result<&str, String> {
            let bytes = found[i].ok_or_else(|| format!("header {} is missing", names[i]))?;
            std::str::from_utf8(bytes).map_err(|_| format!("header {} is not UTF-8", names[i]))
        };
        let number = |i: usize| -> Result<u64, String> {
            let t = text(i)?;
            t.parse()
                .map_err(|_| format!("header {} is {t:?}, not a number", names[i]))
        };
        let batch_time_ms = number(0)?;
        let index = number(1)?;
        let count = number(2)?;
        let partitions = text(3)?;
        let partitions = partitions
            .parse()
            .map_err(|_| format!("header {HEADER_PARTITIONS} is {partitions:?}, not a number"))?;
        Ok(Some(Stamp {
            batch_time_ms,
            index,
            count,
            partitions,
            writer: text(4)?.to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_java_client() {
        // The cases of Kafka's `UtilsTest.testMurmur2`.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, hash) in cases {
            assert_eq!(murmur2(input), hash, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn partitions_come_from_the_record_or_its_key_or_its_value() {
        let keyed = KafkaRecordOut::keyed("foobar", "x");
        // (-790332482 & 0x7fffffff) % 7
        let expected = (-790_332_482_i32 & 0x7fff_ffff) % 7;
        assert_eq!(assign_partition(&keyed, 7), Ok(expected));
        let unkeyed = KafkaRecordOut::value("foobar");
        assert_eq!(assign_partition(&unkeyed, 7), Ok(expected));
        assert_eq!(assign_partition(&keyed.clone().partition(3), 7), Ok(3));
        assert_eq!(assign_partition(&keyed.clone().partition(7), 7), Err(7));
        assert_eq!(assign_partition(&keyed.partition(-1), 7), Err(-1));
    }

    #[test]
    fn a_stamp_round_trips_through_its_headers_and_damage_is_named() {
        let stamp = Stamp {
            batch_time_ms: 1_700_000_000_000,
            index: 3,
            count: 9,
            partitions: 4,
            writer: "job-out".into(),
        };
        let headers = stamp.headers();
        let parsed = Stamp::parse(headers.iter().map(|(k, v)| (*k, Some(v.as_bytes()))));
        assert_eq!(parsed, Ok(Some(stamp)));
        assert_eq!(Stamp::parse([("other", Some(&b"1"[..]))]), Ok(None));
        let err = Stamp::parse(
            headers
                .iter()
                .filter(|(k, _)| *k != HEADER_COUNT)
                .map(|(k, v)| (*k, Some(v.as_bytes()))),
        )
        .unwrap_err();
        assert!(err.contains("weir.count is missing"), "{err}");
        let err = Stamp::parse([(HEADER_BATCH, Some(&b"x1"[..]))]).unwrap_err();
        assert!(err.contains("weir.batch is \"x1\""), "{err}");
    }
}
