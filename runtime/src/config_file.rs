//! The configuration file: a [`StreamingConfig`] (the
//! [`EngineConfig`](weir_actors::EngineConfig) inside it included) from a TOML file, with
//! `WEIR_…` environment variables over it and explicit flags over both.
//!
//! Every key, its default and its environment variable are listed in `docs/operations.md`
//! ("Configuration file"); [`KEYS`] is the same list in code, in the order the keys are
//! applied. Keys are flat (no tables) and named as the settings a checkpoint records
//! ([`StreamingConfig::settings`], which `weir checkpoints show` prints) and as the
//! [`EngineConfig`](weir_actors::EngineConfig) fields they set: `checkpoint_interval_ms`,
//! `control_addr`, `driver_policy_max_restarts`. Durations are whole numbers of milliseconds
//! with the unit in the key's name (`batch_interval_ms = 500`), sizes whole numbers of bytes,
//! rates numbers of records per second or `"unlimited"`. A key's environment variable is
//! `WEIR_` and the key upper-cased (`WEIR_CHECKPOINT_INTERVAL_MS`).
//!
//! Precedence, highest first: a flag given explicitly ([`ConfigOverrides::set`]), the
//! environment, the file, the program's default. [`load`] reads the file and then the
//! environment; [`ConfigOverrides::apply`] writes what they set over a configuration.
//!
//! # Invariant
//!
//! Nothing is applied unless everything parsed: an unknown key, a value of the wrong type or
//! out of range, in the file or in a `WEIR_…` variable weir reads, fails [`load`] with one
//! sentence naming the key and the file (or the variable) — never a silent default. Other
//! `WEIR_…` variables (`WEIR_LOG_FORMAT`, test harnesses' own) are not configuration keys and
//! are left alone. Combinations (a checkpoint policy, a control address) are checked where
//! they always are, at start.
//!
//! Not in the file: the storage (the program's checkpoint directory) and `restore_from` (a
//! one-off operator decision; a file would repeat it at every start).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::StreamingConfig;
use crate::backpressure::BackpressureConfig;
use crate::dstream::{DiskStateOptions, StateBackend};

/// The prefix of every environment variable that sets a key.
pub const ENV_PREFIX: &str = "WEIR_";

/// What a key holds, and how its value is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A whole number at least this large (durations in ms, sizes in bytes, counts).
    Whole {
        /// The smallest value allowed.
        min: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// `true` or `false`.
    Bool,
    /// A number of records per second above zero, or `"unlimited"`.
    Rate,
    /// A number of records per second above zero.
    PositiveNumber,
    /// A number, zero or more (a PID gain).
    Gain,
    /// A number from 0 to 1.
    Fraction,
    /// A socket address, `host:port` with an IP (`127.0.0.1:7070`).
    Addr,
    /// Any text.
    Text,
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// A parsed value.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Whole(u64),
    Bool(bool),
    Number(f64),
    Rate(Option<f64>),
    Addr(SocketAddr),
    Text(String),
}

impl Value {
    fn whole(&self) -> u64 {
        match self {
            Value::Whole(n) => *n,
            _ => 0,
        }
    }
    fn ms(&self) -> Duration {
        Duration::from_millis(self.whole())
    }
    fn count(&self) -> usize {
        usize::try_from(self.whole()).unwrap_or(usize::MAX)
    }
    fn count32(&self) -> u32 {
        u32::try_from(self.whole()).unwrap_or(u32::MAX)
    }
    fn bool(&self) -> bool {
        matches!(self, Value::Bool(true))
    }
    fn number(&self) -> f64 {
        match self {
            Value::Number(n) => *n,
            _ => 0.0,
        }
    }
    fn rate(&self) -> Option<f64> {
        match self {
            Value::Rate(r) => *r,
            _ => None,
        }
    }
    fn addr(&self) -> Option<SocketAddr> {
        match self {
            Value::Addr(a) => Some(*a),
            _ => None,
        }
    }
    fn text(&self) -> String {
        match self {
            Value::Text(t) => t.clone(),
            _ => String::new(),
        }
    }
}

type Apply = fn(&mut StreamingConfig, &Value);

