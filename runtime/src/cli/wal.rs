//! `weir wal inspect`: segments, records, torn tails, and what recovery would do — read-only.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use weir_actors::Storage;
use weir_actors::wal::{RecoveryAction, WalInspection, inspect as inspect_log};

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
        print(&log, &found);
    }
    Ok(())
}

fn print(dir: &Path, found: &WalInspection) {
    println!(
        "{}: {} segments, {} records",
        dir.display(),
        found.segments.len(),
        found.records
    );
    for s in &found.segments {
        let times = s
            .time_range_ms
            .map(|(a, b)| format!("{} .. {}", clock(a), clock(b)))
            .unwrap_or_else(|| "-".to_owned());
        let damage = match &s.damage {
            Some((offset, reason)) => format!("  DAMAGED at {offset}: {reason}"),
            None => String::new(),
        };
        println!(
            "  segment {:>6}  {:>10}  {:>7} records  {times}{damage}",
            s.id,
            bytes(s.bytes),
            s.records
        );
    }
    let verdict = match &found.recovery {
        RecoveryAction::Nothing => "recovery: nothing to do, every byte is valid".to_owned(),
        RecoveryAction::CutTornTail {
            segment,
            offset,
            discarded_bytes,
            reason,
        } => format!(
            "recovery: would cut the torn tail of segment {segment} at offset {offset}, discarding {discarded_bytes} bytes ({reason}); no acknowledged record is lost"
        ),
        RecoveryAction::RemoveUnfinishedSegment { segment, reason } => format!(
            "recovery: would remove segment {segment}, whose creation was interrupted ({reason})"
        ),
        RecoveryAction::RefuseCorrupt {
            segment,
            offset,
            reason,
        } => format!(
            "recovery: would refuse to open the log: segment {segment} is corrupt at offset {offset} ({reason})"
        ),
        other => format!("recovery: {other:?}"),
    };
    println!("  {verdict}");
}
