//! Logging as every weir binary does it (feature `logging`, on by default): `tracing` output on
//! standard error, filtered by `RUST_LOG`, as text or as one JSON object a line.
//!
//! The `weir` tool, every example and the bench call [`init`] (or [`init_with_default`]) once,
//! first thing, with the format of their `--log-format text|json` flag, whose default is the
//! environment variable [`LOG_FORMAT_VAR`] (`WEIR_LOG_FORMAT`), then `text`. An embedding
//! application that installs its own subscriber does not call it.
//!
//! Every log line of a batch — the engine's and what the user's closures log — is emitted
//! inside the engine's `batch` span, whose field `batch_time_ms` names the batch. The text
//! format prints it as `batch{batch_time_ms=…}:` before the message; the JSON format carries
//! it as `"span": {"name": "batch", "batch_time_ms": …}` (the innermost span) and in
//! `"spans"` (all of them, outermost first), so that a log collector can group a batch's lines.
//! The span is at level `ERROR`, so any filter that lets something of `weir_actors` through
//! enables it; a filter that names only other targets (`RUST_LOG=my_app=info`) disables it —
//! add `weir_actors=error` to keep it.
//!
//! Nothing here is durable: logging has no effect on what the engine stores.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// The environment variable that gives the log format when no `--log-format` flag does.
pub const LOG_FORMAT_VAR: &str = "WEIR_LOG_FORMAT";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (`tracing-subscriber`'s default format), coloured on a terminal.
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `fields` (with `message`), `target`,
    /// `span` and `spans` (with their fields, so `batch_time_ms` appears).
    Json,
}

impl LogFormat {
    /// The format [`LOG_FORMAT_VAR`] names, or [`LogFormat::Text`] when it is not set.
    ///
    /// # Errors
    ///
    /// The variable is set to something other than `text` or `json`.
    pub fn from_env() -> Result<LogFormat, LogFormatError> {
        match std::env::var(LOG_FORMAT_VAR) {
            Ok(value) => value
                .parse()
                .map_err(|LogFormatError { value, .. }| LogFormatError {
                    value,
                    source: Some(LOG_FORMAT_VAR),
                }),
            Err(_) => Ok(LogFormat::Text),
        }
    }
}

impl FromStr for LogFormat {
    type Err = LogFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(LogFormatError {
                value: other.to_owned(),
                source: None,
            }),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// A log format that is neither `text` nor `json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFormatError {
    value: String,
    /// The environment variable it came from, if any.
    source: Option<&'static str>,
}

impl fmt::Display for LogFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(var) = self.source {
            write!(f, "{var}: ")?;
        }
        write!(
            f,
            "{:?} is not a log format (use `text` or `json`)",
            self.value
        )
    }
}

impl std::error::Error for LogFormatError {}

/// A global `tracing` subscriber was already installed, so [`init`] installed none.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a global tracing subscriber is already installed; weir's logging was not set up")]
pub struct AlreadyInitialised;

/// Installs the global subscriber: `format` on standard error, filtered by `RUST_LOG`, or at
/// `warn` when `RUST_LOG` is unset or invalid (what the examples use).
///
/// # Errors
///
/// [`AlreadyInitialised`] if a global subscriber is already set (nothing changes then).
pub fn init(format: LogFormat) -> Result<(), AlreadyInitialised> {
    init_with_default(format, "warn")
}

/// [`init`] with another filter for when `RUST_LOG` is unset or invalid (`"off"`: nothing
/// unless asked, as the `weir` tool does).
///
/// # Errors
///
/// [`AlreadyInitialised`] if a global subscriber is already set (nothing changes then).
pub fn init_with_default(
    format: LogFormat,
    default_filter: &str,
) -> Result<(), AlreadyInitialised> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    result.map_err(|_| AlreadyInitialised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_display_as_their_flag_values() {
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(format.to_string().parse::<LogFormat>(), Ok(format));
        }
        let err = "yaml".parse::<LogFormat>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"yaml\" is not a log format (use `text` or `json`)"
        );
    }
}