/// One configuration key: its name, what it holds, and what it sets.
#[derive(Clone, Copy)]
pub struct Key {
    /// The key.
    pub name: &'static str,
    /// What it holds.
    pub kind: KeyKind,
    apply: Apply,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// Its environment variable: `WEIR_` and the name, upper-cased.
    pub fn env_var(&self) -> String {
        format!("{ENV_PREFIX}{}", self.name.to_uppercase())
    }
}

const fn key(name: &'static str, kind: KeyKind, apply: Apply) -> Key {
    Key { name, kind, apply }
}

/// A whole number from `min`.
const fn whole(min: u64) -> KeyKind {
    KeyKind::Whole { min, max: u64::MAX }
}
/// A whole number that fits a `u32`, from `min`.
const fn whole32(min: u64) -> KeyKind {
    KeyKind::Whole {
        min,
        max: u32::MAX as u64,
    }
}

/// Every key, in the order [`ConfigOverrides::apply`] applies them. `batch_interval_ms` is
/// first: when the graceful stop timeout is still its default (10 × the batch interval), it
/// follows the new interval, and `graceful_stop_timeout_ms`, applied later, overrides that.
pub const KEYS: &[Key] = &[
    key("batch_interval_ms", whole(1), |c, v| {
        let graceful = c.engine.graceful_stop_timeout;
        let old = c.engine.batch_interval;
        c.engine.batch_interval = v.ms();
        // The graceful stop timeout follows the interval unless something set it.
        if graceful == old * 10 {
            c.engine.graceful_stop_timeout = v.ms() * 10;
        }
    }),
    key("block_interval_ms", whole(1), |c, v| {
        c.engine.block_interval = v.ms();
    }),
    key("max_block_bytes", whole(1), |c, v| {
        c.engine.max_block_bytes = v.count();
    }),
    key("block_store_bytes", whole(0), |c, v| {
        c.engine.block_store_bytes = v.count();
    }),
    key("receiver_batch_max_bytes", whole(1), |c, v| {
        c.engine.receiver_batch_max_bytes = v.whole();
    }),
    key("receiver_wal", KeyKind::Bool, |c, v| {
        c.engine.receiver_wal = v.bool();
    }),
    key("executors", whole(1), |c, v| c.engine.executors = v.count()),
    key("parallelism", whole(1), |c, v| c.parallelism = v.count()),
    key("max_batches_in_flight", whole(1), |c, v| {
        c.engine.max_batches_in_flight = v.count();
    }),
    key("max_pending_batches", whole(1), |c, v| {
        c.engine.max_pending_batches = v.count();
    }),
    key("max_task_attempts", whole32(1), |c, v| {
        c.engine.max_task_attempts = v.count32();
    }),
    key("graceful_stop_timeout_ms", whole(0), |c, v| {
        c.engine.graceful_stop_timeout = v.ms();
    }),
    key("stop_gracefully_on_shutdown", KeyKind::Bool, |c, v| {
        c.stop_gracefully_on_shutdown = v.bool();
    }),
    key("allow_unmatched_state", KeyKind::Bool, |c, v| {
        c.allow_unmatched_state = v.bool();
    }),
    key("receiver_restart_delay_ms", whole(0), |c, v| {
        c.engine.receiver_restart_delay = v.ms();
    }),
    key("name_prefix", KeyKind::Text, |c, v| {
        c.engine.name_prefix = v.text()
    }),
    key("seed", whole(0), |c, v| c.engine.seed = v.whole()),
    // Planning a batch's source look-ups (direct and file streams).
    key("planning_timeout_ms", whole(1), |c, v| {
        c.engine.planning.timeout = v.ms();
    }),
    key("planning_retry_initial_ms", whole(1), |c, v| {
        c.engine.planning.retry_initial = v.ms();
    }),
    key("planning_retry_max_ms", whole(1), |c, v| {
        c.engine.planning.retry_max = v.ms();
    }),
    // Rates and backpressure.
    key("receiver_max_rate", KeyKind::Rate, |c, v| {
        c.rate.receiver_max_rate = v.rate();
    }),
    key("max_rate_per_partition", KeyKind::Rate, |c, v| {
        c.rate.max_rate_per_partition = v.rate();
    }),
    key("min_rate_per_partition", KeyKind::PositiveNumber, |c, v| {
        c.rate.min_rate_per_partition = v.number();
    }),
    key("backpressure_initial_rate", KeyKind::Rate, |c, v| {
        backpressure(c).initial_rate = v.rate();
    }),
    key("backpressure_pid_proportional", KeyKind::Gain, |c, v| {
        backpressure(c).pid.proportional = v.number();
    }),
    key("backpressure_pid_integral", KeyKind::Gain, |c, v| {
        backpressure(c).pid.integral = v.number();
    }),
    key("backpressure_pid_derivative", KeyKind::Gain, |c, v| {
        backpressure(c).pid.derivative = v.number();
    }),
    key(
        "backpressure_pid_min_rate",
        KeyKind::PositiveNumber,
        |c, v| {
            backpressure(c).pid.min_rate = v.number();
        },
    ),
    // After the other backpressure keys: `backpressure = false` wins over them (each of them
    // turns backpressure on).
    key("backpressure", KeyKind::Bool, |c, v| {
        if v.bool() {
            backpressure(c);
        } else {
            c.rate.backpressure = None;
        }
    }),
    // The state backend. `state_dir` and `state_cache_bytes` select the disk backend;
    // `state_backend`, applied after them, wins (`"memory"` turns it off again).
    key("state_dir", KeyKind::Text, |c, v| {
        disk_state(c, |o| o.dir = v.text().into());
    }),
    key("state_cache_bytes", whole(1), |c, v| {
        disk_state(c, |o| o.cache_bytes = v.count());
    }),
    key(
        "state_backend",
        KeyKind::OneOf(&["memory", "disk"]),
        |c, v| {
            if v.text() == "disk" {
                disk_state(c, |_| {});
            } else {
                c.state_backend = StateBackend::Memory;
            }
        },
    ),
    // Checkpoints.
    key("incremental_checkpoints", KeyKind::Bool, |c, v| {
        c.incremental_checkpoints = v.bool();
    }),
    key("state_inline_max_bytes", whole(0), |c, v| {
        c.state_inline_max_bytes = v.count();
    }),
    key("checkpoint_interval_ms", whole(0), |c, v| {
        c.engine.checkpoint_policy.interval = v.ms();
    }),
    key("checkpoint_min_pause_ms", whole(0), |c, v| {
        c.engine.checkpoint_policy.min_pause = v.ms();
    }),
    key("checkpoint_timeout_ms", whole(1), |c, v| {
        c.engine.checkpoint_policy.timeout = v.ms();
    }),
    key("checkpoint_tolerable_failures", whole32(0), |c, v| {
        c.engine.checkpoint_policy.tolerable_failures = v.count32();
    }),
    key("checkpoint_max_concurrent", whole(1), |c, v| {
        c.engine.checkpoint_policy.max_concurrent = v.count();
    }),
    key("checkpoints_retained", whole(1), |c, v| {
        c.engine.checkpoints_retained = v.count();
    }),
    // The control endpoint.
    key("control_addr", KeyKind::Addr, |c, v| {
        c.engine.control_addr = v.addr();
    }),
    key("control_allow_remote", KeyKind::Bool, |c, v| {
        c.engine.control_allow_remote = v.bool();
    }),
    key("control_max_connections", whole(1), |c, v| {
        c.engine.control_max_connections = v.count();
    }),
    // The HTTP server (metrics, the JSON API, the dashboard).
    key("http_addr", KeyKind::Addr, |c, v| {
        c.engine.http_addr = v.addr();
    }),
    key("http_allow_remote", KeyKind::Bool, |c, v| {
        c.engine.http_allow_remote = v.bool();
    }),
    key("http_max_connections", whole(1), |c, v| {
        c.engine.http_max_connections = v.count();
    }),
    // Restart policies (EngineConfig's `driver_policy`, `receiver_policy`, `executor_policy`).
    key("driver_policy_max_restarts", whole32(0), |c, v| {
        c.engine.driver_policy.intensity.max_restarts = v.count32();
    }),
    key("driver_policy_period_ms", whole(1), |c, v| {
        c.engine.driver_policy.intensity.period = v.ms();
    }),
    key("driver_policy_backoff_initial_ms", whole(0), |c, v| {
        c.engine.driver_policy.backoff.initial = v.ms();
    }),
    key("driver_policy_backoff_max_ms", whole(0), |c, v| {
        c.engine.driver_policy.backoff.max = v.ms();
    }),
    key("driver_policy_backoff_multiplier", whole32(1), |c, v| {
        c.engine.driver_policy.backoff.multiplier = v.count32();
    }),
    key("driver_policy_backoff_jitter", KeyKind::Fraction, |c, v| {
        c.engine.driver_policy.backoff.jitter = v.number();
    }),
    key("driver_policy_backoff_reset_after_ms", whole(0), |c, v| {
        c.engine.driver_policy.backoff.reset_after = v.ms();
    }),
    key("receiver_policy_max_restarts", whole32(0), |c, v| {
        c.engine.receiver_policy.intensity.max_restarts = v.count32();
    }),
    key("receiver_policy_period_ms", whole(1), |c, v| {
        c.engine.receiver_policy.intensity.period = v.ms();
    }),
    key("receiver_policy_backoff_initial_ms", whole(0), |c, v| {
        c.engine.receiver_policy.backoff.initial = v.ms();
    }),
    key("receiver_policy_backoff_max_ms", whole(0), |c, v| {
        c.engine.receiver_policy.backoff.max = v.ms();
    }),
    key("receiver_policy_backoff_multiplier", whole32(1), |c, v| {
        c.engine.receiver_policy.backoff.multiplier = v.count32();
    }),
    key(
        "receiver_policy_backoff_jitter",
        KeyKind::Fraction,
        |c, v| {
            c.engine.receiver_policy.backoff.jitter = v.number();
        },
    ),
    key(
        "receiver_policy_backoff_reset_after_ms",
        whole(0),
        |c, v| {
            c.engine.receiver_policy.backoff.reset_after = v.ms();
        },
    ),
    key("executor_policy_max_restarts", whole32(0), |c, v| {
        c.engine.executor_policy.intensity.max_restarts = v.count32();
    }),
    key("executor_policy_period_ms", whole(1), |c, v| {
        c.engine.executor_policy.intensity.period = v.ms();
    }),
    key("executor_policy_backoff_initial_ms", whole(0), |c, v| {
        c.engine.executor_policy.backoff.initial = v.ms();
    }),
    key("executor_policy_backoff_max_ms", whole(0), |c, v| {
        c.engine.executor_policy.backoff.max = v.ms();
    }),
    key("executor_policy_backoff_multiplier", whole32(1), |c, v| {
        c.engine.executor_policy.backoff.multiplier = v.count32();
    }),
    key(
        "executor_policy_backoff_jitter",
        KeyKind::Fraction,
        |c, v| {
            c.engine.executor_policy.backoff.jitter = v.number();
        },
    ),
    key(
        "executor_policy_backoff_reset_after_ms",
        whole(0),
        |c, v| {
            c.engine.executor_policy.backoff.reset_after = v.ms();
        },
    ),
];

