//! The interface between the stateful operators and the state backends: a [`StatePart`] is one
//! version of one partition's state (what a batch's step reads), a [`Next`] what the step
//! changes in it, and a [`Store`] one operator's backend, which turns a version and its changes
//! into the next version, folds the versions of a checkpointed batch into its base, and
//! encodes and decodes the checkpointed state.
//!
//! Invariant: a [`StatePart`] never changes once made (a later batch makes a new one), so a
//! batch recomputed, or read by several jobs, always sees the same state; and the encoding
//! of a checkpoint does not depend on the backend — `postcard` of `(as_of, [(key, state)])`,
//! the format of every release before backends existed.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_actors::checkpoint::StateBytes;

use super::config::StateBackend;
use super::disk::{DiskPart, DiskStore, DiskTable};
use super::memory;
use crate::dstream::{Data, Key, StableMap};
use crate::error::{ComputeError, ComputeResult};

/// One version of one partition's state.
pub(crate) enum StatePart<K, S> {
    /// Every key's state, in memory.
    Memory(Arc<StableMap<K, S>>),
    /// The changes since the checkpointed base, over the base on disk.
    Disk(Arc<DiskPart<K, S>>),
}

impl<K, S> Clone for StatePart<K, S> {
    fn clone(&self) -> Self {
        match self {
            StatePart::Memory(m) => StatePart::Memory(Arc::clone(m)),
            StatePart::Disk(d) => StatePart::Disk(Arc::clone(d)),
        }
    }
}

/// A decoded state: the batch it is as of, and its partitions.
pub(crate) type Decoded<K, S> = (Option<u64>, Vec<StatePart<K, S>>);

/// An entry of an encoded state: its key and state, and their bytes.
pub(crate) type RawEntry<'a, K, S> = (K, S, &'a [u8], &'a [u8]);

/// What a batch changed in a partition's state.
pub(crate) enum Next<K, S> {
    /// Nothing.
    Same,
    /// These keys: `Some` their new state, `None` removed.
    Changes(StableMap<K, Option<S>>),
    /// Everything: this is the whole new state.
    Replace(StableMap<K, S>),
}

impl<K, S> StatePart<K, S>
where
    K: Key + Serialize + DeserializeOwned,
    S: Data + Serialize + DeserializeOwned,
{
    /// A reader of this version, for many [`get`](Reader::get)s (the disk backend reads one
    /// snapshot of its B-tree for all of them).
    pub(crate) fn reader(&self) -> Reader<'_, K, S> {
        match self {
            StatePart::Memory(m) => Reader::Memory(m),
            StatePart::Disk(d) => Reader::Disk(d, None),
        }
    }

    /// Calls `f` with every key and its state (in no particular order, but the same for the
    /// same version).
    pub(crate) fn for_each(
        &self,
        mut f: impl FnMut(&K, &S) -> ComputeResult<()>,
    ) -> ComputeResult<()> {
        match self {
            StatePart::Memory(m) => m.iter().try_for_each(|(k, s)| f(k, s)),
            StatePart::Disk(d) => d.for_each(&mut f),
        }
    }

    /// `f` of every key and its state.
    pub(crate) fn collect<T>(&self, mut f: impl FnMut(&K, &S) -> T) -> ComputeResult<Vec<T>> {
        match self {
            StatePart::Memory(m) => Ok(m.iter().map(|(k, s)| f(k, s)).collect()),
            StatePart::Disk(_) => {
                let mut out = Vec::new();
                self.for_each(|k, s| {
                    out.push(f(k, s));
                    Ok(())
                })?;
                Ok(out)
            }
        }
    }
}

/// Reads keys of one version (see [`StatePart::reader`]).
pub(crate) enum Reader<'a, K, S> {
    Memory(&'a StableMap<K, S>),
    /// The version, and the B-tree's table once opened.
    Disk(&'a DiskPart<K, S>, Option<DiskTable>),
}

impl<K, S> Reader<'_, K, S>
where
    K: Key + Serialize + DeserializeOwned,
    S: Data + Serialize + DeserializeOwned,
{
    /// The state of `key`.
    pub(crate) fn get(&mut self, key: &K) -> ComputeResult<Option<S>> {
        match self {
            Reader::Memory(m) => Ok(m.get(key).cloned()),
            Reader::Disk(d, table) => d.get_with(key, table),
        }
    }
}

/// One stateful operator's backend.
pub(crate) enum Store {
    Memory,
    Disk(Arc<DiskStore>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Memory => f.write_str("Store::Memory"),
            Store::Disk(d) => f.debug_tuple("Store::Disk").field(d).finish(),
        }
    }
}

