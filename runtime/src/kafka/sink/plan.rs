//! The exactly-once sink's decision for one partition, from what its tail holds: write the
//! batch's records whole, write only those a dead attempt did not, or write nothing — a pure
//! function ([`plan_partition`]), tested without a broker.
//!
//! Invariant: a record is written only if the tail proves it is not there. The tail read is
//! the last `n + 1` records of the partition (`n` = the records this batch sends there), which
//! is enough: one writer writes the batches in order, so the records of the batch being run
//! again are the partition's last ones, at most `n` of them, and the record before them is an
//! older batch's (or the log's start). Anything that breaks the premises — a record without
//! the sink's stamp or with another writer's, another partition count, more records of the
//! batch than it has, a record that differs from the one with its index — is an error naming
//! the offset, never a guess.

use super::error::KafkaSinkError;
use super::format::{KafkaRecordOut, Stamp};

/// A record read back from a partition's tail.
#[derive(Clone, Debug)]
pub(crate) struct TailRecord {
    /// Its offset.
    pub(crate) offset: i64,
    /// Its stamp; `Err` if its `weir.*` headers are damaged; `None` if it has none.
    pub(crate) stamp: Result<Option<Stamp>, String>,
    /// Its key.
    pub(crate) key: Option<Vec<u8>>,
    /// Its value.
    pub(crate) value: Option<Vec<u8>>,
}

/// What to write to one partition for one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PartitionPlan {
    /// Every record (the tail holds none of this batch).
    All,
    /// Only the records with these indices (a dead attempt wrote the others); may be empty.
    Missing(Vec<usize>),
    /// Nothing: the partition already holds a later batch, so this one was written before
    /// (this is a replay of a batch whose output completed).
    Newer(u64),
}

/// Who is asking: the partition, the batch and what the sink would write there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlanInput<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) partitions: i32,
    pub(crate) writer: &'a str,
    pub(crate) batch_time_ms: u64,
    /// The batch's records for this partition, in the order their indices are given.
    pub(crate) records: &'a [KafkaRecordOut],
}