/// The backpressure settings, turned on with their defaults if they were off.
/// Selects the disk backend (with its defaults if it was not selected), changed by `change`.
fn disk_state(config: &mut StreamingConfig, change: impl FnOnce(&mut DiskStateOptions)) {
    let mut options = match &config.state_backend {
        StateBackend::Disk(options) => options.clone(),
        StateBackend::Memory => DiskStateOptions::default(),
    };
    change(&mut options);
    config.state_backend = StateBackend::Disk(options);
}

fn backpressure(config: &mut StreamingConfig) -> &mut BackpressureConfig {
    config
        .rate
        .backpressure
        .get_or_insert_with(BackpressureConfig::default)
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file at this path (as given).
    File(String),
    /// This environment variable.
    Env(String),
    /// A flag (or the program) set it with [`ConfigOverrides::set`].
    Flag,
}

/// Why a configuration could not be loaded: one sentence naming the key and where it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("{file}: cannot be read: {reason}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        reason: String,
    },
    /// The file is not valid TOML.
    #[error("{file}: invalid TOML at line {line}, column {column}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        /// The parser's reason.
        message: String,
    },
    /// A key weir does not know.
    #[error("{file}: unknown key `{key}`{}", suggest(suggestion.as_deref()))]
    UnknownKey {
        /// The file.
        file: String,
        /// The key.
        key: String,
        /// A known key with a similar name.
        suggestion: Option<String>,
    },
    /// A value that does not fit its key.
    #[error("{}{value} {problem}", place(origin, key))]
    BadValue {
        /// Where it came from.
        origin: Origin,
        /// The key.
        key: String,
        /// The value as written (TOML syntax in a file, quoted from the environment).
        value: String,
        /// What is wrong with it ("is not a whole number").
        problem: String,
    },
}

