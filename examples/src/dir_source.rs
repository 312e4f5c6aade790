//! A directory of text files as a replayable, offset-based source.
//!
//! Offsets are positions in a durable *manifest*: the list of file names in the order they
//! were first seen. A new file gets the next offset, and the manifest line naming it is
//! fsynced before the offset is handed out, so every offset range in a checkpoint names the
//! same files after any crash, whatever order files arrive in or are named. A record is one
//! whole file.
//!
//! Producers must make a file visible whole (write elsewhere or under a hidden name, then
//! rename into the directory). Names starting with `.` or `_` are ignored (Spark's rule for
//! hidden and temporary files), and files must not change or disappear once visible.
//!
//! This is a stand-in for `StreamingContext::text_file_stream`, which is being added to the
//! runtime; [`DirSource::open`] and [`text_file_stream`] are the calls the examples make.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use weir::dstream::{OffsetSource, StartingOffsets};
use weir::{DStream, StreamingContext, UserError};

/// The lines of the text files that appear in the source's directory, each file read
/// exactly once, at most `max_files_per_batch` new files per batch. The stream's uid (under
/// which its positions are checkpointed) is `uid`.
pub fn text_file_stream(
    ctx: &StreamingContext,
    source: Arc<DirSource>,
    max_files_per_batch: u64,
    uid: &str,
) -> DStream<String> {
    ctx.direct_stream(source, StartingOffsets::Earliest, Some(max_files_per_batch))
        .uid(uid)
        .flat_map(|file: &Bytes| {
            String::from_utf8_lossy(file)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
}

/// A directory of files read by manifest offset; see the [module docs](self).
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    manifest_path: PathBuf,
    manifest: Mutex<Manifest>,
}

#[derive(Debug)]
struct Manifest {
    names: Vec<String>,
    known: HashSet<String>,
    file: File,
}

impl DirSource {
    /// Opens the source over `dir` (created if missing) with its manifest at `manifest`
    /// (created if missing; a torn last line left by a crash is cut off).
    ///
    /// # Errors
    ///
    /// Creating the directory, or reading or repairing the manifest, failed.
    pub fn open(dir: &Path, manifest: &Path) -> io::Result<Arc<Self>> {
        fs::create_dir_all(dir)?;
        if let Some(parent) = manifest.parent() {
            fs::create_dir_all(parent)?;
        }
        let existed = manifest.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(manifest)?;
        let bytes = fs::read(manifest)?;
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            // A line whose append did not finish: its offset was never handed out.
            file.set_len(whole as u64)?;
            file.sync_all()?;
        }
        let text = std::str::from_utf8(&bytes[..whole]).map_err(|e| {
            io::Error::other(format!(
                "the manifest {} is not UTF-8: {e}",
                manifest.display()
            ))
        })?;
        let names: Vec<String> = text.lines().map(str::to_owned).collect();
        let known = names.iter().cloned().collect();
        if !existed {
            file.sync_all()?;
            if let Some(parent) = manifest.parent() {
                File::open(parent)?.sync_all()?;
            }
        }
        file.flush()?;
        Ok(Arc::new(DirSource {
            dir: dir.to_owned(),
            manifest_path: manifest.to_owned(),
            manifest: Mutex::new(Manifest { names, known, file }),
        }))
    }

    /// How many files the manifest lists.
    pub fn files(&self) -> usize {
        self.lock().names.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Manifest> {
        self.manifest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lists the directory and appends the files not seen before to the manifest (durably).
    fn discover(&self) -> io::Result<usize> {
        let mut manifest = self.lock();
        let mut new = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8: cannot be listed in the manifest
            };
            if name.starts_with('.')
                || name.starts_with('_')
                || name.contains('\n')
                || manifest.known.contains(&name)
                || !entry.file_type()?.is_file()
            {
                continue;
            }
            new.push(name);
        }
        if !new.is_empty() {
            new.sort();
            let mut lines = String::new();
            for name in &new {
                lines.push_str(name);
                lines.push('\n');
            }
            manifest.file.write_all(lines.as_bytes())?;
            manifest.file.sync_data()?;
            for name in new {
                manifest.known.insert(name.clone());
                manifest.names.push(name);
            }
        }
        Ok(manifest.names.len())
    }
}

impl OffsetSource for DirSource {
    fn name(&self) -> String {
        format!("files:{}", self.dir.display())
    }

    fn partitions(&self) -> usize {
        1
    }

    fn earliest(&self) -> Result<Vec<u64>, UserError> {
        Ok(vec![0])
    }

    fn latest(&self) -> Result<Vec<u64>, UserError> {
        let files = self.discover().map_err(|e| {
            format!(
                "listing {} into the manifest {}: {e}",
                self.dir.display(),
                self.manifest_path.display()
            )
        })?;
        Ok(vec![files as u64])
    }

    fn read(&self, partition: u32, range: Range<u64>) -> Result<Vec<Bytes>, UserError> {
        if partition != 0 {
            return Err(format!("a directory source has one partition, not {partition}").into());
        }
        let names: Vec<String> = {
            let manifest = self.lock();
            let (start, end) = (range.start as usize, range.end as usize);
            manifest
                .names
                .get(start..end)
                .ok_or_else(|| {
                    format!(
                        "offsets {start}..{end} are beyond the {} files of the manifest {}",
                        manifest.names.len(),
                        self.manifest_path.display()
                    )
                })?
                .to_vec()
        };
        names
            .iter()
            .map(|name| {
                let path = self.dir.join(name);
                fs::read(&path)
                    .map(Bytes::from)
                    .map_err(|e| format!("reading {}: {e}", path.display()).into())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_arrival_and_survive_a_reopen_with_a_torn_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let input = dir.path().join("in");
        let manifest = dir.path().join("state/manifest");
        let source = DirSource::open(&input, &manifest).expect("open");
        fs::write(input.join("b.txt"), "b").expect("write");
        fs::write(input.join(".tmp-x"), "hidden").expect("write");
        assert_eq!(source.latest().expect("latest"), vec![1]);
        fs::write(input.join("a.txt"), "a").expect("write");
        assert_eq!(source.latest().expect("latest"), vec![2]);
        let read = source.read(0, 0..2).expect("read");
        assert_eq!(read, vec![Bytes::from("b"), Bytes::from("a")]);
        drop(source);

        // A crash in the middle of appending a name leaves a torn line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(&manifest)
            .expect("open manifest");
        f.write_all(b"c.t").expect("append");
        drop(f);
        let source = DirSource::open(&input, &manifest).expect("reopen");
        assert_eq!(source.files(), 2);
        assert_eq!(
            source.read(0, 1..2).expect("read"),
            vec![Bytes::from("a")],
            "offset 1 names the same file after the reopen"
        );
        assert!(
            source.read(0, 1..3).is_err(),
            "offsets past the manifest fail"
        );
        assert_eq!(
            fs::read_to_string(&manifest).expect("read"),
            "b.txt\na.txt\n"
        );
    }
}
