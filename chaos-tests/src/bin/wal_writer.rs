//! A process that appends self-checking records to a local WAL from several tasks, forever,
//! printing `ACK <round> <writer> <seq>` on stdout after each append is acknowledged.
//!
//! It is the victim of `tests/wal_kill9.rs`, which kills it with `SIGKILL` at random moments.
//! Usage: `wal_writer <dir> <round> <writers>`; with the `s3` feature, `<dir>` may be an
//! `s3://BUCKET/PREFIX?endpoint=…` URL (credentials from `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`).

use std::io::Write;
use std::process::ExitCode;

use bytes::Bytes;
use tokio::sync::mpsc;
use weir_actors::Storage;
use weir_actors::wal::{Wal, WalConfig};
use weir_chaos_tests::payload::{self, RecordId};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(Ok(round)), Some(Ok(writers))) = (
        args.first(),
        args.get(1).map(|r| r.parse::<u32>()),
        args.get(2).map(|w| w.parse::<u32>()),
    ) else {
        eprintln!("usage: wal_writer <dir> <round> <writers>");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("wal_writer: cannot start a runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(dir.clone(), round, writers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wal_writer: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The storage `dir` names: a local directory, or (with the `s3` feature) an `s3://` URL.
fn storage(dir: String) -> Result<Storage, String> {
    #[cfg(feature = "s3")]
    if dir.starts_with("s3://") {
        let options = weir_actors::S3Options::from_url(&dir).map_err(|e| e.to_string())?;
        return Storage::s3(&options).map_err(|e| e.to_string());
    }
    Ok(Storage::local(dir))
}

async fn run(dir: String, round: u32, writers: u32) -> Result<(), Box<dyn std::error::Error>> {
    let (wal, report) = Wal::open(storage(dir)?, WalConfig::default()).await?;
    eprintln!(
        "wal_writer: recovered {} records; torn tails {:?}",
        report.records, report.torn_tails
    );
    let (acks, mut printed) = mpsc::unbounded_channel::<RecordId>();
    for writer in 0..writers {
        let wal = wal.clone();
        let acks = acks.clone();
        tokio::spawn(async move {
            for seq in 0.. {
                let id = RecordId { round, writer, seq };
                match wal.append(Bytes::from(payload::encode(id))).await {
                    Ok(_) => {
                        if acks.send(id).is_err() {
                            return;
                        }
                    }
                    Err(err) => {
                        eprintln!("wal_writer: append failed: {err}");
                        return;
                    }
                }
            }
        });
    }
    drop(acks);
    let mut out = std::io::stdout().lock();
    while let Some(id) = printed.recv().await {
        // One line per acknowledged record; the killer reads these as ground truth.
        if writeln!(out, "{}", payload::ack_line(id))
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    Ok(())
}