fn suggest(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"))
}

fn place(origin: &Origin, key: &str) -> String {
    match origin {
        Origin::File(file) => format!("{file}: `{key}` = "),
        Origin::Env(var) => format!("{var}: "),
        Origin::Flag => format!("`{key}`: "),
    }
}

/// The values a file, the environment and flags set, by key, each with its origin; the
/// highest-precedence one wins ([`merge`](Self::merge), [`set`](Self::set)).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigOverrides {
    /// Index into [`KEYS`] → the value and where it came from.
    values: BTreeMap<usize, (Value, Origin)>,
}

/// Reads `file` (if any), then the `WEIR_…` environment variables over it.
///
/// # Errors
///
/// The file cannot be read or parsed, has an unknown key or a bad value, or a `WEIR_…`
/// variable of a key has a bad value: one sentence naming the key and the file or variable.
pub fn load(file: Option<&Path>) -> Result<ConfigOverrides, ConfigFileError> {
    let from_file = match file {
        Some(path) => ConfigOverrides::from_toml_file(path)?,
        None => ConfigOverrides::default(),
    };
    Ok(from_file.merge(ConfigOverrides::from_env()?))
}

impl ConfigOverrides {
    /// The values of the TOML file at `path`.
    ///
    /// # Errors
    ///
    /// See [`load`].
    pub fn from_toml_file(path: &Path) -> Result<ConfigOverrides, ConfigFileError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigFileError::Read {
            file: file.clone(),
            reason: err.to_string(),
        })?;
        ConfigOverrides::from_toml_str(&text, &file)
    }

    /// The values of the TOML text `text`, read from the file named `file` (for errors).
    ///
    /// # Errors
    ///
    /// See [`load`].
    pub fn from_toml_str(text: &str, file: &str) -> Result<ConfigOverrides, ConfigFileError> {
        let table: toml::Table = text.parse().map_err(|err: toml::de::Error| {
            let (line, column) = err
                .span()
                .map_or((1, 1), |span| line_and_column(text, span.start));
            ConfigFileError::Syntax {
                file: file.to_owned(),
                line,
                column,
                message: err.message().trim_end().to_owned(),
            }
        })?;
        let mut out = ConfigOverrides::default();
        out.read_table(&table, file)?;
        Ok(out)
    }

    fn read_table(&mut self, table: &toml::Table, file: &str) -> Result<(), ConfigFileError> {
        for (name, value) in table {
            let Some(index) = KEYS.iter().position(|k| k.name == name) else {
                return Err(ConfigFileError::UnknownKey {
                    file: file.to_owned(),
                    suggestion: closest(name),
                    key: name.clone(),
                });
            };
            let parsed = from_toml(KEYS[index].kind, value).map_err(|problem| {
                ConfigFileError::BadValue {
                    origin: Origin::File(file.to_owned()),
                    key: name.clone(),
                    value: value.to_string(),
                    problem,
                }
            })?;
            self.values
                .insert(index, (parsed, Origin::File(file.to_owned())));
        }
        Ok(())
    }

    /// The values of this process's `WEIR_…` variables named after a key (see
    /// [`Key::env_var`]).
    ///
    /// # Errors
    ///
    /// A variable has a bad value, or is not valid Unicode.
    pub fn from_env() -> Result<ConfigOverrides, ConfigFileError> {
        let mut vars = Vec::new();
        for key in KEYS {
            let var = key.env_var();
            match std::env::var(&var) {
                Ok(value) => vars.push((var, value)),
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(value)) => {
                    return Err(ConfigFileError::BadValue {
                        origin: Origin::Env(var),
                        key: key.name.to_owned(),
                        value: format!("{value:?}"),
                        problem: "is not valid Unicode".to_owned(),
                    });
                }
            }
        }
        ConfigOverrides::from_env_vars(vars)
    }

    /// The values of these environment variables (name, value); variables that are not named
    /// after a key are ignored.
    ///
    /// # Errors
    ///
    /// A variable named after a key has a bad value.
    pub fn from_env_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ConfigOverrides, ConfigFileError> {
        let mut out = ConfigOverrides::default();
        for (var, value) in vars {
            let Some(index) = KEYS.iter().position(|k| k.env_var() == var) else {
                continue;
            };
            let parsed = from_text(KEYS[index].kind, &value).map_err(|problem| {
                ConfigFileError::BadValue {
                    origin: Origin::Env(var.clone()),
                    key: KEYS[index].name.to_owned(),
                    value: format!("{value:?}"),
                    problem,
                }
            })?;
            out.values.insert(index, (parsed, Origin::Env(var)));
        }
        Ok(out)
    }

    /// Sets `key` to `value` (written as in an environment variable: `500`, `true`,
    /// `unlimited`, `127.0.0.1:7070`) with the highest precedence: what a flag given
    /// explicitly does.
    ///
    /// # Errors
    ///
    /// `key` is not a key, or `value` does not fit it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self, ConfigFileError> {
        let Some(index) = KEYS.iter().position(|k| k.name == key) else {
            return Err(ConfigFileError::UnknownKey {
                file: "a flag".to_owned(),
                key: key.to_owned(),
                suggestion: closest(key),
            });
        };
        let parsed =
            from_text(KEYS[index].kind, value).map_err(|problem| ConfigFileError::BadValue {
                origin: Origin::Flag,
                key: key.to_owned(),
                value: format!("{value:?}"),
                problem,
            })?;
        self.values.insert(index, (parsed, Origin::Flag));
        Ok(self)
    }

    /// These values, with `higher`'s winning where both set a key.
    #[must_use]
    pub fn merge(mut self, higher: ConfigOverrides) -> ConfigOverrides {
        self.values.extend(higher.values);
        self
    }

    /// Whether `key` is set, and where from.
    pub fn origin(&self, key: &str) -> Option<&Origin> {
        let index = KEYS.iter().position(|k| k.name == key)?;
        self.values.get(&index).map(|(_, origin)| origin)
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `config` with every value set here written over it, in [`KEYS`] order.
    #[must_use]
    pub fn apply(&self, mut config: StreamingConfig) -> StreamingConfig {
        for (index, (value, _)) in &self.values {
            (KEYS[*index].apply)(&mut config, value);
        }
        config
    }
}