impl Store {
    /// The backend `backend` for one operator with `partitions` partitions.
    pub(crate) fn new(backend: &StateBackend, partitions: usize) -> Self {
        match backend {
            StateBackend::Memory => Store::Memory,
            StateBackend::Disk(options) => {
                Store::Disk(Arc::new(DiskStore::new(options.clone(), partitions)))
            }
        }
    }

    /// Whether versions are folded as soon as their batch completes (the disk backend: what
    /// is folded leaves memory).
    pub(crate) fn folds_eagerly(&self) -> bool {
        matches!(self, Store::Disk(_))
    }

    /// Whether the encoded state may be kept in memory between checkpoints (it is as large as
    /// the state: not with the disk backend).
    pub(crate) fn caches_encoding(&self) -> bool {
        matches!(self, Store::Memory)
    }

    /// `partitions` empty partitions.
    pub(crate) fn empty<K, S>(&self, partitions: usize) -> ComputeResult<Vec<StatePart<K, S>>>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        self.seed(partitions, std::iter::empty())
    }

    /// The partitions holding `entries` (each in its key's partition).
    pub(crate) fn seed<K, S>(
        &self,
        partitions: usize,
        entries: impl IntoIterator<Item = (K, S)>,
    ) -> ComputeResult<Vec<StatePart<K, S>>>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        match self {
            Store::Memory => Ok(memory::seed(partitions, entries)),
            Store::Disk(d) => d.seed(entries),
        }
    }

    /// The version after batch `time`: `previous` changed by `next`.
    pub(crate) fn next<K, S>(
        &self,
        previous: &StatePart<K, S>,
        time: u64,
        next: Next<K, S>,
    ) -> ComputeResult<StatePart<K, S>>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        match (self, previous) {
            (Store::Memory, StatePart::Memory(m)) => Ok(memory::next(m, next)),
            (Store::Disk(d), StatePart::Disk(p)) => Ok(d.next(p, time, next)),
            _ => Err(mixed()),
        }
    }

    /// Makes `parts`, the versions after batch `through`, the base: the versions before it
    /// are no longer read. Returns the base's partitions.
    pub(crate) fn fold<K, S>(
        &self,
        through: u64,
        parts: Vec<StatePart<K, S>>,
    ) -> ComputeResult<Vec<StatePart<K, S>>>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        match self {
            Store::Memory => Ok(parts),
            Store::Disk(d) => d.fold(through, parts),
        }
    }

    /// The checkpoint encoding of the base `parts`, as of `as_of`.
    pub(crate) fn encode<K, S>(
        &self,
        as_of: Option<u64>,
        parts: &[StatePart<K, S>],
    ) -> ComputeResult<Vec<u8>>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        match self {
            Store::Memory => memory::encode(as_of, parts),
            Store::Disk(d) => d.encode(as_of),
        }
    }

    /// `header`, then the checkpoint encoding of the base as of `as_of`, in a local temporary
    /// file — the disk backend's way to encode a state larger than memory; `None` for the
    /// memory backend ([`encode`](Self::encode) it).
    pub(crate) fn encode_to_file(
        &self,
        as_of: Option<u64>,
        header: &[u8],
    ) -> Option<ComputeResult<StateBytes>> {
        match self {
            Store::Memory => None,
            Store::Disk(d) => Some(d.encode_to_file(as_of, header)),
        }
    }

    /// A chain's state — the base `base`, then `deltas` in order — merged in one pass by the
    /// disk backend ([`DiskStore::load_chain`]); `None` if the backend does not (the memory
    /// backend) or cannot (a base in another partition order): restore the base, then apply
    /// the deltas.
    pub(crate) fn load_chain<K, S>(
        &self,
        base: &StateBytes,
        deltas: &[StateBytes],
    ) -> ComputeResult<Option<Decoded<K, S>>>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        match self {
            Store::Memory => Ok(None),
            Store::Disk(d) => d.load_chain(base, deltas),
        }
    }

    /// [`decode`](Self::decode) of `bytes` in memory or in a file: the disk backend reads a
    /// file in pieces.
    pub(crate) fn decode_bytes<K, S>(
        &self,
        partitions: usize,
        bytes: &StateBytes,
    ) -> ComputeResult<Decoded<K, S>>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        match (self, bytes.in_memory()) {
            (_, Some(bytes)) => self.decode(partitions, bytes),
            (Store::Disk(d), None) => d.load_from(bytes.reader()),
            (Store::Memory, None) => {
                let bytes = bytes
                    .to_vec()
                    .map_err(|e| ComputeError::new(format!("reading state: {e}")))?;
                memory::decode(partitions, &bytes)
            }
        }
    }

    /// Whether the base is kept out of memory and changed in place (the disk backend): a
    /// restore then writes a chain's deltas into it with [`write_changes`](Self::write_changes).
    pub(crate) fn changes_in_place(&self) -> bool {
        matches!(self, Store::Disk(_))
    }

    /// Writes the changes of a delta, in order, into the base in place, entry by entry (the
    /// disk backend; the memory backend refuses: its caller merges the deltas and makes one
    /// version of them).
    pub(crate) fn write_changes<K, S>(
        &self,
        changes: impl Iterator<Item = ComputeResult<(K, Option<S>)>>,
    ) -> ComputeResult<()>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        match self {
            Store::Memory => Err(ComputeError::new(
                "the memory state backend changes no state in place",
            )),
            Store::Disk(d) => d.write_changes(changes),
        }
    }

    /// The base decoded from a checkpoint's `bytes`: as of which batch, and its partitions.
    pub(crate) fn decode<K, S>(
        &self,
        partitions: usize,
        bytes: &[u8],
    ) -> ComputeResult<Decoded<K, S>>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        match self {
            Store::Memory => memory::decode(partitions, bytes),
            Store::Disk(d) => d.load(bytes),
        }
    }
}

