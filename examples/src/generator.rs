//! A built-in text generator: seeded, so a run can be repeated, and a file feeder that drops
//! text files into a directory by writing a hidden temp file and renaming it into place — a
//! file source never sees half a file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The vocabulary the generator draws from; earlier words are drawn more often (roughly
/// Zipf-like), so the counts have a clear top.
pub const WORDS: &[&str] = &[
    "the",
    "stream",
    "of",
    "batch",
    "a",
    "weir",
    "record",
    "and",
    "checkpoint",
    "to",
    "state",
    "actor",
    "in",
    "offset",
    "window",
    "is",
    "driver",
    "log",
    "replay",
    "exactly",
    "once",
    "block",
    "receiver",
    "executor",
    "restart",
    "durable",
    "fsync",
    "rename",
    "partition",
    "key",
    "count",
    "word",
    "river",
    "water",
    "flow",
    "gate",
    "level",
    "flood",
    "dam",
    "mill",
];

/// Seeded random text over [`WORDS`].
#[derive(Debug)]
pub struct TextGenerator {
    rng: fastrand::Rng,
}

impl TextGenerator {
    /// A generator whose output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        TextGenerator {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// One word: the minimum of two uniform draws favours the start of the vocabulary.
    pub fn word(&mut self) -> &'static str {
        let a = self.rng.usize(..WORDS.len());
        let b = self.rng.usize(..WORDS.len());
        WORDS[a.min(b)]
    }

    /// `lines` lines of 1 to 12 words, separated by single spaces (and, now and then, a tab
    /// or a double space, which `split_whitespace` must handle).
    pub fn text(&mut self, lines: usize) -> String {
        let mut out = String::new();
        for _ in 0..lines {
            let words = self.rng.usize(1..=12);
            for i in 0..words {
                if i > 0 {
                    out.push_str(match self.rng.u8(..20) {
                        0 => "\t",
                        1 => "  ",
                        _ => " ",
                    });
                }
                out.push_str(self.word());
            }
            out.push('\n');
        }
        out
    }
}

/// Writes `contents` to `dir/name` atomically: a hidden temp file `.tmp-<name>` is written
/// and fsynced, renamed to `name`, and the directory fsynced. A reader of the directory sees
/// the whole file or none of it.
///
/// # Errors
///
/// Creating, writing, syncing or renaming failed.
pub fn drop_file(dir: &Path, name: &str, contents: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{name}"));
    let path = dir.join(name);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(path)
}

/// A background thread dropping a generated text file into a directory at a fixed pace.
#[derive(Debug)]
pub struct FileFeeder {
    stop: Arc<AtomicBool>,
    files: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl FileFeeder {
    /// Starts dropping a file of `lines` generated lines into `dir` every `every`. Names are
    /// `text-<unix ms>-<n>.txt`, so a restarted feeder never reuses one.
    pub fn start(dir: PathBuf, every: Duration, lines: usize, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let files = Arc::new(AtomicU64::new(0));
        let (s, f) = (Arc::clone(&stop), Arc::clone(&files));
        let thread = std::thread::spawn(move || {
            let mut generator = TextGenerator::new(seed);
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                let ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                drop_file(
                    &dir,
                    &format!("text-{ms}-{n:06}.txt"),
                    &generator.text(lines),
                )?;
                n += 1;
                f.store(n, Ordering::SeqCst);
                std::thread::park_timeout(every);
            }
            Ok(())
        });
        FileFeeder {
            stop,
            files,
            thread: Some(thread),
        }
    }

    /// How many files it has dropped so far.
    pub fn files(&self) -> u64 {
        self.files.load(Ordering::SeqCst)
    }

    /// Stops the feeder and returns its error, if it failed.
    ///
    /// # Errors
    ///
    /// Writing a file failed (the feeder had stopped then).
    pub fn stop(mut self) -> io::Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(thread) => {
                thread.thread().unpark();
                thread
                    .join()
                    .map_err(|_| io::Error::other("the file feeder panicked"))?
            }
            None => Ok(()),
        }
    }
}

impl Drop for FileFeeder {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_text() {
        let a = TextGenerator::new(7).text(20);
        let b = TextGenerator::new(7).text(20);
        let c = TextGenerator::new(8).text(20);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.lines().count(), 20);
        assert!(
            a.split_whitespace().all(|w| WORDS.contains(&w)),
            "every word is from the vocabulary"
        );
    }

    #[test]
    fn a_dropped_file_is_whole_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = drop_file(dir.path(), "x.txt", "hello world\n").expect("drop");
        assert_eq!(fs::read_to_string(path).expect("read"), "hello world\n");
        let names: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["x.txt".to_owned()]);
    }
}
