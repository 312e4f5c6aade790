//! The durable core, end to end: write, crash mid-write, recover.
//!
//! Execute with
//! ```text
//! cargo run --release -p weir-examples --bin crash_recovery [-- --dir DIR]
//! ```
//!
//! The program starts a copy of itself as a child process that appends records to a
//! write-ahead log from four tasks and writes a checkpoint every 50 ms, printing every
//! acknowledgement. While it writes, the parent kills it with `SIGKILL`. It then simulates
//! two more accidents — a power cut that tore the last, unacknowledged write, and a damaged
//! newest checkpoint — and recovers: it opens the log (cutting the torn tail), checks that
//! every acknowledged record is there, and restores the newest valid checkpoint (skipping the
//! damaged one). Everything lives under `./weir-data/crash-recovery/` unless `--dir` says
//! otherwise. The exit code is non-zero if anything acknowledged was lost.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use weir::logging::{LOG_FORMAT_VAR, LogFormat};
use weir_actors::checkpoint::{CheckpointConfig, CheckpointData, CheckpointStore, SourceOffset};
use weir_actors::wal::{Position, Wal, WalConfig, format};
use weir_actors::{Event, EventSink, Storage};

const WRITERS: u64 = 4;
const KILL_AFTER_ACKS: usize = 3000;
const KILL_AFTER_CHECKPOINTS: usize = 3;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The durable core, end to end: write, crash mid-write, recover.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Where the log and the checkpoints live.
    #[arg(long, value_name = "DIR", default_value = "weir-data/crash-recovery")]
    dir: PathBuf,
    /// Internal: be the writer that the parent kills, writing into DIR.
    #[arg(long, value_name = "DIR", hide = true)]
    child: Option<PathBuf>,
    /// How log lines are written to stderr: `text` or `json` (`RUST_LOG` filters them;
    /// default: warn). This example runs no engine, so it takes no `--config`.
    #[arg(long, value_name = "FORMAT", env = LOG_FORMAT_VAR, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = weir::logging::init(args.log_format);
    let result = match args.child {
        Some(dir) => child(dir),
        None => parent(args.dir),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("crash_recovery: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The record a writer appends as its `seq`-th: a line of text naming both.
fn record(writer: u64, seq: u64) -> String {
    format!("writer {writer} record {seq}: the quick brown fox jumps over the lazy dog")
}

fn parse_record(bytes: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut words = text.split_whitespace();
    let (Some("writer"), Some(w), Some("record"), Some(s)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return None;
    };
    let (w, s): (u64, u64) = (w.parse().ok()?, s.trim_end_matches(':').parse().ok()?);
    (record(w, s).as_bytes() == bytes).then_some((w, s))
}

// ================================ the child: writes until killed ================================ //

fn child(dir: PathBuf) -> Result<bool, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (wal, _) = Wal::open(Storage::local(dir.join("wal")), WalConfig::default()).await?;
        let store = CheckpointStore::open(
            Storage::local(dir.join("checkpoints")),
            CheckpointConfig::default(),
        )
        .await?;
        // acked[w] = how many records writer w has had acknowledged.
        let acked: Arc<Vec<AtomicU64>> =
            Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
        let (lines, mut out) = tokio::sync::mpsc::unbounded_channel::<String>();
        for w in 0..WRITERS {
            let (wal, acked, lines) = (wal.clone(), Arc::clone(&acked), lines.clone());
            tokio::spawn(async move {
                for seq in 0.. {
                    if wal.append(Bytes::from(record(w, seq))).await.is_err() {
                        return;
                    }
                    acked[w as usize].store(seq + 1, Ordering::SeqCst);
                    if lines.send(format!("ACK {w} {seq}")).is_err() {
                        return;
                    }
                }
            });
        }
        let checkpoints = tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let data = CheckpointData {
                    checkpoint_time_ms: started.elapsed().as_millis() as u64,
                    source_offsets: (0..WRITERS)
                        .map(|w| SourceOffset {
                            source: "demo".to_owned(),
                            partition: w as u32,
                            offset: acked[w as usize].load(Ordering::SeqCst),
                        })
                        .collect(),
                    ..CheckpointData::default()
                };
                match store.write(&data).await {
                    Ok(id) => {
                        if lines.send(format!("CHECKPOINT {}", id.0)).is_err() {
                            return;
                        }
                    }
                    Err(err) => eprintln!("checkpoint failed: {err}"),
                }
            }
        });
        let mut stdout = std::io::stdout().lock();
        while let Some(line) = out.recv().await {
            if writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                break;
            }
        }
        checkpoints.abort();
        Ok(true)
    })
}

// ============================ the parent: kills, damages, recovers ============================= //

