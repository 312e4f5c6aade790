//! `weir events`: the live stream of a control endpoint, or the persisted event log.

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
        let (records, skipped) = read_event_log(&dir)
            .with_context(|| format!("could not read the event log in `{}`", dir.display()))?;
        let mut out = stdout.lock();
        for record in &records {
            print_record(&mut out, record, args.json, colour)?;
        }
        if skipped > 0 {
            eprintln!(
                "weir: skipped {skipped} lines of the event log that do not parse (a line cut short by a crash)"
            );
        }
        return Ok(());
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
