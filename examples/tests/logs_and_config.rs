//! What operators rely on in every example: `--log-format json` writes one JSON object a line
//! on stderr, a batch's lines carrying its `batch_time_ms`; `--config FILE` sets the engine,
//! with a `WEIR_…` variable over the file and an explicit flag over both; a bad file stops
//! the program with one sentence naming the key and the file.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use weir_actors::checkpoint::{CheckpointData, CheckpointId};

/// Runs `word_count` on a directory of no files, in `dir`, with `args` and `env`, to its end.
fn word_count(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let input = dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_word_count"));
    command
        .current_dir(dir)
        .args(["--input-dir", input.to_str().unwrap(), "--quiet"])
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .env_remove("WEIR_LOG_FORMAT")
        .env_remove("WEIR_EXECUTORS");
    for (name, value) in env {
        command.env(name, value);
    }
    // Bounded by --max-batches.
    command.output().unwrap()
}

/// The settings recorded in the newest checkpoint of `dir/weir-data/checkpoint`.
fn recorded_settings(dir: &Path) -> BTreeMap<String, String> {
    let checkpoints = dir.join("weir-data/checkpoint/checkpoints");
    let newest = std::fs::read_dir(&checkpoints)
        .unwrap()
        .filter_map(|e| CheckpointId::from_file_name(&e.unwrap().file_name().to_string_lossy()))
        .max()
        .unwrap();
    let raw = std::fs::read(checkpoints.join(newest.file_name())).unwrap();
    CheckpointData::decode(&raw).unwrap().settings
}

#[test]
fn json_logs_are_one_object_a_line_and_a_batch_s_lines_carry_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = word_count(
        dir.path(),
        &[
            "--log-format",
            "json",
            "--batch-ms",
            "100",
            "--max-batches",
            "2",
        ],
        &[("RUST_LOG", "info")],
    );
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let mut in_a_batch = 0;
    for line in stderr.lines() {
        let json: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        assert!(
            json["level"].is_string() && json["fields"].is_object(),
            "{line}"
        );
        if json["span"]["batch_time_ms"].is_u64() {
            assert_eq!(json["span"]["name"], "batch", "{line}");
            in_a_batch += 1;
        }
    }
    assert!(in_a_batch > 0, "no line carries batch_time_ms:\n{stderr}");

    // WEIR_LOG_FORMAT is the flag's default.
    let dir = tempfile::tempdir().unwrap();
    let out = word_count(
        dir.path(),
        &["--batch-ms", "100", "--max-batches", "1"],
        &[("RUST_LOG", "info"), ("WEIR_LOG_FORMAT", "json")],
    );
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.is_empty());
    for line in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

#[test]
fn config_file_sets_the_engine_and_the_environment_then_flags_win_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weir.toml");
    std::fs::write(
        &file,
        "batch_interval_ms = 150\nexecutors = 3\nparallelism = 2\ncheckpoints_retained = 3\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let out = word_count(
        dir.path(),
        &["--config", config, "--max-batches", "2"],
        &[("WEIR_EXECUTORS", "2")],
    );
    assert!(out.status.success(), "{out:?}");
    let settings = recorded_settings(dir.path());
    assert_eq!(settings["batch_interval_ms"], "150", "the file");
    assert_eq!(settings["checkpoints_retained"], "3", "the file");
    assert_eq!(settings["parallelism"], "2", "the file");
    assert_eq!(settings["executors"], "2", "the environment over the file");

    // An explicit flag over both; and a flag left at its default changes nothing.
    let dir = tempfile::tempdir().unwrap();
    let out = word_count(
        dir.path(),
        &[
            "--config",
            config,
            "--batch-ms",
            "120",
            "--max-batches",
            "2",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let settings = recorded_settings(dir.path());
    assert_eq!(settings["batch_interval_ms"], "120", "the flag");
    assert_eq!(settings["executors"], "3", "the file");
}

#[test]
fn a_bad_config_file_stops_the_program_with_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weir.toml");
    std::fs::write(&file, "batch_intervall_ms = 150\n").unwrap();
    let out = word_count(
        dir.path(),
        &["--config", file.to_str().unwrap(), "--max-batches", "1"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim_end(),
        format!(
            "word_count: {}: unknown key `batch_intervall_ms` (did you mean \
             `batch_interval_ms`?)",
            file.display()
        )
    );

    let out = word_count(
        dir.path(),
        &["--max-batches", "1"],
        &[("WEIR_EXECUTORS", "two")],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stderr).unwrap().trim_end(),
        "word_count: WEIR_EXECUTORS: \"two\" is not a whole number of at least 1"
    );
}
