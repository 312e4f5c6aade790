//! The configuration file: every key, the precedence, and the error sentences.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::Duration;

use super::*;
use crate::Storage;

fn defaults() -> StreamingConfig {
    StreamingConfig::new(Storage::memory())
}

fn file(text: &str) -> Result<ConfigOverrides, ConfigFileError> {
    ConfigOverrides::from_toml_str(text, "weir.toml")
}

fn env(vars: &[(&str, &str)]) -> Result<ConfigOverrides, ConfigFileError> {
    ConfigOverrides::from_env_vars(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
}

/// `key = value` as a TOML document.
fn toml_line(key: &str, value: &str) -> String {
    format!("{key} = {value}\n")
}

/// A value of `kind` that no default has, as TOML and as an environment variable's text.
fn sample(kind: KeyKind) -> (String, String) {
    let (toml, text) = match kind {
        KeyKind::Whole { min, .. } => ((min + 12_345).to_string(), (min + 12_345).to_string()),
        KeyKind::Bool => ("true".into(), "true".into()),
        KeyKind::Rate | KeyKind::PositiveNumber => ("123.5".into(), "123.5".into()),
        KeyKind::Gain => ("0.75".into(), "0.75".into()),
        KeyKind::Fraction => ("0.55".into(), "0.55".into()),
        KeyKind::Addr => ("\"127.0.0.1:7171\"".into(), "127.0.0.1:7171".into()),
        KeyKind::Text => ("\"x-\"".into(), "x-".into()),
        KeyKind::OneOf(words) => {
            let last = words.last().copied().unwrap_or_default();
            (format!("\"{last}\""), last.to_owned())
        }
    };
    (toml, text)
}

#[test]
fn every_key_changes_the_configuration_the_same_way_from_the_file_and_the_environment() {
    let base = format!("{:?}", defaults());
    for key in KEYS {
        let (toml, text) = sample(key.kind);
        let from_file = file(&toml_line(key.name, &toml)).unwrap().apply(defaults());
        let from_env = env(&[(&key.env_var(), &text)]).unwrap().apply(defaults());
        assert_eq!(
            format!("{from_file:?}"),
            format!("{from_env:?}"),
            "{}: the file and {} disagree",
            key.name,
            key.env_var()
        );
        if key.kind == KeyKind::Bool {
            // Whichever the default is, `true` and `false` must give different configurations.
            let off = file(&toml_line(key.name, "false"))
                .unwrap()
                .apply(defaults());
            assert_ne!(format!("{off:?}"), format!("{from_file:?}"), "{}", key.name);
        } else {
            assert_ne!(
                format!("{from_file:?}"),
                base,
                "{} changed nothing",
                key.name
            );
        }
    }
}

#[test]
fn every_key_has_its_own_environment_variable() {
    let mut vars: Vec<String> = KEYS.iter().map(Key::env_var).collect();
    vars.sort();
    vars.dedup();
    assert_eq!(vars.len(), KEYS.len());
    let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    let checkpoint = KEYS
        .iter()
        .find(|k| k.name == "checkpoint_interval_ms")
        .unwrap();
    assert_eq!(checkpoint.env_var(), "WEIR_CHECKPOINT_INTERVAL_MS");
    assert!(names.contains(&"batch_interval_ms"));
}

#[test]
fn a_full_file_sets_each_field() {
    let overrides = file(
        r#"
batch_interval_ms = 500
block_interval_ms = 50
max_block_bytes = 1048576
block_store_bytes = 67108864
receiver_wal = false
executors = 3
parallelism = 6
max_batches_in_flight = 2
max_pending_batches = 8
max_task_attempts = 5
graceful_stop_timeout_ms = 7000
stop_gracefully_on_shutdown = true
allow_unmatched_state = true
receiver_restart_delay_ms = 250
name_prefix = "job-a-"
seed = 42
planning_timeout_ms = 2500
receiver_batch_max_bytes = 1048576
planning_retry_initial_ms = 20
planning_retry_max_ms = 800
receiver_max_rate = 1000
max_rate_per_partition = 250.5
min_rate_per_partition = 2
backpressure = true
backpressure_initial_rate = "unlimited"
backpressure_pid_proportional = 0.9
backpressure_pid_integral = 0.1
backpressure_pid_derivative = 0.05
backpressure_pid_min_rate = 10
checkpoint_interval_ms = 2000
checkpoint_min_pause_ms = 100
checkpoint_timeout_ms = 30000
checkpoint_tolerable_failures = 1
checkpoint_max_concurrent = 1
checkpoints_retained = 4
control_addr = "0.0.0.0:7070"
control_allow_remote = true
control_max_connections = 8
driver_policy_max_restarts = 9
driver_policy_period_ms = 120000
driver_policy_backoff_initial_ms = 50
driver_policy_backoff_max_ms = 5000
driver_policy_backoff_multiplier = 3
driver_policy_backoff_jitter = 0.1
driver_policy_backoff_reset_after_ms = 30000
receiver_policy_max_restarts = 2
executor_policy_backoff_jitter = 0
"#,
    )
    .unwrap();
    let c = overrides.apply(defaults());
    let e = &c.engine;
    assert_eq!(e.batch_interval, Duration::from_millis(500));
    assert_eq!(e.block_interval, Duration::from_millis(50));
    assert_eq!(e.max_block_bytes, 1 << 20);
    assert_eq!(e.block_store_bytes, 64 << 20);
    assert!(!e.receiver_wal);
    assert_eq!(e.executors, 3);
    assert_eq!(c.parallelism, 6);
    assert_eq!(e.max_batches_in_flight, 2);
    assert_eq!(e.max_pending_batches, 8);
    assert_eq!(e.max_task_attempts, 5);
    assert_eq!(e.graceful_stop_timeout, Duration::from_secs(7));
    assert!(c.stop_gracefully_on_shutdown);
    assert!(c.allow_unmatched_state);
    assert_eq!(e.receiver_restart_delay, Duration::from_millis(250));
    assert_eq!(e.name_prefix, "job-a-");
    assert_eq!(e.seed, 42);
    assert_eq!(e.planning.timeout, Duration::from_millis(2500));
    assert_eq!(e.receiver_batch_max_bytes, 1 << 20);
    assert_eq!(e.planning.retry_initial, Duration::from_millis(20));
    assert_eq!(e.planning.retry_max, Duration::from_millis(800));
    assert_eq!(c.rate.receiver_max_rate, Some(1000.0));
    assert_eq!(c.rate.max_rate_per_partition, Some(250.5));
    assert_eq!(c.rate.min_rate_per_partition, 2.0);
    let bp = c.rate.backpressure.unwrap();
    assert_eq!(bp.initial_rate, None);
    assert_eq!(
        (
            bp.pid.proportional,
            bp.pid.integral,
            bp.pid.derivative,
            bp.pid.min_rate
        ),
        (0.9, 0.1, 0.05, 10.0)
    );
    let p = e.checkpoint_policy;
    assert_eq!(p.interval, Duration::from_secs(2));
    assert_eq!(p.min_pause, Duration::from_millis(100));
    assert_eq!(p.timeout, Duration::from_secs(30));
    assert_eq!(p.tolerable_failures, 1);
    assert_eq!(p.max_concurrent, 1);
    assert_eq!(e.checkpoints_retained, 4);
    assert_eq!(e.control_addr, Some("0.0.0.0:7070".parse().unwrap()));
    assert!(e.control_allow_remote);
    assert_eq!(e.control_max_connections, 8);
    let d = &e.driver_policy;
    assert_eq!(d.intensity.max_restarts, 9);
    assert_eq!(d.intensity.period, Duration::from_secs(120));
    assert_eq!(d.backoff.initial, Duration::from_millis(50));
    assert_eq!(d.backoff.max, Duration::from_secs(5));
    assert_eq!(d.backoff.multiplier, 3);
    assert_eq!(d.backoff.jitter, 0.1);
    assert_eq!(d.backoff.reset_after, Duration::from_secs(30));
    assert_eq!(e.receiver_policy.intensity.max_restarts, 2);
    assert_eq!(e.executor_policy.backoff.jitter, 0.0);
    // What the file did not name keeps its default.
    assert_eq!(
        e.receiver_policy.backoff,
        defaults().engine.receiver_policy.backoff
    );
}

#[test]
fn backpressure_keys_turn_it_on_and_enabled_false_wins() {
    let on = file("backpressure_pid_min_rate = 5\n")
        .unwrap()
        .apply(defaults());
    assert_eq!(on.rate.backpressure.unwrap().pid.min_rate, 5.0);
    let off = file("backpressure = false\nbackpressure_pid_min_rate = 5\n")
        .unwrap()
        .apply(defaults());
    assert_eq!(off.rate.backpressure, None);
}

#[test]
fn the_environment_wins_over_the_file_and_a_flag_over_both() {
    let from_file = file("batch_interval_ms = 500\nexecutors = 2\nparallelism = 3\n").unwrap();
    let from_env = env(&[
        ("WEIR_BATCH_INTERVAL_MS", "700"),
        ("WEIR_EXECUTORS", "5"),
        ("WEIR_LOG_FORMAT", "json"),
        ("WEIR_CHAOS_SEED", "not a key"),
    ])
    .unwrap();
    let mut merged = from_file.merge(from_env);
    merged.set("batch_interval_ms", "900").unwrap();
    let c = merged.apply(defaults());
    assert_eq!(c.engine.batch_interval, Duration::from_millis(900), "flag");
    assert_eq!(c.engine.executors, 5, "environment over file");
    assert_eq!(c.parallelism, 3, "file over default");
    assert_eq!(c.engine.max_pending_batches, 4, "default");
    assert_eq!(merged.origin("batch_interval_ms"), Some(&Origin::Flag));
    assert_eq!(
        merged.origin("executors"),
        Some(&Origin::Env("WEIR_EXECUTORS".into()))
    );
    assert_eq!(
        merged.origin("parallelism"),
        Some(&Origin::File("weir.toml".into()))
    );
    assert_eq!(merged.origin("seed"), None);
}

#[test]
fn a_program_default_is_kept_unless_something_sets_the_key() {
    // What an example does: its own default first, then the overrides.
    let program = defaults().batch_interval(Duration::from_millis(250));
    let none = ConfigOverrides::default().apply(program.clone());
    assert_eq!(none.engine.batch_interval, Duration::from_millis(250));
    let set = file("batch_interval_ms = 100\n").unwrap().apply(program);
    assert_eq!(set.engine.batch_interval, Duration::from_millis(100));
}

#[test]
fn the_graceful_stop_timeout_follows_the_batch_interval_unless_set() {
    let c = file("batch_interval_ms = 300\n").unwrap().apply(defaults());
    assert_eq!(c.engine.graceful_stop_timeout, Duration::from_secs(3));
    let c = file("graceful_stop_timeout_ms = 1000\nbatch_interval_ms = 300\n")
        .unwrap()
        .apply(defaults());
    assert_eq!(c.engine.graceful_stop_timeout, Duration::from_secs(1));
}

#[test]
fn from_toml_file_reads_the_file_then_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, "executors = 2\ncheckpoints_retained = 3\n").unwrap();
    let c = StreamingConfig::from_toml_file(&path, Storage::memory()).unwrap();
    assert_eq!(c.engine.executors, 2);
    assert_eq!(c.engine.checkpoints_retained, 3);
    let missing = dir.path().join("nope.toml");
    let err = StreamingConfig::from_toml_file(&missing, Storage::memory()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}: cannot be read: ", missing.display())),
        "{text}"
    );
}