/// The plan for one partition whose tail (in offset order; the last `records.len() + 1`
/// records, or all of them if the log is shorter) is `tail`.
///
/// # Errors
///
/// See the module docs: another writer ([`KafkaSinkError::Foreign`]), a changed partition
/// count, or a batch whose records differ from its dead attempt's.
pub(crate) fn plan_partition(
    input: PlanInput<'_>,
    tail: &[TailRecord],
) -> Result<PartitionPlan, KafkaSinkError> {
    let PlanInput {
        topic,
        partition,
        partitions,
        writer,
        batch_time_ms,
        records,
    } = input;
    let foreign = |offset: i64, reason: String| KafkaSinkError::Foreign {
        topic: topic.to_owned(),
        partition,
        offset,
        reason,
    };
    let differs = |offset: i64, reason: String| KafkaSinkError::Nondeterministic {
        topic: topic.to_owned(),
        partition,
        batch_time_ms,
        offset,
        reason,
    };
    let mut stamps: Vec<(i64, &Stamp)> = Vec::with_capacity(tail.len());
    for record in tail {
        let stamp = match &record.stamp {
            Ok(Some(stamp)) => stamp,
            Ok(None) => {
                return Err(foreign(
                    record.offset,
                    "a record without weir's headers (written by another producer)".into(),
                ));
            }
            Err(reason) => {
                return Err(foreign(
                    record.offset,
                    format!("a record with damaged weir headers: {reason}"),
                ));
            }
        };
        if stamp.writer != writer {
            return Err(foreign(
                record.offset,
                format!(
                    "a record of weir writer {:?}, not of this sink ({writer:?})",
                    stamp.writer
                ),
            ));
        }
        if stamp.partitions != partitions {
            return Err(KafkaSinkError::PartitionCountChanged {
                topic: topic.to_owned(),
                partition,
                offset: record.offset,
                written_with: stamp.partitions,
                now: partitions,
            });
        }
        if let Some((prev_offset, prev)) = stamps.last().copied()
            && prev.batch_time_ms > stamp.batch_time_ms
        {
            return Err(foreign(
                record.offset,
                format!(
                    "batch {} written after batch {} (offset {prev_offset}): batches out of order",
                    stamp.batch_time_ms, prev.batch_time_ms
                ),
            ));
        }
        stamps.push((record.offset, stamp));
    }
    let Some((_, last)) = stamps.last() else {
        return Ok(PartitionPlan::All);
    };
    if last.batch_time_ms > batch_time_ms {
        return Ok(PartitionPlan::Newer(last.batch_time_ms));
    }
    if last.batch_time_ms < batch_time_ms {
        return Ok(PartitionPlan::All);
    }
    let n = records.len();
    let mut present = vec![false; n];
    for (record, (offset, stamp)) in tail.iter().zip(&stamps) {
        if stamp.batch_time_ms != batch_time_ms {
            continue;
        }
        let offset = *offset;
        if stamp.count != n as u64 {
            return Err(differs(
                offset,
                format!(
                    "its dead attempt wrote {} records to this partition, this run has {n}",
                    stamp.count
                ),
            ));
        }
        let index = usize::try_from(stamp.index)
            .ok()
            .filter(|i| *i < n)
            .ok_or_else(|| foreign(offset, format!("index {} of {n}", stamp.index)))?;
        if present[index] {
            return Err(foreign(
                offset,
                format!("a second record with index {index} of batch {batch_time_ms}"),
            ));
        }
        let ours = &records[index];
        if ours.key != record.key || ours.value != record.value {
            return Err(differs(
                offset,
                format!("the record with index {index} has another key or value"),
            ));
        }
        present[index] = true;
    }
    let missing: Vec<usize> = (0..n).filter(|i| !present[*i]).collect();
    Ok(PartitionPlan::Missing(missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITER: &str = "w";

    fn stamped(offset: i64, batch: u64, index: u64, count: u64, value: &str) -> TailRecord {
        TailRecord {
            offset,
            stamp: Ok(Some(Stamp {
                batch_time_ms: batch,
                index,
                count,
                partitions: 2,
                writer: WRITER.into(),
            })),
            key: None,
            value: Some(value.as_bytes().to_vec()),
        }
    }

    fn records(values: &[&str]) -> Vec<KafkaRecordOut> {
        values.iter().map(|v| KafkaRecordOut::value(*v)).collect()
    }

    fn plan(
        batch: u64,
        ours: &[KafkaRecordOut],
        tail: &[TailRecord],
    ) -> Result<PartitionPlan, KafkaSinkError> {
        plan_partition(
            PlanInput {
                topic: "out",
                partition: 1,
                partitions: 2,
                writer: WRITER,
                batch_time_ms: batch,
                records: ours,
            },
            tail,
        )
    }

    #[test]
    fn an_empty_tail_or_an_older_batch_means_write_everything() {
        let ours = records(&["a", "b"]);
        assert_eq!(plan(2000, &ours, &[]).unwrap(), PartitionPlan::All);
        let tail = [stamped(7, 1000, 1, 2, "y")];
        assert_eq!(plan(2000, &ours, &tail).unwrap(), PartitionPlan::All);
    }

    #[test]
    fn what_a_dead_attempt_wrote_is_not_written_again_even_with_gaps() {
        let ours = records(&["a", "b", "c"]);
        let tail = [
            stamped(7, 1000, 0, 1, "z"),
            stamped(8, 2000, 2, 3, "c"),
            stamped(9, 2000, 0, 3, "a"),
        ];
        assert_eq!(
            plan(2000, &ours, &tail).unwrap(),
            PartitionPlan::Missing(vec![1])
        );
        let all = [
            stamped(8, 2000, 2, 3, "c"),
            stamped(9, 2000, 0, 3, "a"),
            stamped(10, 2000, 1, 3, "b"),
        ];
        assert_eq!(
            plan(2000, &ours, &all).unwrap(),
            PartitionPlan::Missing(vec![])
        );
    }

    #[test]
    fn a_partition_holding_a_later_batch_is_skipped() {
        let tail = [stamped(9, 3000, 0, 1, "q")];
        assert_eq!(
            plan(2000, &records(&["a"]), &tail).unwrap(),
            PartitionPlan::Newer(3000)
        );
    }

    #[test]
    fn another_writer_is_refused_with_its_offset() {
        let mut foreign = stamped(9, 1000, 0, 1, "x");
        foreign.stamp = Ok(None);
        let err = plan(2000, &records(&["a"]), &[foreign]).unwrap_err();
        assert!(
            matches!(err, KafkaSinkError::Foreign { offset: 9, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("out/1 offset 9"), "{err}");
        let mut other = stamped(4, 1000, 0, 1, "x");
        if let Ok(Some(s)) = &mut other.stamp {
            s.writer = "someone".into();
        }
        let err = plan(2000, &records(&["a"]), &[other]).unwrap_err();
        assert!(err.to_string().contains("\"someone\""), "{err}");
        let mut damaged = stamped(5, 1000, 0, 1, "x");
        damaged.stamp = Err("header weir.count is missing".into());
        let err = plan(2000, &records(&["a"]), &[damaged]).unwrap_err();
        assert!(err.to_string().contains("weir.count is missing"), "{err}");
    }

    #[test]
    fn a_changed_partition_count_is_refused() {
        let mut old = stamped(3, 1000, 0, 1, "x");
        if let Ok(Some(s)) = &mut old.stamp {
            s.partitions = 1;
        }
        let err = plan(2000, &records(&["a"]), &[old]).unwrap_err();
        assert!(
            matches!(
                err,
                KafkaSinkError::PartitionCountChanged {
                    written_with: 1,
                    now: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_rerun_that_differs_from_its_dead_attempt_is_refused() {
        let ours = records(&["a", "b"]);
        let wrong_value = [stamped(9, 2000, 1, 2, "B")];
        let err = plan(2000, &ours, &wrong_value).unwrap_err();
        assert!(
            matches!(err, KafkaSinkError::Nondeterministic { offset: 9, .. }),
            "{err}"
        );
        let wrong_count = [stamped(9, 2000, 0, 3, "a")];
        let err = plan(2000, &ours, &wrong_count).unwrap_err();
        assert!(err.to_string().contains("wrote 3 records"), "{err}");
        let twice = [stamped(8, 2000, 0, 2, "a"), stamped(9, 2000, 0, 2, "a")];
        let err = plan(2000, &ours, &twice).unwrap_err();
        assert!(
            err.to_string().contains("a second record with index 0"),
            "{err}"
        );
        let disorder = [stamped(8, 3000, 0, 1, "a"), stamped(9, 2000, 0, 2, "a")];
        let err = plan(2000, &ours, &disorder).unwrap_err();
        assert!(err.to_string().contains("out of order"), "{err}");
    }
}
