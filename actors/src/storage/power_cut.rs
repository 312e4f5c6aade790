//! A simulated power cut: what the disk holds when the machine loses power, as opposed to what
//! a killed process leaves (a `kill -9` keeps the page cache, so it proves nothing about
//! fsyncs).
//!
//! While a [`PowerCut`] is recording, every durable-file operation under its root directory
//! (the [`durable`](super::durable) module's — every local write of the WAL, the checkpoint
//! store, the sink and the partitioned log goes through it) is also applied to a model of the
//! page cache and the disk:
//!
//! * a file's bytes reach the disk only when the file is fsynced (`sync_data`/`sync_all`);
//!   writes since its last fsync are in the cache only;
//! * a name created, renamed or removed in a directory reaches the disk only when the directory
//!   is fsynced; until then the disk has the directory's previous entries.
//!
//! At a chosen operation (`Options::cut_after`, counted from the start) the disk freezes: the
//! power is gone, and nothing after it reaches the disk, though the test's workload goes on.
//! [`PowerCut::cut`] then rebuilds the root directory as that disk holds it — each file with
//! its last fsynced bytes, plus, with `Options::tear` set, a seeded choice of its unsynced
//! writes that happened to reach the disk whole, torn or not at all — for the component to
//! recover from. `Options::skip_file_fsyncs` and `Options::skip_dir_fsyncs` make those fsyncs
//! reach nothing: with either, the crash tests must fail, which proves that they test them.
//!
//! Model limits, stated: a directory fsync also makes the directory's new entries' *names*
//! durable only (their data needs the file's own fsync, as on Linux); a rename is atomic;
//! the root directory and what was in it before recording started count as durable; writes
//! reach the disk in no particular order (each independently) when torn.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// What a power-cut run does.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// The disk freezes after this many operations (`None`: never; [`PowerCut::cut`] then
    /// gives what the disk holds at the end).
    pub cut_after: Option<u64>,
    /// Unsynced writes may have reached the disk: each, chosen by this seed, whole, as a
    /// prefix, or not at all (`None`: none reached it).
    pub tear: Option<u64>,
    /// File fsyncs make nothing durable (to prove that a crash test catches a missing one).
    pub skip_file_fsyncs: bool,
    /// Directory fsyncs make nothing durable (to prove that a crash test catches a missing
    /// one).
    pub skip_dir_fsyncs: bool,
}

