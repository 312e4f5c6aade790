//! Failpoints at the I/O edges of the durable paths.
//!
//! With the `failpoints` feature, tests configure these names through the `fail` crate; without
//! it every check compiles to `false`. The names follow `component::operation`, and every one of
//! them is listed in `docs/testing.md`.

/// The failpoint names one component uses at its storage edges.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Failpoints {
    /// Before bytes are written: the write fails with nothing written.
    pub(crate) write: &'static str,
    /// A write that stops half-way and then fails (a torn write).
    pub(crate) torn_write: &'static str,
    /// The file's fsync fails.
    pub(crate) fsync: &'static str,
    /// The directory's fsync fails.
    pub(crate) dir_fsync: &'static str,
    /// Between the durable temp file and the rename onto the final name (`None` for a
    /// component that never renames).
    pub(crate) rename: Option<&'static str>,
    /// An object write fails at `close()` (object-store mode).
    pub(crate) close: &'static str,
    /// A local write fails with "no space left on device" (`ENOSPC`), nothing written.
    pub(crate) disk_full: &'static str,
}

/// The WAL's failpoints.
pub(crate) const WAL: Failpoints = Failpoints {
    write: "wal::write",
    torn_write: "wal::write::torn",
    fsync: "wal::fsync",
    dir_fsync: "wal::dir_fsync",
    // The WAL appends to segments and writes whole objects; it never renames.
    rename: None,
    close: "wal::close",
    disk_full: "wal::write::enospc",
};

/// The checkpoint store's failpoints.
pub(crate) const CHECKPOINT: Failpoints = Failpoints {
    write: "checkpoint::write",
    torn_write: "checkpoint::write::torn",
    fsync: "checkpoint::fsync",
    dir_fsync: "checkpoint::dir_fsync",
    rename: Some("checkpoint::rename"),
    close: "checkpoint::close",
    disk_full: "checkpoint::write::enospc",
};

/// Whether the failpoint `name` is configured to fire now.
#[inline]
pub(crate) fn fired(name: &'static str) -> bool {
    #[cfg(feature = "failpoints")]
    {
        fail::fail_point!(name, |_| true);
    }
    let _ = name;
    false
}

/// Whether the failpoint `name` fires now for `path`: configured as `return`, for every path;
/// as `return(TEXT)`, only for paths that contain `TEXT` (e.g. `return(receiver-wal)` fails
/// the receiver WAL's fsyncs and not the block tracker's).
#[inline]
pub(crate) fn fired_at(name: &'static str, path: &std::path::Path) -> bool {
    #[cfg(feature = "failpoints")]
    {
        fail::fail_point!(name, |only: Option<String>| {
            only.is_none_or(|text| path.to_string_lossy().contains(&text))
        });
    }
    let _ = (name, path);
    false
}

/// `Err` with the operating system's `ENOSPC` error if the disk-full failpoint of `fps` fires.
pub(crate) fn disk_full(
    fps: Failpoints,
    op: &'static str,
    path: &std::path::Path,
) -> Result<(), super::location::StorageError> {
    if fired(fps.disk_full) {
        // 28 is ENOSPC on Linux, whose error the kernel gives a write to a full filesystem.
        return Err(super::location::StorageError::Io {
            op,
            path: path.to_path_buf(),
            source: std::io::Error::from_raw_os_error(28),
        });
    }
    Ok(())
}
