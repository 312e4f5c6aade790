//! The user's choice of state backend ([`StateBackend`]), one per context: every stateful
//! operator of the context keeps its state there.
//!
//! Invariant: the choice changes where state lives, never what it is — a checkpoint taken with
//! one backend restores with the other (state is checkpointed in one encoding).

use std::path::PathBuf;

/// Where the stateful operators of a context keep their per-key state
/// ([`StreamingConfig::state_backend`](crate::StreamingConfig::state_backend); the
/// configuration file's `state_backend`, `state_dir` and `state_cache_bytes` keys).
///
/// Either way, state is checkpointed (in the same encoding: a checkpoint taken with one
/// backend restores with the other) and restored from the checkpoint at every start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateBackend {
    /// Every version of every partition's state in memory (the default): the fastest, and
    /// state must fit in memory.
    #[default]
    Memory,
    /// The state as of the last checkpoint in an embedded on-disk B-tree ([redb]), one file
    /// per operator under [`DiskStateOptions::dir`], read through a cache of
    /// [`DiskStateOptions::cache_bytes`]; only the changes of the batches since the last
    /// checkpoint are in memory. For state larger than memory. The files are a working copy,
    /// not a checkpoint: they are deleted when the context is dropped and rebuilt from the
    /// checkpoint at every start.
    ///
    /// [redb]: https://docs.rs/redb
    Disk(DiskStateOptions),
}

/// Settings of [`StateBackend::Disk`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskStateOptions {
    /// The local directory the state files are created in (created if missing). Default: the
    /// system's temporary directory. Not the checkpoint directory: these files are a working
    /// copy, rebuilt from the checkpoint at every start.
    pub dir: PathBuf,
    /// The page cache of each operator's state file, in bytes. Default: 64 MiB.
    pub cache_bytes: usize,
    /// Whether each fold of a batch into the state file first hands the memory freed since
    /// the last one back to the system (glibc's `malloc_trim`; nothing elsewhere). glibc keeps
    /// what a thread freed in that thread's arena, so a process whose batches come and go
    /// otherwise grows far beyond its live heap (docs/operations.md, "Memory"). Default: true.
    pub release_memory: bool,
}

impl Default for DiskStateOptions {
    fn default() -> Self {
        DiskStateOptions {
            dir: std::env::temp_dir(),
            cache_bytes: 64 << 20,
            release_memory: true,
        }
    }
}

impl DiskStateOptions {
    /// The defaults, with state files under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskStateOptions {
            dir: dir.into(),
            ..DiskStateOptions::default()
        }
    }

    /// Sets [`cache_bytes`](Self::cache_bytes).
    #[must_use]
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Sets [`release_memory`](Self::release_memory).
    #[must_use]
    pub fn release_memory(mut self, release: bool) -> Self {
        self.release_memory = release;
        self
    }
}

impl StateBackend {
    /// The backend's name, as the configuration file's `state_backend` key spells it.
    pub fn name(&self) -> &'static str {
        match self {
            StateBackend::Memory => "memory",
            StateBackend::Disk(_) => "disk",
        }
    }
}