/// The error's sentence.
fn error(result: Result<ConfigOverrides, ConfigFileError>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn an_unknown_key_names_the_file_and_the_closest_key() {
    assert_eq!(
        error(file("batch_intervall_ms = 500\n")),
        "weir.toml: unknown key `batch_intervall_ms` (did you mean `batch_interval_ms`?)"
    );
    assert_eq!(
        error(file("checkpoint_intervall_ms = 5\n")),
        "weir.toml: unknown key `checkpoint_intervall_ms` (did you mean \
         `checkpoint_interval_ms`?)"
    );
    // Keys are flat: a table is an unknown key too.
    assert_eq!(
        error(file("[checkpoint]\ninterval_ms = 5\n")),
        "weir.toml: unknown key `checkpoint`"
    );
    assert_eq!(
        error(file("completely_different = 1\n")),
        "weir.toml: unknown key `completely_different`"
    );
}

#[test]
fn a_bad_value_names_the_key_the_file_and_what_is_wrong() {
    let cases = [
        (
            "executors = \"two\"\n",
            "weir.toml: `executors` = \"two\" is not a whole number of at least 1",
        ),
        (
            "executors = 0\n",
            "weir.toml: `executors` = 0 is not a whole number of at least 1",
        ),
        (
            "seed = -1\n",
            "weir.toml: `seed` = -1 is not a whole number",
        ),
        (
            "max_task_attempts = 5000000000\n",
            "weir.toml: `max_task_attempts` = 5000000000 is not a whole number of at least 1",
        ),
        (
            "receiver_wal = \"yes\"\n",
            "weir.toml: `receiver_wal` = \"yes\" is not true or false",
        ),
        (
            "receiver_max_rate = 0\n",
            "weir.toml: `receiver_max_rate` = 0 is not a number above zero or \"unlimited\"",
        ),
        (
            "control_addr = \"localhost\"\n",
            "weir.toml: `control_addr` = \"localhost\" is not a socket address such as \
             \"127.0.0.1:7070\"",
        ),
        (
            "driver_policy_backoff_jitter = 1.5\n",
            "weir.toml: `driver_policy_backoff_jitter` = 1.5 is not a number from 0 to 1",
        ),
        (
            "name_prefix = 3\n",
            "weir.toml: `name_prefix` = 3 is not a string",
        ),
    ];
    for (text, sentence) in cases {
        assert_eq!(error(file(text)), sentence, "{text}");
    }
}

#[test]
fn invalid_toml_names_the_file_line_and_column() {
    let sentence = error(file("executors = 2\nbatch_interval_ms = = 5\n"));
    assert!(
        sentence.starts_with("weir.toml: invalid TOML at line 2, column "),
        "{sentence}"
    );
    assert!(!sentence.contains('\n'), "one line: {sentence}");
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    assert_eq!(
        error(env(&[("WEIR_EXECUTORS", "two")])),
        "WEIR_EXECUTORS: \"two\" is not a whole number of at least 1"
    );
    assert_eq!(
        error(env(&[("WEIR_CHECKPOINT_INTERVAL_MS", "1s")])),
        "WEIR_CHECKPOINT_INTERVAL_MS: \"1s\" is not a whole number"
    );
    assert_eq!(
        error(env(&[("WEIR_RECEIVER_WAL", "1")])),
        "WEIR_RECEIVER_WAL: \"1\" is not true or false"
    );
}

#[test]
fn a_flag_for_an_unknown_key_or_with_a_bad_value_is_refused() {
    let mut overrides = ConfigOverrides::default();
    assert_eq!(
        overrides.set("batch_ms", "5").unwrap_err().to_string(),
        "a flag: unknown key `batch_ms`"
    );
    assert_eq!(
        overrides.set("executors", "-1").unwrap_err().to_string(),
        "`executors`: \"-1\" is not a whole number of at least 1"
    );
    assert!(overrides.is_empty());
}

#[test]
fn what_a_checkpoint_records_is_named_as_the_keys_that_set_it() {
    // So `weir checkpoints show` prints names an operator can put in the file.
    let mut config = defaults();
    config.rate.backpressure = Some(crate::backpressure::BackpressureConfig::default());
    for name in config.settings().keys() {
        // The PID gains are recorded together, as one value.
        if name == "backpressure_pid" {
            continue;
        }
        assert!(
            KEYS.iter().any(|k| k.name == name),
            "the checkpoint records `{name}`, which is no configuration key"
        );
    }
}

/// docs/operations.md, read at test time (it is not part of the published crate).
fn operations_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn the_operations_guide_lists_every_key_with_its_variable_and_its_example_file_loads() {
    let doc = operations_md();
    for key in KEYS {
        let row = format!("| `{}` |", key.name);
        let line = doc
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("docs/operations.md has no row for `{}`", key.name));
        assert!(
            line.contains(&format!("`{}`", key.env_var())),
            "{line}: not its variable"
        );
    }
    let start = doc.find("```toml\n# weir.toml\n").unwrap() + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let example = file(&doc[start..end]).unwrap();
    assert!(!example.is_empty());
}