impl StreamingConfig {
    /// The defaults with the TOML file at `path` and then the `WEIR_…` environment variables
    /// written over them (see [`crate::config_file`]), storing in `storage`.
    ///
    /// # Errors
    ///
    /// See [`load`]: one sentence naming the key and the file or variable.
    pub fn from_toml_file(
        path: impl AsRef<Path>,
        storage: crate::Storage,
    ) -> Result<StreamingConfig, ConfigFileError> {
        Ok(load(Some(path.as_ref()))?.apply(StreamingConfig::new(storage)))
    }
}

/// The known key closest to `name`, if it is close.
fn closest(name: &str) -> Option<String> {
    let limit = (name.len() / 3).max(2);
    KEYS.iter()
        .map(|k| (edit_distance(name, k.name), k.name))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, name)| name.to_owned())
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// What is wrong with a value of `kind`: the end of the error sentence.
fn problem(kind: KeyKind) -> String {
    match kind {
        KeyKind::Whole { min: 0, .. } => "is not a whole number".to_owned(),
        KeyKind::Whole { min, .. } => format!("is not a whole number of at least {min}"),
        KeyKind::Bool => "is not true or false".to_owned(),
        KeyKind::Rate => "is not a number above zero or \"unlimited\"".to_owned(),
        KeyKind::PositiveNumber => "is not a number above zero".to_owned(),
        KeyKind::Gain => "is not a number of zero or more".to_owned(),
        KeyKind::Fraction => "is not a number from 0 to 1".to_owned(),
        KeyKind::Addr => "is not a socket address such as \"127.0.0.1:7070\"".to_owned(),
        KeyKind::Text => "is not a string".to_owned(),
        KeyKind::OneOf(words) => {
            let words: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
            format!("is not one of {}", words.join(", "))
        }
    }
}

