//! The persisted event log: every event as a JSON line in `<dir>/events.jsonl`, rotated to
//! `events.1.jsonl` past a size limit, readable after the process is gone ([`read_event_log`]).
//!
//! The invariant: every line the writer appends starts at the beginning of a line of the file.
//!
//! # What a crash leaves behind
//!
//! The log is written without fsync: it is for people and tools, not for recovery. A killed
//! process may lose its last lines, or leave a last line cut short. The next writer ends such a
//! line when it opens the log, so its own first event is not glued onto it; the reader skips
//! and counts it, as it does any line that is not valid UTF-8 or not an event in JSON.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
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
    /// Opens the log in `dir` for appending, creating it if needed. A last line left without
    /// its newline (by a process killed while writing it) is ended first.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(dir.join(LOG_FILE))?;
        let mut bytes = file.metadata()?.len();
        if bytes > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(bytes - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                // Appends always go to the end, wherever the read left the cursor.
                file.write_all(b"\n")?;
                bytes += 1;
            }
        }
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

/// Reads the persisted event log in `dir` (the rotated file first), oldest first, and the
/// number of lines skipped. A line that is not valid UTF-8, or not an event in JSON — the last
/// line of a killed process, cut short; a damaged byte — is skipped and counted; the lines
/// around it are read as usual.
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
        read_event_lines(BufReader::new(file), &mut records, &mut skipped)?;
    }
    Ok((records, skipped))
}

/// The longest line [`read_event_log`] reads (the bound the `weir` client puts on a server's
/// line, too); a longer one is skipped and counted without being held in memory, so a damaged
/// or foreign file cannot make a reader allocate without bound.
pub(crate) const MAX_EVENT_LINE_BYTES: usize = 16 << 20;

/// Reads the lines of one event-log file from `reader`: each event is added to `records`,
/// each line that is not one (not UTF-8, not an event in JSON, cut short, longer than
/// [`MAX_EVENT_LINE_BYTES`]) counts in `skipped`.
pub(crate) fn read_event_lines(
    mut reader: impl BufRead,
    records: &mut Vec<EventRecord>,
    skipped: &mut usize,
) -> std::io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = MAX_EVENT_LINE_BYTES as u64 + 1;
        if (&mut reader).take(limit).read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > MAX_EVENT_LINE_BYTES {
            // Too long: the rest of it is passed over, not read into memory.
            skip_line(&mut reader)?;
            *skipped += 1;
            line = Vec::new();
            continue;
        }
        // `from_slice` checks the UTF-8 of what it decodes, so a bad byte is a skip too.
        match serde_json::from_slice::<EventRecord>(&line) {
            Ok(record) => records.push(record),
            Err(_) => *skipped += 1,
        }
    }
}

/// Consumes `reader` up to and including the next `\n` (or to its end).
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
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

    fn line(time_ms: u64) -> Vec<u8> {
        let record = EventRecord {
            time_ms,
            event: started("x"),
        };
        let mut line = serde_json::to_vec(&record).unwrap();
        line.push(b'\n');
        line
    }

    fn times(dir: &Path) -> (Vec<u64>, usize) {
        let (records, skipped) = read_event_log(dir).unwrap();
        (records.iter().map(|r| r.time_ms).collect(), skipped)
    }

    #[test]
    fn a_line_with_an_invalid_byte_or_no_json_is_skipped_and_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = line(1);
        bytes.extend_from_slice(b"{\"time_ms\":2,\"kind\":\"actor_started\",\"actor\":\"\xff\"}\n");
        bytes.extend_from_slice(b"not json at all\n");
        bytes.extend_from_slice(&line(3));
        bytes.extend_from_slice(b"\xc3\n");
        bytes.extend_from_slice(&line(4));
        fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();
        assert_eq!(times(dir.path()), (vec![1, 3, 4], 3));
    }

    #[test]
    fn a_line_over_the_bound_is_skipped_and_counted_and_the_next_ones_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = line(1);
        // An event whose line is longer than the bound (valid JSON, so only the bound skips
        // it), then one with no newline at all that runs to the end of the file.
        let record = EventRecord {
            time_ms: 2,
            event: Event::ActorFailed {
                actor: "a".into(),
                reason: "r".repeat(MAX_EVENT_LINE_BYTES),
            },
        };
        let long = format!("{}\n", serde_json::to_string(&record).unwrap());
        bytes.extend_from_slice(long.as_bytes());
        bytes.extend_from_slice(&line(3));
        bytes.extend_from_slice(&vec![b'x'; MAX_EVENT_LINE_BYTES + 10]);
        fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();
        assert_eq!(times(dir.path()), (vec![1, 3], 2));
    }

    #[test]
    fn a_torn_last_line_is_ended_on_open_so_the_next_process_loses_no_event() {
        let dir = tempfile::tempdir().unwrap();
        // A killed process left its last line cut short, without its newline.
        let mut bytes = line(1);
        bytes.extend_from_slice(b"{\"time_ms\":2,\"ki");
        fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();

        let mut log = EventLog::open(dir.path(), DEFAULT_LOG_MAX_BYTES).unwrap();
        let mut next = line(3);
        next.pop();
        log.append(std::str::from_utf8(&next).unwrap()).unwrap();
        drop(log);

        assert_eq!(
            times(dir.path()),
            (vec![1, 3], 1),
            "the cut line alone is lost"
        );
        let after = fs::read(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(after.last(), Some(&b'\n'));
        // A whole last line that only lacks its newline is kept whole.
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = line(5);
        bytes.pop();
        fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();
        let mut log = EventLog::open(dir.path(), DEFAULT_LOG_MAX_BYTES).unwrap();
        log.append(std::str::from_utf8(&next).unwrap()).unwrap();
        drop(log);
        assert_eq!(times(dir.path()), (vec![5, 3], 0));
    }
}