/// An operation of the durable-file module, as the model sees it.
#[derive(Debug)]
pub(crate) enum Op<'a> {
    /// A file was created, or emptied (`O_TRUNC`) if it existed.
    Created(&'a Path),
    /// Bytes were written at an offset.
    Wrote {
        path: &'a Path,
        offset: u64,
        bytes: &'a [u8],
    },
    /// A file's data (and size) were fsynced.
    SyncedFile(&'a Path),
    /// A directory's entries were fsynced.
    SyncedDir(&'a Path),
    /// A directory was created.
    MadeDir(&'a Path),
    /// A file or directory was renamed.
    Renamed { from: &'a Path, to: &'a Path },
    /// A file or a directory tree was removed.
    Removed(&'a Path),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    File(usize),
    Dir(usize),
}

#[derive(Debug, Default)]
struct FileInode {
    /// What the disk holds of it.
    durable: Vec<u8>,
    /// Writes since its last effective fsync, with the operation index of each.
    unsynced: Vec<(u64, u64, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct DirInode {
    live: BTreeMap<OsString, Node>,
    durable: BTreeMap<OsString, Node>,
}

#[derive(Debug)]
struct Model {
    root: PathBuf,
    options: Options,
    ops: u64,
    files: Vec<FileInode>,
    dirs: Vec<DirInode>,
}

/// The offset of an unsynced "write" that is an `O_TRUNC`.
const TRUNCATED: u64 = u64::MAX;

static RECORDING: Mutex<Option<Model>> = Mutex::new(None);

fn recording() -> MutexGuard<'static, Option<Model>> {
    RECORDING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Applies `op` to the model, if one is recording and the path is under its root.
pub(crate) fn record(op: Op<'_>) {
    if let Some(model) = recording().as_mut() {
        model.apply(op);
    }
}

/// A recording power-cut model of one directory; see the [module docs](self). One at a time
/// per process, and never beside a failpoint scenario: it holds a `fail::FailScenario` (which
/// serialises them and clears every failpoint), so a failpoint another test configured cannot
/// fire in the modelled workload, nor the workload use up another test's failures.
pub struct PowerCut {
    root: PathBuf,
    _scenario: fail::FailScenario<'static>,
}

impl std::fmt::Debug for PowerCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerCut")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl PowerCut {
    /// Starts modelling everything written under `root` (an existing directory; what it holds
    /// already counts as durable and is left as it is).
    pub fn start(root: &Path, options: Options) -> PowerCut {
        let scenario = fail::FailScenario::setup();
        let mut model = Model {
            root: root.to_path_buf(),
            options,
            ops: 0,
            files: Vec::new(),
            dirs: vec![DirInode::default()],
        };
        model.adopt_existing(0, root);
        *recording() = Some(model);
        PowerCut {
            root: root.to_path_buf(),
            _scenario: scenario,
        }
    }

    /// How many operations have been recorded so far.
    pub fn ops(&self) -> u64 {
        recording().as_ref().map_or(0, |m| m.ops)
    }

    /// Stops recording and rebuilds the root directory as the disk holds it at the cut: every
    /// entry is removed, and what the disk holds is written back. Returns how many files were
    /// written back.
    ///
    /// # Panics
    ///
    /// If the directory cannot be rebuilt (this is test support).
    pub fn cut(self) -> usize {
        let Some(model) = recording().take() else {
            return 0;
        };
        for entry in std::fs::read_dir(&self.root).expect("list the root") {
            let path = entry.expect("list the root").path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).expect("clear the root");
            } else {
                std::fs::remove_file(&path).expect("clear the root");
            }
        }
        model.write_back(0, &self.root)
    }
}

impl Drop for PowerCut {
    fn drop(&mut self) {
        // A run that never cut (a failed test): stop recording.
        let mut recording = recording();
        if recording.as_ref().is_some_and(|m| m.root == self.root) {
            *recording = None;
        }
    }
}

/// What a workload acknowledged: after how many modelled operations ([`PowerCut::ops`] read
/// when the acknowledgement arrived), and what.
pub type Acks<T> = Vec<(u64, T)>;

/// How run `k` of [`at_every_cut`] cuts: after operation `k`, tearing unsynced writes onto
/// the disk on odd runs.
pub fn cut_at(k: u64) -> Options {
    Options {
        cut_after: Some(k),
        tear: (k % 2 == 1).then_some(k.wrapping_mul(0x9E37_79B9)),
        ..Options::default()
    }
}

/// Runs `workload` (in a fresh directory, which it is given) once without a cut to count its
/// operations, then once for every cut point `k` from 0 to that count ([`cut_at`]); after
/// each, rebuilds the directory as the disk holds it and asks `check`, given what the workload
/// acknowledged and `k`. An acknowledgement counted at most `k` operations must have
/// survived.
///
/// # Panics
///
/// With `check`'s reason and the cut point, at the first cut that `check` refuses; if the
/// workload does fewer than 10 operations (it would test nothing).
pub async fn at_every_cut<T>(
    workload: impl AsyncFn(&Path, &PowerCut) -> Acks<T>,
    check: impl AsyncFn(&Path, &Acks<T>, u64) -> Result<(), String>,
) {
    let total = {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cut = PowerCut::start(dir.path(), Options::default());
        workload(dir.path(), &cut).await;
        cut.ops()
    };
    assert!(
        total >= 10,
        "the workload does too little: {total} operations"
    );
    for k in 0..=total {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cut = PowerCut::start(dir.path(), cut_at(k));
        let acks = workload(dir.path(), &cut).await;
        cut.cut();
        if let Err(why) = check(dir.path(), &acks, k).await {
            panic!(
                "power cut after operation {k} of {total} ({:?}): {why}",
                cut_at(k)
            );
        }
    }
}

/// Runs `workload` with `options` (fsyncs skipped, typically) and no cut — the disk as it is
/// at the end — and returns what `check` says of it. A crash test proves that it tests the
/// fsyncs when this is an error with [`SKIP_FILE_FSYNCS`] and with [`SKIP_DIR_FSYNCS`].
pub async fn with_fsyncs_skipped<T>(
    workload: impl AsyncFn(&Path, &PowerCut) -> Acks<T>,
    check: impl AsyncFn(&Path, &Acks<T>, u64) -> Result<(), String>,
    options: Options,
) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cut = PowerCut::start(dir.path(), options);
    let acks = workload(dir.path(), &cut).await;
    let total = cut.ops();
    cut.cut();
    check(dir.path(), &acks, total).await
}

/// Asserts that `check` refuses what `workload` leaves on a disk that file fsyncs never
/// reached, and on one that directory fsyncs never reached ([`with_fsyncs_skipped`]): the
/// proof that a power-cut test tests both kinds of fsync.
///
/// # Panics
///
/// If `check` accepts either.
pub async fn assert_fsyncs_tested<T>(
    workload: impl AsyncFn(&Path, &PowerCut) -> Acks<T>,
    check: impl AsyncFn(&Path, &Acks<T>, u64) -> Result<(), String>,
) {
    for (options, skipped) in [
        (SKIP_FILE_FSYNCS, "file fsyncs"),
        (SKIP_DIR_FSYNCS, "directory fsyncs"),
    ] {
        let verdict = with_fsyncs_skipped(&workload, &check, options).await;
        assert!(verdict.is_err(), "the check passed without {skipped}");
    }
}

/// No cut, and file fsyncs reach nothing.
pub const SKIP_FILE_FSYNCS: Options = Options {
    cut_after: None,
    tear: None,
    skip_file_fsyncs: true,
    skip_dir_fsyncs: false,
};

/// No cut, and directory fsyncs reach nothing.
pub const SKIP_DIR_FSYNCS: Options = Options {
    cut_after: None,
    tear: None,
    skip_file_fsyncs: false,
    skip_dir_fsyncs: true,
};

/// A small deterministic generator for the tearing (splitmix64).
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Model {
    /// What is already under `path` when recording starts: durable.
    fn adopt_existing(&mut self, dir: usize, path: &Path) {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            let child = entry.path();
            let name = entry.file_name();
            let node = if child.is_dir() {
                let id = self.dirs.len();
                self.dirs.push(DirInode::default());
                self.adopt_existing(id, &child);
                Node::Dir(id)
            } else {
                let id = self.files.len();
                self.files.push(FileInode {
                    durable: std::fs::read(&child).unwrap_or_default(),
                    unsynced: Vec::new(),
                });
                Node::File(id)
            };
            self.dirs[dir].live.insert(name.clone(), node);
            self.dirs[dir].durable.insert(name, node);
        }
    }

    /// The directory holding `path` (by its live entries) and the last name, if `path` is
    /// under the root.
    fn parent_of(&self, path: &Path) -> Option<(usize, OsString)> {
        let relative = path.strip_prefix(&self.root).ok()?;
        let mut names: Vec<OsString> = relative
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name.to_owned()),
                _ => None,
            })
            .collect();
        let last = names.pop()?;
        let mut dir = 0;
        for name in names {
            match self.dirs[dir].live.get(&name)? {
                Node::Dir(id) => dir = *id,
                Node::File(_) => return None,
            }
        }
        Some((dir, last))
    }

    fn node(&self, path: &Path) -> Option<Node> {
        if path == self.root {
            return Some(Node::Dir(0));
        }
        let (dir, name) = self.parent_of(path)?;
        self.dirs[dir].live.get(&name).copied()
    }

    /// Whether `op` touches the modelled directory (operations elsewhere, such as other
    /// tests' in the same process, are not counted).
    fn concerns(&self, op: &Op<'_>) -> bool {
        let path = match op {
            Op::Created(path)
            | Op::Wrote { path, .. }
            | Op::SyncedFile(path)
            | Op::SyncedDir(path)
            | Op::MadeDir(path)
            | Op::Removed(path) => path,
            Op::Renamed { from, to } => {
                return from.starts_with(&self.root) || to.starts_with(&self.root);
            }
        };
        path.starts_with(&self.root)
    }

    fn apply(&mut self, op: Op<'_>) {
        if !self.concerns(&op) {
            return;
        }
        self.ops += 1;
        let op_index = self.ops;
        // The live entries follow the process (it goes on running); the disk freezes.
        let frozen = self.options.cut_after.is_some_and(|at| op_index > at);
        match op {
            Op::Created(path) => {
                let Some((dir, name)) = self.parent_of(path) else {
                    return;
                };
                if let Some(Node::File(id)) = self.dirs[dir].live.get(&name) {
                    // Emptied: the disk keeps its bytes until an fsync.
                    let id = *id;
                    if !frozen {
                        self.files[id].unsynced.clear();
                        self.files[id]
                            .unsynced
                            .push((op_index, TRUNCATED, Vec::new()));
                    }
                    return;
                }
                let id = self.files.len();
                self.files.push(FileInode::default());
                self.dirs[dir].live.insert(name, Node::File(id));
            }
            Op::Wrote {
                path,
                offset,
                bytes,
            } => {
                if let Some(Node::File(id)) = self.node(path)
                    && !frozen
                {
                    self.files[id]
                        .unsynced
                        .push((op_index, offset, bytes.to_vec()));
                }
            }
            Op::SyncedFile(path) => {
                if let Some(Node::File(id)) = self.node(path)
                    && !frozen
                    && !self.options.skip_file_fsyncs
                {
                    // Nothing after the cut has happened yet, so the file holds exactly the
                    // writes so far.
                    self.files[id].durable = std::fs::read(path).unwrap_or_default();
                    self.files[id].unsynced.clear();
                }
            }
            Op::SyncedDir(path) => {
                if let Some(Node::Dir(id)) = self.node(path)
                    && !frozen
                    && !self.options.skip_dir_fsyncs
                {
                    self.dirs[id].durable = self.dirs[id].live.clone();
                }
            }
            Op::MadeDir(path) => {
                let Some((dir, name)) = self.parent_of(path) else {
                    return;
                };
                let id = self.dirs.len();
                self.dirs.push(DirInode::default());
                self.dirs[dir].live.insert(name, Node::Dir(id));
            }
            Op::Renamed { from, to } => {
                let (Some((from_dir, from_name)), Some((to_dir, to_name))) =
                    (self.parent_of(from), self.parent_of(to))
                else {
                    return;
                };
                if let Some(node) = self.dirs[from_dir].live.remove(&from_name) {
                    self.dirs[to_dir].live.insert(to_name, node);
                }
            }
            Op::Removed(path) => {
                if let Some((dir, name)) = self.parent_of(path) {
                    self.dirs[dir].live.remove(&name);
                }
            }
        }
    }

    /// The bytes the disk holds for file `id`: its durable bytes, and with tearing, the
    /// unsynced writes (before the cut) that reached the disk, whole or as a prefix.
    fn disk_bytes(&self, id: usize) -> Vec<u8> {
        let file = &self.files[id];
        let mut bytes = file.durable.clone();
        let Some(seed) = self.options.tear else {
            return bytes;
        };
        for (op, offset, data) in &file.unsynced {
            if *offset == TRUNCATED {
                // An `O_TRUNC` that reached the disk (or not).
                if mix(seed ^ op).is_multiple_of(2) {
                    bytes.clear();
                }
                continue;
            }
            let roll = mix(seed ^ op.wrapping_mul(31));
            let reached = match roll % 3 {
                0 => 0,
                1 => data.len(),
                _ => (mix(roll) % (data.len() as u64 + 1)) as usize,
            };
            let Ok(start) = usize::try_from(*offset) else {
                continue;
            };
            let end = start + reached;
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[start..end].copy_from_slice(&data[..reached]);
        }
        bytes
    }

    fn write_back(&self, dir: usize, path: &Path) -> usize {
        let mut files = 0;
        for (name, node) in &self.dirs[dir].durable {
            let child = path.join(name);
            match node {
                Node::Dir(id) => {
                    std::fs::create_dir(&child).expect("rebuild a directory");
                    files += self.write_back(*id, &child);
                }
                Node::File(id) => {
                    std::fs::write(&child, self.disk_bytes(*id)).expect("rebuild a file");
                    files += 1;
                }
            }
        }
        files
    }
}
