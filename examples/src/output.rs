//! Reading back what `DStream::save_as_text_files` wrote: the `batch-<batch_time_ms>/`
//! directories of `part-NNNNN` files (and their commit marker, skipped) under an output
//! directory, with the hidden temp directories of commits in progress (or left by a crash) and
//! anything else listed apart.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use weir::sinks::batch_dir::MARKER_FILE;

/// The prefix of a batch's directory name (`save_as_text_files(output_dir.join("batch"))`).
pub const BATCH_PREFIX: &str = "batch-";

/// What an output directory holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    /// The committed batch times, ascending.
    pub batches: Vec<u64>,
    /// Every line of every part file, by batch time.
    pub lines: BTreeMap<u64, Vec<String>>,
    /// Entries that are neither a batch directory nor a temp directory.
    pub strays: Vec<String>,
    /// Hidden entries: temp directories of a commit in progress, or left by a crash.
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
/// named `part-*` (other than the commit marker).
pub fn read_output(output_dir: &Path) -> io::Result<Output> {
    let mut output = Output::default();
    if !output_dir.exists() {
        return Ok(output);
    }
    for entry in fs::read_dir(output_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
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
            if part_name == MARKER_FILE {
                continue;
            }
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
    use super::*;

    #[test]
    fn batches_are_read_and_summed_and_the_rest_listed_apart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let batch = dir.path().join("batch-1000");
        fs::create_dir(&batch).expect("mkdir");
        fs::write(batch.join("part-00000"), "a\t2\nb\t1\n").expect("write");
        fs::write(batch.join("part-00001"), "c\t5\n").expect("write");
        fs::write(batch.join(MARKER_FILE), b"\x89WEIRCMT").expect("write");
        let later = dir.path().join("batch-2000");
        fs::create_dir(&later).expect("mkdir");
        fs::write(later.join("part-00000"), "a\t3\n").expect("write");
        fs::create_dir(dir.path().join(".batch-3000.tmp-1-2")).expect("mkdir");
        fs::write(dir.path().join("notes"), "").expect("write");
        let output = read_output(dir.path()).expect("read");
        assert_eq!(output.batches, vec![1000, 2000]);
        assert_eq!(output.temps, vec![".batch-3000.tmp-1-2".to_owned()]);
        assert_eq!(output.strays, vec!["notes".to_owned()]);
        let sums = output.summed_counts().expect("sums");
        assert_eq!(sums.get("a"), Some(&5));
        assert_eq!(sums.get("c"), Some(&5));
        assert_eq!(sums.len(), 3);

        fs::write(later.join("part-00001"), "no tab here\n").expect("write");
        let bad = read_output(dir.path()).expect("read");
        assert!(
            bad.summed_counts().is_err(),
            "a line without a count is an error"
        );
    }
}