fn mixed() -> ComputeError {
    ComputeError::new("a state version of one backend was given to another")
}

/// The entries of an encoded state, decoded one at a time (so a state larger than memory
/// never is in memory whole).
pub(crate) struct Entries<'a, K, S> {
    rest: &'a [u8],
    left: u64,
    _types: std::marker::PhantomData<fn() -> (K, S)>,
}

impl<'a, K: DeserializeOwned, S: DeserializeOwned> Entries<'a, K, S> {
    /// The batch the state is as of, and its entries.
    pub(crate) fn open(bytes: &'a [u8]) -> ComputeResult<(Option<u64>, Self)> {
        let (as_of, rest): (Option<u64>, _) = postcard::take_from_bytes(bytes).map_err(decoding)?;
        // A sequence's length is a varint, as a `u64` is.
        let (left, rest): (u64, _) = postcard::take_from_bytes(rest).map_err(decoding)?;
        Ok((
            as_of,
            Entries {
                rest,
                left,
                _types: std::marker::PhantomData,
            },
        ))
    }

    /// The next entry's key and state, with the bytes of its key.
    pub(crate) fn next_raw(&mut self) -> Option<ComputeResult<RawEntry<'a, K, S>>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let start = self.rest;
        let entry = (|| {
            let (k, after_key): (K, _) = postcard::take_from_bytes(start).map_err(decoding)?;
            let key_bytes = &start[..start.len() - after_key.len()];
            let (s, rest): (S, _) = postcard::take_from_bytes(after_key).map_err(decoding)?;
            let state_bytes = &after_key[..after_key.len() - rest.len()];
            self.rest = rest;
            Ok((k, s, key_bytes, state_bytes))
        })();
        if entry.is_err() {
            self.left = 0;
        }
        Some(entry)
    }
}

