//! One directory per batch, committed atomically: `OUTPUT/batch-<batch_time_ms>/part-NNNNN`,
//! one part file per partition, each line one element.
//!
//! A batch's directory is written under a hidden temp name, every file and the directory
//! fsynced, then renamed into place and the parent fsynced: it appears complete or not at
//! all. A batch that already has its directory (a re-run after a crash, a retried job) is
//! skipped, so the output holds each batch once. Batches without elements write nothing.
//!
//! This is a stand-in for `DStream::save_as_text_files`, which is being added to the runtime
//! with the same layout; [`prepare_output`] and [`save_batches`] are the calls the examples
//! make.
//! [`read_output`] reads such a directory back and checks it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use weir::DStream;
use weir::dstream::Partition;

/// The prefix of a batch's directory name.
pub const BATCH_PREFIX: &str = "batch-";
const TEMP_PREFIX: &str = ".tmp-batch-";

/// Creates `output_dir` and removes the temp directories a crashed run left in it. Call it
/// once before the context starts.
///
/// # Errors
///
/// The output directory cannot be created, listed or cleaned.
pub fn prepare_output(output_dir: &Path) -> io::Result<()> {
    fs::create_dir_all(output_dir)?;
    for entry in fs::read_dir(output_dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// Writes every non-empty batch of `stream` to `output_dir/batch-<batch_time_ms>/`, once
/// (see [`prepare_output`]).
pub fn save_batches(stream: &DStream<String>, output_dir: &Path) {
    let dir = output_dir.to_owned();
    stream.foreach_batch(move |batch| {
        write_batch(&dir, batch.time_ms, &batch.partitions)?;
        Ok(())
    });
}

/// Commits one batch's directory. Returns `false` when there was nothing to write or the
/// batch was committed before.
///
/// # Errors
///
/// Writing, syncing or renaming failed (nothing is visible under the batch's name then).
pub fn write_batch(
    output_dir: &Path,
    time_ms: u64,
    partitions: &[Partition<String>],
) -> io::Result<bool> {
    let target = output_dir.join(format!("{BATCH_PREFIX}{time_ms}"));
    if partitions.iter().all(|p| p.is_empty()) || target.exists() {
        return Ok(false);
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = output_dir.join(format!(
        "{TEMP_PREFIX}{time_ms}-{}-{nanos}",
        std::process::id()
    ));
    fs::create_dir(&temp)?;
    for (i, part) in partitions.iter().enumerate() {
        let mut text = String::new();
        for line in part.iter() {
            text.push_str(line);
            text.push('\n');
        }
        let mut file = File::create(temp.join(format!("part-{i:05}")))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    File::open(&temp)?.sync_all()?;
    if let Err(err) = fs::rename(&temp, &target) {
        let _ = fs::remove_dir_all(&temp);
        if target.exists() {
            return Ok(false); // another attempt of the same batch committed first
        }
        return Err(err);
    }
    File::open(output_dir)?.sync_all()?;
    Ok(true)
}

/// What an output directory holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    /// The committed batch times, ascending.
    pub batches: Vec<u64>,
    /// Every line of every part file, by batch time.
    pub lines: BTreeMap<u64, Vec<String>>,
    /// Entries that are neither a batch directory nor a temp directory.
    pub strays: Vec<String>,
    /// Temp directories (a commit in progress, or left by a crash).
    pub temps: Vec<String>,
}

impl Output {
    /// `word<TAB>count` lines summed over every batch.
    ///
    /// # Errors
    ///
    /// A line is not `word<TAB>count`.
    pub fn summed_counts(&self) -> io::Result<BTreeMap<String, u64>> {
        let mut sums = BTreeMap::new();
        for (time, lines) in &self.lines {
            for line in lines {
                let (word, count) = parse_count(line).ok_or_else(|| {
                    io::Error::other(format!(
                        "batch {time}: the line {line:?} is not word<TAB>count"
                    ))
                })?;
                *sums.entry(word.to_owned()).or_insert(0) += count;
            }
        }
        Ok(sums)
    }
}

/// Splits a `word<TAB>count` line.
pub fn parse_count(line: &str) -> Option<(&str, u64)> {
    let (word, count) = line.split_once('\t')?;
    Some((word, count.parse().ok()?))
}

/// Reads an output directory: every batch directory's part files, in part order.
///
/// # Errors
///
/// Listing or reading failed, or a batch directory has no part file or a file that is not
/// named `part-*`.
pub fn read_output(output_dir: &Path) -> io::Result<Output> {
    let mut output = Output::default();
    if !output_dir.exists() {
        return Ok(output);
    }
    for entry in fs::read_dir(output_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) {
            output.temps.push(name);
            continue;
        }
        let Some(time) = name
            .strip_prefix(BATCH_PREFIX)
            .and_then(|t| t.parse::<u64>().ok())
        else {
            output.strays.push(name);
            continue;
        };
        let mut parts: Vec<PathBuf> = Vec::new();
        for part in fs::read_dir(entry.path())? {
            let part = part?;
            let part_name = part.file_name().to_string_lossy().into_owned();
            if !part_name.starts_with("part-") {
                return Err(io::Error::other(format!(
                    "{} holds {part_name:?}, which is not a part file",
                    entry.path().display()
                )));
            }
            parts.push(part.path());
        }
        if parts.is_empty() {
            return Err(io::Error::other(format!(
                "{} holds no part file",
                entry.path().display()
            )));
        }
        parts.sort();
        let mut lines = Vec::new();
        for part in parts {
            lines.extend(fs::read_to_string(part)?.lines().map(str::to_owned));
        }
        output.batches.push(time);
        output.lines.insert(time, lines);
    }
    output.batches.sort_unstable();
    output.strays.sort();
    output.temps.sort();
    Ok(output)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_batch_is_committed_once_and_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let parts = vec![
            Arc::new(vec!["a\t2".to_owned(), "b\t1".to_owned()]),
            Arc::new(vec!["c\t5".to_owned()]),
        ];
        assert!(write_batch(dir.path(), 1000, &parts).expect("write"));
        let again = vec![Arc::new(vec!["a\t99".to_owned()])];
        assert!(
            !write_batch(dir.path(), 1000, &again).expect("rewrite"),
            "a committed batch is not written again"
        );
        assert!(!write_batch(dir.path(), 2000, &[Arc::new(Vec::new())]).expect("empty"));
        let output = read_output(dir.path()).expect("read");
        assert_eq!(output.batches, vec![1000]);
        assert!(output.temps.is_empty() && output.strays.is_empty());
        let sums = output.summed_counts().expect("sums");
        assert_eq!(sums.get("a"), Some(&2));
        assert_eq!(sums.get("c"), Some(&5));
        assert_eq!(sums.len(), 3);
    }
}