/// A value of `kind` from the file.
fn from_toml(kind: KeyKind, value: &toml::Value) -> Result<Value, String> {
    let parsed = match (kind, value) {
        (KeyKind::Whole { .. }, toml::Value::Integer(n)) => {
            u64::try_from(*n).ok().map(Value::Whole)
        }
        (KeyKind::Bool, toml::Value::Boolean(b)) => Some(Value::Bool(*b)),
        (
            KeyKind::Rate | KeyKind::PositiveNumber | KeyKind::Gain | KeyKind::Fraction,
            toml::Value::Integer(n),
        ) => Some(Value::Number(*n as f64)),
        (
            KeyKind::Rate | KeyKind::PositiveNumber | KeyKind::Gain | KeyKind::Fraction,
            toml::Value::Float(x),
        ) => Some(Value::Number(*x)),
        (KeyKind::Rate, toml::Value::String(s)) if s == "unlimited" => Some(Value::Rate(None)),
        (KeyKind::Addr, toml::Value::String(s)) => s.parse().ok().map(Value::Addr),
        (KeyKind::Text, toml::Value::String(s)) => Some(Value::Text(s.clone())),
        (KeyKind::OneOf(words), toml::Value::String(s)) if words.contains(&s.as_str()) => {
            Some(Value::Text(s.clone()))
        }
        _ => None,
    };
    parsed
        .and_then(|v| check(kind, v))
        .ok_or_else(|| problem(kind))
}

