//! `weir checkpoints list` and `weir checkpoints show`: read-only, straight from the files.
//!
//! The store itself is not opened (opening removes temporary files, which could be a live
//! writer's): the files are listed and decoded with the checkpoint format's reader.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use weir_actors::checkpoint::{CheckpointData, CheckpointId, StateData};

use super::format::{bytes, clock};

/// `DIR/checkpoints` if it exists, else `DIR`.
fn store_dir(dir: &Path) -> PathBuf {
    let sub = dir.join("checkpoints");
    if sub.is_dir() { sub } else { dir.to_path_buf() }
}

/// One checkpoint file: its id, size and what decoding it gave.
#[derive(Debug)]
pub(super) struct Found {
    /// Its id.
    pub id: CheckpointId,
    /// Its size in bytes.
    pub size: u64,
    /// Its content, or why it cannot be used.
    pub data: Result<CheckpointData, String>,
}

/// The checkpoints in `dir`, ascending by id.
///
/// # Errors
///
/// The directory cannot be listed.
pub(super) fn read_all(dir: &Path) -> anyhow::Result<Vec<Found>> {
    let dir = store_dir(dir);
    let entries = std::fs::read_dir(&dir)
        .with_context(|| format!("could not list the checkpoints in `{}`", dir.display()))?;
    let mut ids: Vec<CheckpointId> = entries
        .filter_map(Result::ok)
        .filter_map(|e| CheckpointId::from_file_name(&e.file_name().to_string_lossy()))
        .collect();
    ids.sort_unstable();
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        let path = dir.join(id.file_name());
        let raw = match std::fs::read(&path) {
            Ok(raw) => raw,
            // Removed by retention meanwhile.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                return Err(err).with_context(|| format!("could not read `{}`", path.display()));
            }
        };
        found.push(Found {
            id,
            size: raw.len() as u64,
            data: CheckpointData::decode(&raw).map_err(|e| e.to_string()),
        });
    }
    Ok(found)
}

/// Prints one line per checkpoint; `*` marks the one a restart would restore.
///
/// # Errors
///
/// The directory cannot be read.
pub(super) fn list(dir: &Path) -> anyhow::Result<()> {
    let found = read_all(dir)?;
    if found.is_empty() {
        println!("no checkpoints in {}", store_dir(dir).display());
        return Ok(());
    }
    let latest = found.iter().rev().find(|f| f.data.is_ok()).map(|f| f.id);
    println!(
        "  {:>6}  {:>10}  {:<12}  {:>7}  {:>9}  status",
        "id", "size", "batch time", "pending", "operators"
    );
    for f in &found {
        let mark = if Some(f.id) == latest { '*' } else { ' ' };
        match &f.data {
            Ok(data) => println!(
                "{mark} {:>6}  {:>10}  {:<12}  {:>7}  {:>9}  valid",
                f.id.0,
                bytes(f.size),
                clock(data.checkpoint_time_ms),
                data.pending_batches.len(),
                data.operator_state.len()
            ),
            Err(reason) => println!(
                "{mark} {:>6}  {:>10}  {:<12}  {:>7}  {:>9}  invalid: {reason}",
                f.id.0,
                bytes(f.size),
                "-",
                "-",
                "-"
            ),
        }
    }
    if latest.is_some() {
        println!("(* the checkpoint a restart restores)");
    } else {
        println!("no valid checkpoint: a restart would refuse to start");
    }
    Ok(())
}

/// Decodes and prints checkpoint `id` (default: the newest valid one).
///
/// # Errors
///
/// The checkpoint does not exist or is invalid, or the directory cannot be read.
pub(super) fn show(dir: &Path, id: Option<u64>) -> anyhow::Result<()> {
    let found = read_all(dir)?;
    let chosen = match id {
        Some(id) => found.iter().find(|f| f.id.0 == id).with_context(|| {
            format!(
                "there is no checkpoint {id} in `{}`",
                store_dir(dir).display()
            )
        })?,
        None => match found.iter().rev().find(|f| f.data.is_ok()) {
            Some(f) => f,
            None if found.is_empty() => {
                bail!("there are no checkpoints in `{}`", store_dir(dir).display())
            }
            None => bail!(
                "none of the {} checkpoints in `{}` is valid",
                found.len(),
                store_dir(dir).display()
            ),
        },
    };
    let data = match &chosen.data {
        Ok(data) => data,
        Err(reason) => bail!("checkpoint {} is invalid: {reason}", chosen.id),
    };
    let state_dir = store_dir(dir).join("state");
    println!("checkpoint {} ({})", chosen.id, bytes(chosen.size));
    println!(
        "  batch time       {} ({} ms)",
        clock(data.checkpoint_time_ms),
        data.checkpoint_time_ms
    );
    println!("  batch interval   {} ms", data.batch_interval_ms);
    println!("  timer origin     {} ms", data.zero_time_ms);
    println!("  graph            {:#018x}", data.graph_fingerprint);
    let pending: Vec<String> = data.pending_batches.iter().map(|t| clock(*t)).collect();
    println!(
        "  pending batches  {}{}",
        data.pending_batches.len(),
        if pending.is_empty() {
            String::new()
        } else {
            format!(": {}", pending.join(", "))
        }
    );
    // The effective configuration of the process that wrote it, named as the keys of a
    // configuration file (`weir::config_file`).
    println!(
        "  settings         {} (the configuration it was written with)",
        data.settings.len()
    );
    for (key, value) in &data.settings {
        println!("    {key} = {value}");
    }
    println!("  source offsets   {}", data.source_offsets.len());
    for o in &data.source_offsets {
        println!(
            "    {} partition {}: next offset {}",
            o.source, o.partition, o.offset
        );
    }
    println!("  operator state   {}", data.operator_state.len());
    for op in &data.operator_state {
        let place = match &op.data {
            StateData::Inline(b) => format!("{} inline", bytes(b.len() as u64)),
            StateData::File(f) => {
                let present = if state_dir.join(&f.name).is_file() {
                    "present"
                } else {
                    "MISSING"
                };
                format!(
                    "{} in state file {} (crc32c {:#010x}, {present})",
                    bytes(f.len),
                    f.name,
                    f.crc32c
                )
            }
            StateData::Chain(files) => {
                let missing = files
                    .iter()
                    .filter(|f| !state_dir.join(&f.name).is_file())
                    .count();
                let total: u64 = files.iter().map(|f| f.len).sum();
                format!(
                    "{} in a chain of {} state files (a base and {} deltas; {missing} missing)",
                    bytes(total),
                    files.len(),
                    files.len().saturating_sub(1)
                )
            }
        };
        println!("    {}  {}  {place}", op.operator_id, op.type_name);
    }
    Ok(())
}