impl<K: DeserializeOwned, S: DeserializeOwned> Iterator for Entries<'_, K, S> {
    type Item = ComputeResult<(K, S)>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_raw().map(|r| r.map(|(k, s, _, _)| (k, s)))
    }
}

/// How many more bytes [`ReadEntries`] reads when its buffer runs out.
const READ_PIECE: usize = 1 << 20;

/// The entries of an encoded state read from `input` in pieces: as [`Entries`], with a buffer
/// of about [`READ_PIECE`] bytes (more only for an entry larger than that), so a state larger
/// than memory is decoded without being in memory.
pub(crate) struct ReadEntries<R, K, S> {
    input: R,
    buf: Vec<u8>,
    /// Where the next entry starts in `buf`.
    pos: usize,
    /// Whether `input` has nothing more.
    ended: bool,
    left: u64,
    _types: std::marker::PhantomData<fn() -> (K, S)>,
}

impl<R: std::io::Read, K: DeserializeOwned, S: DeserializeOwned> ReadEntries<R, K, S> {
    /// The batch the state is as of, and its entries.
    pub(crate) fn open(input: R) -> ComputeResult<(Option<u64>, Self)> {
        let mut entries = ReadEntries {
            input,
            buf: Vec::new(),
            pos: 0,
            ended: false,
            left: 0,
            _types: std::marker::PhantomData,
        };
        let (as_of, used) = entries.decode(|b| {
            let (as_of, rest): (Option<u64>, _) = postcard::take_from_bytes(b)?;
            Ok((as_of, b.len() - rest.len()))
        })?;
        entries.pos += used;
        // A sequence's length is a varint, as a `u64` is.
        let (left, used) = entries.decode(|b| {
            let (left, rest): (u64, _) = postcard::take_from_bytes(b)?;
            Ok((left, b.len() - rest.len()))
        })?;
        entries.pos += used;
        entries.left = left;
        Ok((as_of, entries))
    }

    /// Decodes a value at the next entry's start with `decode` (the value and the bytes it
    /// used), reading more input while the buffer ends before the value does.
    fn decode<T>(
        &mut self,
        decode: impl Fn(&[u8]) -> Result<T, postcard::Error>,
    ) -> ComputeResult<T> {
        loop {
            match decode(self.buf.get(self.pos..).unwrap_or_default()) {
                Err(postcard::Error::DeserializeUnexpectedEnd) if !self.ended => self.refill()?,
                Err(e) => return Err(decoding(e)),
                Ok(decoded) => return Ok(decoded),
            }
        }
    }

    /// Drops the bytes before the next entry and reads more.
    fn refill(&mut self) -> ComputeResult<()> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let old = self.buf.len();
        self.buf.resize(old + READ_PIECE, 0);
        let n = loop {
            match self.input.read(self.buf.get_mut(old..).unwrap_or_default()) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(ComputeError::new(format!("reading state: {e}")));
                }
            }
        };
        self.buf.truncate(old + n);
        self.ended = n == 0;
        Ok(())
    }

    /// The next entry's key and state, with the bytes of its key and of its state.
    pub(crate) fn next_raw(&mut self) -> Option<ComputeResult<RawEntry<'_, K, S>>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let decoded = self.decode(|b| {
            let (k, after_key): (K, _) = postcard::take_from_bytes(b)?;
            let (s, rest): (S, _) = postcard::take_from_bytes(after_key)?;
            let used = (b.len() - after_key.len(), after_key.len() - rest.len());
            Ok(((k, s), used))
        });
        match decoded {
            Ok(((k, s), (key_len, state_len))) => {
                let start = self.pos;
                self.pos += key_len + state_len;
                let key = self.buf.get(start..start + key_len).unwrap_or_default();
                let state = self
                    .buf
                    .get(start + key_len..start + key_len + state_len)
                    .unwrap_or_default();
                Some(Ok((k, s, key, state)))
            }
            Err(e) => {
                self.left = 0;
                Some(Err(e))
            }
        }
    }
}

pub(crate) fn decoding(e: postcard::Error) -> ComputeError {
    ComputeError::new(format!("decoding state: {e}"))
}

pub(crate) fn encoding(e: postcard::Error) -> ComputeError {
    ComputeError::new(format!("encoding state: {e}"))
}