/// A value of `kind` from an environment variable or a flag.
fn from_text(kind: KeyKind, text: &str) -> Result<Value, String> {
    let text = text.trim();
    let parsed = match kind {
        KeyKind::Whole { .. } => text.parse().ok().map(Value::Whole),
        KeyKind::Bool => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        KeyKind::Rate if text == "unlimited" => Some(Value::Rate(None)),
        KeyKind::Rate | KeyKind::PositiveNumber | KeyKind::Gain | KeyKind::Fraction => {
            text.parse().ok().map(Value::Number)
        }
        KeyKind::Addr => text.parse().ok().map(Value::Addr),
        KeyKind::Text => Some(Value::Text(text.to_owned())),
        KeyKind::OneOf(words) => words.contains(&text).then(|| Value::Text(text.to_owned())),
    };
    parsed
        .and_then(|v| check(kind, v))
        .ok_or_else(|| problem(kind))
}

/// `value` if it is in `kind`'s range (a rate as `Value::Rate`).
fn check(kind: KeyKind, value: Value) -> Option<Value> {
    match (kind, value) {
        (KeyKind::Whole { min, max }, Value::Whole(n)) => {
            (min..=max).contains(&n).then_some(Value::Whole(n))
        }
        (KeyKind::Rate, Value::Number(x)) => {
            (x.is_finite() && x > 0.0).then_some(Value::Rate(Some(x)))
        }
        (KeyKind::PositiveNumber, Value::Number(x)) => {
            (x.is_finite() && x > 0.0).then_some(Value::Number(x))
        }
        (KeyKind::Gain, Value::Number(x)) => {
            (x.is_finite() && x >= 0.0).then_some(Value::Number(x))
        }
        (KeyKind::Fraction, Value::Number(x)) => {
            (0.0..=1.0).contains(&x).then_some(Value::Number(x))
        }
        (_, value) => Some(value),
    }
}

#[cfg(test)]
mod tests;
