//! How events and times read as text.

use weir_actors::Event;

/// `HH:MM:SS.mmm` (UTC) of a time in ms since the Unix epoch.
pub(super) fn clock(time_ms: u64) -> String {
    let ms = time_ms % 1000;
    let s = time_ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

/// A byte count for people: `512 B`, `3.2 KiB`, `7.0 MiB`.
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How bad an event is, for colouring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Severity {
    /// Routine.
    Info,
    /// Something healed (a restart, a skipped checkpoint, a cut tail, a lag).
    Warning,
    /// A failure.
    Error,
}

/// The severity of `event`.
pub(super) fn severity(event: &Event) -> Severity {
    match event {
        Event::ActorFailed { .. }
        | Event::ActorGaveUp { .. }
        | Event::ReceiverError { .. }
        | Event::BatchFailed { .. } => Severity::Error,
        Event::ActorRestarted { .. }
        | Event::CheckpointSkipped { .. }
        | Event::CheckpointFailed { .. }
        | Event::WalTornTailCut { .. }
        | Event::PlanningFailed { .. }
        | Event::Lagged { .. } => Severity::Warning,
        _ => Severity::Info,
    }
}

/// One line describing `event`, e.g. `receiver-0 failed: killed`.
pub(super) fn describe(event: &Event) -> String {
    match event {
        Event::ActorStarted { actor } => format!("{actor} started"),
        Event::ActorFailed { actor, reason } => format!("{actor} failed: {reason}"),
        Event::ActorRestarted {
            actor,
            attempt,
            delay_ms,
        } => format!("{actor} restarts in {delay_ms} ms (restart {attempt} in the window)"),
        Event::ActorGaveUp {
            actor,
            child,
            reason,
        } => format!("{actor} gave up on {child}: {reason}"),
        Event::ReceiverStarted { actor, stream } => format!("{actor} receiving stream {stream}"),
        Event::ReceiverStopped {
            actor,
            stream,
            reason,
        } => format!("{actor} stopped receiving stream {stream}: {reason}"),
        Event::ReceiverError {
            actor,
            stream,
            error,
        } => format!("{actor} (stream {stream}) error: {error}"),
        Event::BlockStored {
            actor,
            records,
            bytes: b,
            ..
        } => format!(
            "{actor} stored a block of {records} records ({})",
            bytes(*b)
        ),
        Event::BatchGenerated {
            batch_time_ms,
            blocks,
            records,
        } => format!(
            "batch {} generated: {blocks} blocks, {records} records",
            clock(*batch_time_ms)
        ),
        Event::BatchStarted {
            batch_time_ms,
            scheduling_delay_ms,
        } => format!(
            "batch {} started after {scheduling_delay_ms} ms",
            clock(*batch_time_ms)
        ),
        Event::BatchCompleted {
            batch_time_ms,
            scheduling_delay_ms,
            processing_ms,
            records,
        } => format!(
            "batch {} completed: {records} records, delay {scheduling_delay_ms} ms, processing {processing_ms} ms",
            clock(*batch_time_ms)
        ),
        Event::BatchInputs {
            batch_time_ms,
            records,
            sources,
        } => {
            let each: Vec<String> = sources.iter().map(|(s, n)| format!("{s} {n}")).collect();
            format!(
                "batch {} read {records} records ({})",
                clock(*batch_time_ms),
                each.join(", ")
            )
        }
        Event::BatchFailed {
            batch_time_ms,
            reason,
        } => format!("batch {} failed: {reason}", clock(*batch_time_ms)),
        Event::OutputStarted {
            batch_time_ms,
            output,
        } => format!("output {output} of batch {} started", clock(*batch_time_ms)),
        Event::OutputCompleted {
            batch_time_ms,
            output,
            duration_ms,
        } => format!(
            "output {output} of batch {} committed in {duration_ms} ms",
            clock(*batch_time_ms)
        ),
        Event::WalSegmentRolled {
            log,
            sealed,
            segment,
            reason,
        } => format!("WAL {log}: segment {sealed} sealed ({reason}), now {segment}"),
        Event::WalSegmentsCleaned { log, segments, .. } => {
            format!("WAL {log}: {} segments cleaned", segments.len())
        }
        Event::WalTornTailCut {
            log,
            segment,
            offset,
            discarded_bytes,
            reason,
        } => format!(
            "WAL {log}: torn tail of segment {segment} cut at {offset} ({discarded_bytes} bytes: {reason})"
        ),
        Event::CheckpointWritten {
            id,
            bytes: b,
            duration_ms,
            ..
        } => match duration_ms {
            Some(ms) => format!("checkpoint {id} written ({}) in {ms} ms", bytes(*b)),
            None => format!("checkpoint {id} written ({})", bytes(*b)),
        },
        Event::CheckpointSkipped { id, reason, .. } => {
            format!("checkpoint {id} skipped: {reason}")
        }
        Event::CheckpointRestored { id, .. } => format!("checkpoint {id} restored"),
        Event::CheckpointFailed { reason, .. } => format!("a checkpoint write failed: {reason}"),
        Event::Lagged { missed } => format!("{missed} events missed (this reader was too slow)"),
        Event::PlanningFailed {
            batch_time_ms,
            source,
            cause,
            attempt,
            retry_in_ms,
        } => {
            let next = match retry_in_ms {
                Some(ms) => format!("retried in {ms} ms"),
                None => "not retried: stopping".to_owned(),
            };
            format!(
                "planning batch {} failed (attempt {attempt}): {source}: {cause}; {next}",
                clock(*batch_time_ms)
            )
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batchs_inputs_and_failure_read_as_one_line_each() {
        let inputs = Event::BatchInputs {
            batch_time_ms: 0,
            records: 12,
            sources: [("files".to_owned(), 7), ("socket".to_owned(), 5)].into(),
        };
        let line = describe(&inputs);
        assert!(
            line.ends_with("read 12 records (files 7, socket 5)"),
            "{line}"
        );
        let failed = Event::BatchFailed {
            batch_time_ms: 0,
            reason: "job out-0 failed 4 times".to_owned(),
        };
        assert!(describe(&failed).ends_with("failed: job out-0 failed 4 times"));
        assert_eq!(severity(&failed), Severity::Error);
    }

    #[test]
    fn a_planning_failure_names_the_source_the_cause_and_the_retry() {
        let failed = Event::PlanningFailed {
            batch_time_ms: 0,
            source: "orders".to_owned(),
            cause: "no answer within 10000 ms (the planning timeout)".to_owned(),
            attempt: 2,
            retry_in_ms: Some(200),
        };
        assert_eq!(
            describe(&failed),
            "planning batch 00:00:00.000 failed (attempt 2): orders: no answer within 10000 ms \
             (the planning timeout); retried in 200 ms"
        );
        assert_eq!(severity(&failed), Severity::Warning);
    }
}
