//! The persisted event log: every event as a JSON line in `<dir>/events.jsonl`, rotated to
//! `events.1.jsonl` past a size limit, readable after the process is gone ([`read_event_log`]).
//!
//! # What a crash leaves behind
//!
//! The log is written without fsync: it is for people and tools, not for recovery. A killed
//! process may lose its last lines, or leave a last line cut short, which [`read_event_log`]
//! skips.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::observe::event::EventRecord;

/// The event log's file name.
pub(crate) const LOG_FILE: &str = "events.jsonl";
/// The previous event log, after rotation.
pub(crate) const ROTATED_LOG_FILE: &str = "events.1.jsonl";
/// The event log rotates past this size.
pub(crate) const DEFAULT_LOG_MAX_BYTES: u64 = 8 << 20;

/// The append-only JSON-lines event log, rotated by size.
#[derive(Debug)]
pub(crate) struct EventLog {
    dir: PathBuf,
    out: BufWriter<File>,
    bytes: u64,
    max_bytes: u64,
}

impl EventLog {
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG_FILE))?;
        let bytes = file.metadata()?.len();
        Ok(EventLog {
            dir: dir.to_path_buf(),
            out: BufWriter::new(file),
            bytes,
            max_bytes,
        })
    }

    pub(crate) fn append(&mut self, line: &str) -> std::io::Result<()> {
        if self.bytes > 0 && self.bytes + line.len() as u64 + 1 > self.max_bytes {
            self.out.flush()?;
            fs::rename(self.dir.join(LOG_FILE), self.dir.join(ROTATED_LOG_FILE))?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(LOG_FILE))?;
            self.out = BufWriter::new(file);
            self.bytes = 0;
        }
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.bytes += line.len() as u64 + 1;
        // Lines reach the file promptly (events are rare next to records), not durably.
        self.out.flush()
    }

    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Reads the persisted event log in `dir` (the rotated file first), oldest first. A line that
/// does not parse — the last line of a killed process, cut short — is skipped and counted.
///
/// # Errors
///
/// Reading the files failed (a missing log is no events, not an error).
pub fn read_event_log(dir: &Path) -> std::io::Result<(Vec<EventRecord>, usize)> {
    let mut records = Vec::new();
    let mut skipped = 0;
    for name in [ROTATED_LOG_FILE, LOG_FILE] {
        let file = match File::open(dir.join(name)) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        for line in BufReader::new(file).lines() {
            match serde_json::from_str::<EventRecord>(&line?) {
                Ok(record) => records.push(record),
                Err(_) => skipped += 1,
            }
        }
    }
    Ok((records, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::event::Event;

    fn started(actor: &str) -> Event {
        Event::ActorStarted {
            actor: actor.to_owned(),
        }
    }

    #[test]
    fn the_log_rotates_and_a_cut_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 200).unwrap();
        for i in 0..10 {
            let record = EventRecord {
                time_ms: i,
                event: started("x"),
            };
            log.append(&serde_json::to_string(&record).unwrap())
                .unwrap();
        }
        log.out.write_all(b"{\"time_ms\":99,\"ki").unwrap();
        log.flush().unwrap();
        assert!(dir.path().join(ROTATED_LOG_FILE).exists());
        let (records, skipped) = read_event_log(dir.path()).unwrap();
        assert_eq!(skipped, 1);
        let times: Vec<u64> = records.iter().map(|r| r.time_ms).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        assert_eq!(times.last(), Some(&9));
    }
}
