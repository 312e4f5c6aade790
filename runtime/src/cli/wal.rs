//! `weir wal inspect`: segments, records, torn tails, and what recovery would do — read-only.
//!
//! It says that a cut loses no acknowledged record only when the inspection proved that
//! nothing valid follows the damage; otherwise it names the records at risk.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use weir_actors::Storage;
use weir_actors::wal::{AfterDamage, RecoveryAction, WalInspection, inspect as inspect_log};

use super::format::{bytes, clock};

/// The logs under `dir`: `dir` itself if it holds segments, else its sub-directories that do.
fn logs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let has_segments = |d: &Path| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        })
    };
    if has_segments(dir) {
        return Ok(vec![dir.to_path_buf()]);
    }
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("could not read the directory `{}`", dir.display()))?;
    let mut logs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && has_segments(p))
        .collect();
    logs.sort();
    if logs.is_empty() {
        bail!(
            "there is no write-ahead log in `{}` or its sub-directories",
            dir.display()
        );
    }
    Ok(logs)
}

/// Prints what each log under `dir` holds.
///
/// # Errors
///
/// No log found, or reading failed.
pub(super) async fn inspect(dir: &Path) -> anyhow::Result<()> {
    for log in logs(dir)? {
        let found = inspect_log(&Storage::local(&log))
            .await
            .with_context(|| format!("could not inspect the WAL in `{}`", log.display()))?;
        print!("{}", render(&log, &found));
    }
    Ok(())
}

/// What `weir wal inspect` prints about the log in `dir`, one line per item.
fn render(dir: &Path, found: &WalInspection) -> String {
    let mut out = String::new();
    let mut println = |line: String| {
        out.push_str(&line);
        out.push('\n');
    };
    println(format!(
        "{}: {} segments, {} records",
        dir.display(),
        found.segments.len(),
        found.records
    ));
    for s in &found.segments {
        let times = s
            .time_range_ms
            .map(|(a, b)| format!("{} .. {}", clock(a), clock(b)))
            .unwrap_or_else(|| "-".to_owned());
        let damage = match &s.damage {
            Some((offset, reason)) => {
                let behind = s
                    .after_damage
                    .as_ref()
                    .and_then(behind_damage)
                    .map(|b| format!("; {b}"))
                    .unwrap_or_default();
                format!("  DAMAGED at {offset}: {reason}{behind}")
            }
            None => String::new(),
        };
        println(format!(
            "  segment {:>6}  {:>10}  {:>7} records  {times}{damage}",
            s.id,
            bytes(s.bytes),
            s.records
        ));
    }
    let after_damage = |segment: u64| {
        found
            .segments
            .iter()
            .find(|s| s.id == segment)
            .and_then(|s| s.after_damage.as_ref())
            .and_then(behind_damage)
    };
    let verdict = match &found.recovery {
        RecoveryAction::Nothing => "recovery: nothing to do, every byte is valid".to_owned(),
        RecoveryAction::CutTornTail {
            segment,
            offset,
            discarded_bytes,
            reason,
        } => match after_damage(*segment) {
            None => format!(
                "recovery: would cut the torn tail of segment {segment} at offset {offset}, discarding {discarded_bytes} bytes ({reason}); nothing valid follows the damage, so no acknowledged record is lost"
            ),
            Some(behind) => format!(
                "recovery: would cut segment {segment} at offset {offset}, discarding {discarded_bytes} bytes ({reason}). AT RISK: {behind}; the cut loses them, and they may have been acknowledged (this is not only a write cut short by a crash). Copy the segment before the log is opened again, or open it in strict mode, which refuses instead of cutting"
            ),
        },
        RecoveryAction::RemoveUnfinishedSegment { segment, reason } => format!(
            "recovery: would remove segment {segment}, whose creation was interrupted ({reason})"
        ),
        RecoveryAction::RefuseCorrupt {
            segment,
            offset,
            reason,
        } => {
            let behind = after_damage(*segment)
                .map(|b| format!("; {b}, unreadable until it is repaired"))
                .unwrap_or_default();
            format!(
                "recovery: would refuse to open the log: segment {segment} is corrupt at offset {offset} ({reason}){behind}"
            )
        }
        other => format!("recovery: {other:?}"),
    };
    println(format!("  {verdict}"));
    out
}

/// What lies behind a segment's damage, if anything may: `None` when the search proved that
/// nothing valid follows it.
fn behind_damage(after: &AfterDamage) -> Option<String> {
    if after.nothing_valid() {
        return None;
    }
    let mut parts = Vec::new();
    if after.records > 0 {
        let (records, follow) = if after.records == 1 {
            ("record", "follows")
        } else {
            ("records", "follow")
        };
        let first = after
            .first_offset
            .map(|at| format!(" (the first at offset {at})"))
            .unwrap_or_default();
        parts.push(format!(
            "{} valid {records} {follow} the damage{first}",
            after.records
        ));
    }
    if after.unsearched_bytes > 0 {
        parts.push(format!(
            "{} bytes behind the damage could not be searched for records",
            after.unsearched_bytes
        ));
    }
    Some(parts.join(" and "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use bytes::Bytes;
    use weir_actors::wal::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
    use weir_actors::wal::{Wal, WalConfig};

    use super::*;

    /// A log of one segment holding three records of 10 bytes; returns the segment's path.
    async fn three_records(dir: &Path) -> PathBuf {
        let (wal, _) = Wal::open(Storage::local(dir), WalConfig::default())
            .await
            .unwrap();
        for i in 0..3u8 {
            wal.append(Bytes::from(vec![i; 10])).await.unwrap();
        }
        wal.close().await.unwrap();
        let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        assert_eq!(segments.len(), 1);
        segments.remove(0)
    }

    /// Issue 16, item 11: damage in the newest segment followed by valid records was reported
    /// as a torn tail whose cut loses "no acknowledged record".
    #[tokio::test]
    async fn damage_followed_by_valid_records_is_never_reported_as_losing_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let segment = three_records(dir.path()).await;
        let clean = std::fs::read(&segment).unwrap();
        // A flipped byte in the first record's payload; then one in its length, after which
        // only a search byte by byte finds the records behind it.
        for at in [
            SEGMENT_HEADER_LEN + FRAME_HEADER_LEN,
            SEGMENT_HEADER_LEN + 3,
        ] {
            let mut bytes = clean.clone();
            bytes[at] ^= 0x40;
            std::fs::write(&segment, &bytes).unwrap();
            let found = inspect_log(&Storage::local(dir.path())).await.unwrap();
            let text = render(dir.path(), &found);
            assert!(!text.contains("no acknowledged record is lost"), "{text}");
            assert!(text.contains("2 valid records follow the damage"), "{text}");
        }
        // A torn tail with nothing valid after it still says so.
        let mut bytes = clean.clone();
        bytes.extend_from_slice(&[0x5a; 9]);
        std::fs::write(&segment, &bytes).unwrap();
        let found = inspect_log(&Storage::local(dir.path())).await.unwrap();
        let text = render(dir.path(), &found);
        assert!(text.contains("no acknowledged record is lost"), "{text}");
    }
}
