//! The `weir` command-line tool (feature `cli`, on by default): `watch`, `events`, `kill`,
//! `panic`, `savepoint`, `checkpoints`, `wal`. The binary (`src/bin/weir.rs`) only calls [`main`].
//!
//! Exit codes: 0 success, 1 an error (printed as one sentence), 2 a usage error.

mod args;
mod checkpoints;
mod client;
mod events;
mod format;
mod kill;
mod savepoint;
mod wal;
mod watch;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;

/// Runs the command line `args` (the program name first) and returns the exit code.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { 2 } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    // Off unless RUST_LOG asks: `weir watch` draws the whole screen, and the offline
    // commands print their findings on stdout.
    let _ = crate::logging::init_with_default(cli.log_format, "off");
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weir: {}", sentence(&err));
            ExitCode::from(1)
        }
    }
}

/// Runs the command line of this process.
pub fn main() -> ExitCode {
    main_with(std::env::args_os())
}

/// An error and its causes as one sentence: `a: b: c`.
pub fn sentence(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<()> {
    use args::{CheckpointsCommand, Command, WalCommand};
    match cli.command {
        Command::Checkpoints(CheckpointsCommand::List { dir }) => checkpoints::list(&dir),
        Command::Checkpoints(CheckpointsCommand::Show { dir, id }) => checkpoints::show(&dir, id),
        Command::Wal(WalCommand::Inspect { dir }) => block_on(wal::inspect(&dir)),
        Command::Events(args) => block_on(events::run(args)),
        Command::Kill(args) => block_on(kill::run(args, true)),
        Command::Panic(args) => block_on(kill::run(args, false)),
        Command::Savepoint(args) => block_on(savepoint::run(args)),
        Command::Watch(args) => watch::run(args),
    }
}

/// Runs `f` on a small single-threaded tokio runtime.
pub(crate) fn block_on<T>(f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Whether to colour standard output: only on a terminal, and never with `NO_COLOR` set.
pub fn colour_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}
