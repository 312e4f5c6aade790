//! The command line, as clap derive types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// weir: watch and inspect a running or stopped weir engine.
#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "Watch and inspect a weir streaming engine",
    long_about = "Watch and inspect a weir streaming engine: its control endpoint \
                  (--control-addr / StreamingConfig::control_addr) and the checkpoints, \
                  write-ahead logs and event log in its checkpoint directory.",
    after_help = "Examples:\n  \
        weir watch --addr 127.0.0.1:7070 --token-file data/control-token\n  \
        weir events --addr 127.0.0.1:7070 --json\n  \
        weir events --dir data\n  \
        weir kill receiver-0 --addr 127.0.0.1:7070 --token-file data/control-token\n  \
        weir checkpoints list data\n  \
        weir checkpoints show data 42\n  \
        weir wal inspect data\n\n\
        Exit codes: 0 success, 1 error (the reason is printed as one sentence), 2 usage error."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How log lines are written to stderr: `text` or `json` (one object a line). Nothing is
    /// logged unless `RUST_LOG` asks (e.g. `RUST_LOG=debug`).
    #[arg(long, global = true, value_name = "FORMAT", env = crate::logging::LOG_FORMAT_VAR,
          default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Full-screen view of a running engine: the supervision tree, events, batches, WAL and
    /// checkpoints. Keys: arrows move, k kills the selected actor (after a confirmation; needs
    /// --token-file), q quits. Reconnects by itself when the process restarts.
    #[command(
        after_help = "Example:\n  weir watch --addr 127.0.0.1:7070 --token-file data/control-token"
    )]
    Watch(WatchArgs),
    /// Print the engine's events: live from the control endpoint (--addr), or from the event
    /// log of a checkpoint directory (--dir), also of a process that is gone.
    #[command(
        after_help = "Examples:\n  weir events --addr 127.0.0.1:7070\n  weir events --dir data --json"
    )]
    Events(EventsArgs),
    /// Kill an actor of a running engine (its supervisor restarts it).
    #[command(
        after_help = "Example:\n  weir kill receiver-0 --addr 127.0.0.1:7070 --token-file data/control-token"
    )]
    Kill(ActorCommandArgs),
    /// Make an actor of a running engine panic when it next handles a message.
    #[command(
        after_help = "Example:\n  weir panic executor-0 --addr 127.0.0.1:7070 --token-file data/control-token"
    )]
    Panic(ActorCommandArgs),
    /// Take a savepoint of a running engine: a checkpoint exported, once durable, with its
    /// state files to --path (a directory or an s3:// URL holding no savepoint yet), which
    /// `--restore-from` restores, also into a changed program. With --stop, the engine then
    /// stops gracefully.
    #[command(
        after_help = "Example:\n  weir savepoint --addr 127.0.0.1:7070 --token-file data/control-token --path /backups/sp-1 --stop"
    )]
    Savepoint(SavepointArgs),
    /// Checkpoints in a checkpoint directory (read-only).
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),
    /// Write-ahead logs in a checkpoint directory (read-only).
    #[command(subcommand)]
    Wal(WalCommand),
}

/// `weir watch`
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The control endpoint, `host:port`.
    #[arg(long)]
    pub addr: String,
    /// The engine's token file (`<checkpoint-dir>/control-token`), needed to kill, and to
    /// connect at all to an endpoint on a non-loopback address.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// `weir events`
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["addr", "dir"]))]
pub struct EventsArgs {
    /// Follow the live events of the control endpoint at `host:port`.
    #[arg(long)]
    pub addr: Option<String>,
    /// Read the persisted event log of the checkpoint directory DIR (or of DIR/events).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// One JSON object a line, as in the event log, instead of text.
    #[arg(long)]
    pub json: bool,
    /// The engine's token file (`<checkpoint-dir>/control-token`), for an endpoint that
    /// requires the token to connect (one on a non-loopback address).
    #[arg(long, requires = "addr")]
    pub token_file: Option<PathBuf>,
}

/// `weir kill` and `weir panic`
#[derive(Debug, Args)]
pub struct ActorCommandArgs {
    /// The actor's name, as `weir watch` shows it (e.g. `receiver-0`).
    pub actor: String,
    /// The control endpoint, `host:port`.
    #[arg(long)]
    pub addr: String,
    /// The engine's token file (`<checkpoint-dir>/control-token`); without it the endpoint
    /// refuses.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// `weir savepoint`
#[derive(Debug, Args)]
pub struct SavepointArgs {
    /// The control endpoint, `host:port`.
    #[arg(long)]
    pub addr: String,
    /// The engine's token file (`<checkpoint-dir>/control-token`); without it the endpoint
    /// refuses.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Where the savepoint goes: a directory (made absolute here) or an `s3://` URL, holding
    /// no savepoint or checkpoint yet.
    #[arg(long)]
    pub path: String,
    /// Then stop the engine gracefully.
    #[arg(long)]
    pub stop: bool,
}

/// `weir checkpoints ...`
#[derive(Debug, Subcommand)]
pub enum CheckpointsCommand {
    /// List the checkpoints: id, size, batch time, pending batches, and whether each is valid.
    #[command(after_help = "Example:\n  weir checkpoints list data")]
    List {
        /// The checkpoint directory (or its `checkpoints` sub-directory).
        dir: PathBuf,
    },
    /// Decode one checkpoint: times, pending batches, settings, source offsets, operator
    /// state (ids, types, sizes). Without ID: the one a restart would restore.
    #[command(
        after_help = "Examples:\n  weir checkpoints show data\n  weir checkpoints show data 42"
    )]
    Show {
        /// The checkpoint directory (or its `checkpoints` sub-directory).
        dir: PathBuf,
        /// The checkpoint id.
        id: Option<u64>,
    },
}

/// `weir wal ...`
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Segments, record counts, torn tails, and what recovery would do; changes nothing.
    #[command(
        after_help = "Examples:\n  weir wal inspect data\n  weir wal inspect data/receiver-wal"
    )]
    Inspect {
        /// A log directory, or a checkpoint directory (its `receiver-wal` and `tracker-wal`).
        dir: PathBuf,
    },
}