fn parent(dir: PathBuf) -> Result<bool, BoxError> {
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    println!("weir crash-recovery demo, data in {}", dir.display());
    println!();

    // 1. Write until killed.
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("the child has no stdout")?;
    let mut acked = BTreeSet::new();
    let mut checkpoints = 0usize;
    let started = Instant::now();
    let mut lines = BufReader::new(stdout).lines();
    while acked.len() < KILL_AFTER_ACKS || checkpoints < KILL_AFTER_CHECKPOINTS {
        let Some(line) = lines.next() else {
            return Err("the writer process exited before it was killed".into());
        };
        let line = line?;
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["ACK", w, s] => {
                acked.insert((w.parse::<u64>()?, s.parse::<u64>()?));
            }
            ["CHECKPOINT", _] => checkpoints += 1,
            _ => {}
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            return Err("the writer process is too slow; giving up after 60 s".into());
        }
    }
    child.kill()?; // SIGKILL: no destructors, no flush, no close
    child.wait()?;
    for line in lines {
        let line = line?;
        if let ["ACK", w, s] = line.split(' ').collect::<Vec<_>>().as_slice() {
            acked.insert((w.parse::<u64>()?, s.parse::<u64>()?));
        }
    }
    println!(
        "1. wrote from {WRITERS} tasks and killed the writer with SIGKILL after {:.0?}: \
         {} records acknowledged, {checkpoints}+ checkpoints written",
        started.elapsed(),
        acked.len()
    );

    // 2. A power cut during the last write: half a frame at the end of the newest segment.
    let torn_segment = tear_newest_segment(&dir.join("wal"))?;
    println!(
        "2. simulated a power cut during an unacknowledged write: appended half a record \
         frame to {}",
        torn_segment.display()
    );

    // 3. A damaged newest checkpoint.
    let damaged = damage_newest_checkpoint(&dir.join("checkpoints"))?;
    println!(
        "3. simulated disk damage: flipped one byte of {}",
        damaged.display()
    );
    println!();

    // 4. Recover.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(recover(&dir, &acked))
}

fn tear_newest_segment(wal_dir: &Path) -> Result<PathBuf, BoxError> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(wal_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    let newest = segments.pop().ok_or("the WAL has no segment")?;
    let mut frame = Vec::new();
    format::encode_frame(&mut frame, 0, record(99, 0).as_bytes());
    let mut file = std::fs::OpenOptions::new().append(true).open(&newest)?;
    file.write_all(&frame[..frame.len() / 2])?;
    file.sync_all()?;
    Ok(newest)
}

fn damage_newest_checkpoint(dir: &Path) -> Result<PathBuf, BoxError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("checkpoint-"))
        })
        .collect();
    files.sort();
    let newest = files.pop().ok_or("no checkpoint was written")?;
    let mut bytes = std::fs::read(&newest)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&newest, bytes)?;
    Ok(newest)
}

async fn recover(dir: &Path, acked: &BTreeSet<(u64, u64)>) -> Result<bool, BoxError> {
    let print_event = EventSink::new(|event| match event {
        Event::WalTornTailCut {
            segment,
            offset,
            discarded_bytes,
            reason,
            ..
        } => println!(
            "   event: WAL torn tail cut in segment {segment} at offset {offset} \
             ({discarded_bytes} bytes discarded: {reason})"
        ),
        Event::CheckpointSkipped { id, reason, .. } => {
            println!("   event: checkpoint {id} skipped: {reason}")
        }
        Event::CheckpointRestored { id, .. } => println!("   event: checkpoint {id} restored"),
        _ => {}
    });

    println!("4. recovering the write-ahead log");
    let config = WalConfig {
        events: print_event.clone(),
        ..WalConfig::default()
    };
    let (wal, report) = Wal::open(Storage::local(dir.join("wal")), config).await?;
    println!(
        "   recovered {} records in {} segments ({} bytes) in {:.1?}",
        report.records, report.segments, report.bytes, report.elapsed
    );
    let mut present = BTreeSet::new();
    let mut wrong = 0;
    let mut records = wal.iter_from(Position::START);
    while let Some(record) = records.next().await {
        match parse_record(&record?.payload) {
            Some(id) => {
                present.insert(id);
            }
            None => wrong += 1,
        }
    }
    let lost = acked.difference(&present).count();
    let extra = present.difference(acked).count();
    println!(
        "   {} of {} acknowledged records are back, {lost} lost, {wrong} wrong; {extra} more \
         were durable but not yet acknowledged when the process died",
        acked.len() - lost,
        acked.len()
    );
    wal.close().await?;

    println!("5. restoring the newest valid checkpoint");
    let store = CheckpointStore::open(
        Storage::local(dir.join("checkpoints")),
        CheckpointConfig::default().with_events(print_event),
    )
    .await?;
    let listed = store.list().await?;
    println!("   {} checkpoints on disk", listed.len());
    let mut offsets_ok = true;
    match store.read_latest().await? {
        Some(restored) => {
            println!(
                "   restored checkpoint {} (skipped {} damaged): time {} ms, offsets {}",
                restored.id.0,
                restored.skipped.len(),
                restored.data.checkpoint_time_ms,
                restored
                    .data
                    .source_offsets
                    .iter()
                    .map(|o| format!("{}/{}={}", o.source, o.partition, o.offset))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            // A checkpointed offset never runs ahead of what the log holds.
            for o in &restored.data.source_offsets {
                let w = u64::from(o.partition);
                offsets_ok &= (0..o.offset).all(|s| present.contains(&(w, s)));
            }
        }
        None => {
            println!("   no checkpoint to restore");
            offsets_ok = false;
        }
    }
    println!();
    let ok = lost == 0 && wrong == 0 && offsets_ok;
    if ok {
        println!("OK: nothing acknowledged was lost, nothing wrong was read back.");
        println!("Next: `cargo test --workspace --all-features --locked` runs every test.");
    } else {
        println!("FAILED: lost {lost}, wrong {wrong}, checkpoint offsets consistent: {offsets_ok}");
    }
    Ok(ok)
}
