//! Failpoints at the I/O edges of the durable paths: the names each component uses, and the
//! check that asks the `fail` crate whether one fires now.
//!
//! With the `failpoints` feature, tests configure these names through the `fail` crate; without
//! it every check compiles to "not fired", so a [`Failpoints`] costs nothing in a release
//! build. The names follow `component::operation`, and every one of them is listed in
//! `docs/testing.md`. A component that has no failpoint at some edge leaves that field `None`.

/// The failpoint names one component uses at the edges of its durable writes.
///
/// Every function of [`crate::durable`] takes one; each field says where its name
/// fires. The fields are public so that a component outside this crate (the runtime's sink
/// and partitioned log) names its own, starting from [`Failpoints::NONE`]:
///
/// ```
/// use weir_actors::durable::Failpoints;
///
/// const MY_COMPONENT: Failpoints = Failpoints {
///     write: Some("my_component::write"),
///     fsync: Some("my_component::fsync"),
///     ..Failpoints::NONE
/// };
/// assert_eq!(MY_COMPONENT.rename, None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Failpoints {
    /// Before a file's bytes are written: the write fails with nothing written.
    pub write: Option<&'static str>,
    /// A file write that stops half-way and then fails (a torn write).
    pub torn_write: Option<&'static str>,
    /// A file write fails with "no space left on device" (`ENOSPC`), nothing written.
    pub disk_full: Option<&'static str>,
    /// A file's fsync fails. Configured as `return(TEXT)`, it fires only for paths that
    /// contain `TEXT`.
    pub fsync: Option<&'static str>,
    /// The directory fsync that makes a created or renamed name durable fails.
    pub dir_fsync: Option<&'static str>,
    /// Between a durable temp file (or directory) and the rename onto its final name: the
    /// rename fails, nothing renamed.
    pub rename: Option<&'static str>,
    /// Creating a directory fails, nothing created at that level.
    pub create_dir: Option<&'static str>,
    /// Cutting a file to a shorter length fails, nothing cut.
    pub truncate: Option<&'static str>,
    /// Removing names from a directory fails, nothing removed.
    pub remove: Option<&'static str>,
    /// An object write fails at `close()` (object-store mode).
    pub close: Option<&'static str>,
}

impl Failpoints {
    /// No failpoint at any edge.
    pub const NONE: Failpoints = Failpoints {
        write: None,
        torn_write: None,
        disk_full: None,
        fsync: None,
        dir_fsync: None,
        rename: None,
        create_dir: None,
        truncate: None,
        remove: None,
        close: None,
    };
}

/// The WAL's failpoints.
pub(crate) const WAL: Failpoints = Failpoints {
    write: Some("wal::write"),
    torn_write: Some("wal::write::torn"),
    disk_full: Some("wal::write::enospc"),
    fsync: Some("wal::fsync"),
    dir_fsync: Some("wal::dir_fsync"),
    // The WAL appends to segments and writes whole objects; it never renames. Creating its
    // directory, cutting and removing segments have no failpoint.
    close: Some("wal::close"),
    ..Failpoints::NONE
};

/// The checkpoint store's failpoints.
pub(crate) const CHECKPOINT: Failpoints = Failpoints {
    write: Some("checkpoint::write"),
    torn_write: Some("checkpoint::write::torn"),
    disk_full: Some("checkpoint::write::enospc"),
    fsync: Some("checkpoint::fsync"),
    dir_fsync: Some("checkpoint::dir_fsync"),
    rename: Some("checkpoint::rename"),
    // Creating its directories, removing temp files and retired checkpoints have no failpoint.
    close: Some("checkpoint::close"),
    ..Failpoints::NONE
};

/// The name of failpoint `name` if it is set and configured to fire now.
#[inline]
pub(crate) fn fired(name: Option<&'static str>) -> Option<&'static str> {
    let name = name?;
    #[cfg(feature = "failpoints")]
    {
        fail::fail_point!(name, |_| Some(name));
    }
    let _ = name;
    None
}

/// The name of failpoint `name` if it fires now for `path`: configured as `return`, for every
/// path; as `return(TEXT)`, only for paths that contain `TEXT` (e.g. `return(receiver-wal)`
/// fails the receiver WAL's fsyncs and not the block tracker's).
#[inline]
pub(crate) fn fired_at(name: Option<&'static str>, path: &std::path::Path) -> Option<&'static str> {
    let name = name?;
    #[cfg(feature = "failpoints")]
    {
        fail::fail_point!(name, |only: Option<String>| {
            only.is_none_or(|text| path.to_string_lossy().contains(&text))
                .then_some(name)
        });
    }
    let _ = (name, path);
    None
}
