//! `weir events`: the live stream of a control endpoint, or the persisted event log (whose
//! unreadable lines are skipped, and counted on standard error).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use weir_actors::EventRecord;
use weir_actors::control::ServerMessage;
use weir_actors::read_event_log;

use super::args::EventsArgs;
use super::client::{Client, read_token};
use super::format::{Severity, clock, describe, severity};

/// Prints the events.
///
/// # Errors
///
/// The endpoint is unreachable, or the event log unreadable.
pub(super) async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let colour = !args.json && super::colour_stdout();
    let stdout = std::io::stdout();
    if let Some(dir) = &args.dir {
        let dir = log_dir(dir);
        let mut out = stdout.lock();
        let mut err = std::io::stderr().lock();
        return print_log(&dir, &mut out, &mut err, args.json, colour);
    }
    let addr = args.addr.as_deref().unwrap_or_default();
    let token = args.token_file.as_deref().map(read_token).transpose()?;
    let mut client = Client::connect(addr, token.as_deref()).await?;
    if !args.json {
        eprintln!(
            "connected to {} (pid {}) at {addr}",
            client.server, client.pid
        );
    }
    while let Some(message) = client.next().await? {
        if let ServerMessage::Event(record) = message {
            let mut out = stdout.lock();
            print_record(&mut out, &record, args.json, colour)?;
            out.flush()?;
        }
    }
    eprintln!("weir: the control endpoint at {addr} closed the connection");
    Ok(())
}

/// Prints the persisted event log in `dir` to `out`, then, on `err`, how many of its lines
/// were skipped.
fn print_log(
    dir: &Path,
    out: &mut impl Write,
    err: &mut impl Write,
    json: bool,
    colour: bool,
) -> anyhow::Result<()> {
    let (records, skipped) = read_event_log(dir)
        .with_context(|| format!("could not read the event log in `{}`", dir.display()))?;
    for record in &records {
        print_record(out, record, json, colour)?;
    }
    if skipped > 0 {
        let lines = if skipped == 1 { "line" } else { "lines" };
        writeln!(
            err,
            "weir: skipped {skipped} {lines} of the event log that are not valid UTF-8 or not an \
             event (a line cut short by a crash, a damaged byte)"
        )?;
    }
    Ok(())
}

/// `DIR/events` if it exists, else `DIR`.
fn log_dir(dir: &Path) -> PathBuf {
    let events = dir.join("events");
    if events.is_dir() {
        events
    } else {
        dir.to_path_buf()
    }
}

fn print_record(
    out: &mut impl Write,
    record: &EventRecord,
    json: bool,
    colour: bool,
) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(record)?)?;
        return Ok(());
    }
    let text = describe(&record.event);
    let (start, end) = match (colour, severity(&record.event)) {
        (true, Severity::Error) => ("\x1b[31m", "\x1b[0m"),
        (true, Severity::Warning) => ("\x1b[33m", "\x1b[0m"),
        _ => ("", ""),
    };
    writeln!(out, "{} {start}{text}{end}", clock(record.time_ms))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn events_dir_prints_the_readable_events_and_counts_the_skipped_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Vec::new();
        log.extend_from_slice(b"{\"time_ms\":1,\"kind\":\"actor_started\",\"actor\":\"a\"}\n");
        log.extend_from_slice(b"{\"time_ms\":2,\"kind\":\"actor_started\",\"actor\":\"\xff\"}\n");
        log.extend_from_slice(b"{\"time_ms\":3,\"kind\":\"actor_started\",\"actor\":\"c\"}\n");
        std::fs::write(dir.path().join("events.jsonl"), &log).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        print_log(dir.path(), &mut out, &mut err, true, false).unwrap();
        let out = String::from_utf8(out).unwrap();
        let times: Vec<u64> = out
            .lines()
            .map(|l| serde_json::from_str::<EventRecord>(l).unwrap().time_ms)
            .collect();
        assert_eq!(times, vec![1, 3]);
        let err = String::from_utf8(err).unwrap();
        assert!(err.contains("skipped 1 line of the event log"), "{err}");
    }
}
