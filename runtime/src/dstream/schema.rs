//! State schema versions and their migration: a stateful operator's state carries the version
//! of its type the program declares ([`DStream::state_schema`]; 1 unless it says), written
//! with the state into every checkpoint and savepoint; a restore that finds another version
//! turns each key's old state into today's with the operator's hook
//! ([`DStream::migrate_state`], [`MapWithStateDStream::migrate_state`]), or refuses to start.
//!
//! Invariant: a migration rewrites the checkpoint encoding of the state — `postcard` of
//! `(as_of, [(key, state)])` for a whole state, of `(as_of, [(key, Option<state>)])` for a
//! chain's delta — entry by entry into today's encoding before any backend reads it, so both
//! backends, and state inline, in a state file or in a chain, restore a migrated state the same
//! way. Keys keep their type and their bytes; only the state is migrated.

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::map_with_state::MapWithStateDStream;
use super::memo::lock;
use super::{DStream, Data, Key};

/// One key's state as an earlier schema version of the program stored it, handed to a
/// migration hook ([`DStream::migrate_state`]): the `postcard` encoding of that version's state
/// type, followed by the bytes of the entries after it. [`decode`](Self::decode) reads it as
/// that type, and tells the restore where the next entry starts (`postcard` is not
/// self-delimiting: without the old type nobody knows the state's length).
pub struct OldState<'a> {
    bytes: &'a [u8],
    used: &'a Cell<Option<usize>>,
}

impl fmt::Debug for OldState<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OldState")
            .field("available_bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl OldState<'_> {
    /// The key's old state, decoded as `T`: the state type of the schema version the hook was
    /// called with (the same Rust type the earlier program used, or one with the same `serde`
    /// shape). A hook must call it (once is enough); the restore fails if it did not.
    ///
    /// # Errors
    ///
    /// The decoder's message, if the bytes are not a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, String> {
        let (value, rest) = postcard::take_from_bytes::<T>(self.bytes).map_err(|e| {
            format!(
                "the old state does not decode as {}: {e}",
                std::any::type_name::<T>()
            )
        })?;
        self.used.set(Some(self.bytes.len() - rest.len()));
        Ok(value)
    }
}

/// A migration hook: `(from_version, old state) -> today's state`.
pub(crate) type MigrateFn<S> = dyn Fn(u32, OldState<'_>) -> Result<S, String> + Send + Sync;

/// An operator's migration hook for its state type `S`, if the program gave one.
pub(crate) struct Hook<S>(Mutex<Option<Arc<MigrateFn<S>>>>);

impl<S> Default for Hook<S> {
    fn default() -> Self {
        Hook(Mutex::new(None))
    }
}

impl<S: 'static> Hook<S> {
    /// Takes `hook` if it is an `Arc<MigrateFn<S>>`; `false` if it is for another type.
    pub(crate) fn set(&self, hook: Box<dyn Any + Send + Sync>) -> bool {
        match hook.downcast::<Arc<MigrateFn<S>>>() {
            Ok(hook) => {
                *lock(&self.0) = Some(*hook);
                true
            }
            Err(_) => false,
        }
    }

    /// The hook.
    pub(crate) fn get(&self) -> Option<Arc<MigrateFn<S>>> {
        lock(&self.0).clone()
    }

    /// `hook`'s state for the entry at the front of `bytes` (schema version `from`), and the
    /// entry's length.
    pub(crate) fn value(
        hook: &MigrateFn<S>,
        from: u32,
        bytes: &[u8],
    ) -> Result<(S, usize), String> {
        let used = Cell::new(None);
        let state = hook(from, OldState { bytes, used: &used })?;
        let used = used.get().ok_or_else(|| {
            "the hook returned without reading the old state (call OldState::decode)".to_owned()
        })?;
        Ok((state, used))
    }
}

fn take<'a, T: DeserializeOwned>(bytes: &'a [u8], what: &str) -> Result<(T, &'a [u8]), String> {
    postcard::take_from_bytes(bytes).map_err(|e| format!("decoding {what}: {e}"))
}

/// Reads the stored value at the front of the bytes in today's type: the value and the length
/// of the old one.
pub(crate) type ReadValue<'a, V> = dyn Fn(&[u8]) -> Result<(V, usize), String> + 'a;

/// Rewrites the checkpoint encoding of a whole state (`delta` false) or of a delta, whose keys
/// are `K`s, with `value(bytes) -> (today's stored value, length of the old one)` for each
/// stored value; counts the values migrated in `migrated`.
pub(crate) fn migrate_encoding<K, V>(
    bytes: &[u8],
    delta: bool,
    value: &ReadValue<'_, V>,
    migrated: &mut u64,
) -> Result<Vec<u8>, String>
where
    K: DeserializeOwned,
    V: Serialize,
{
    let (as_of, rest): (Option<u64>, _) = take(bytes, "the batch the state is as of")?;
    // A sequence's length is a varint, as a `u64` is.
    let (len, mut rest): (u64, _) = take(rest, "the number of keys")?;
    let mut out =
        postcard::to_allocvec(&(as_of, len)).map_err(|e| format!("encoding the state: {e}"))?;
    for _ in 0..len {
        let (_key, after): (K, _) = take(rest, "a key (keys keep their type)")?;
        out.extend_from_slice(&rest[..rest.len() - after.len()]);
        rest = after;
        if delta {
            match rest.split_first() {
                Some((0, after)) => {
                    out.push(0);
                    rest = after;
                    continue;
                }
                Some((1, after)) => {
                    out.push(1);
                    rest = after;
                }
                _ => return Err("decoding a delta's entry: not an optional state".to_owned()),
            }
        }
        let (new, used) = value(rest)?;
        out = postcard::to_extend(&new, out).map_err(|e| format!("encoding the state: {e}"))?;
        rest = rest.get(used..).unwrap_or_default();
        *migrated += 1;
    }
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes follow the last key's state: the old states were not read whole",
            rest.len()
        ));
    }
    Ok(out)
}

impl<T: Data> DStream<T> {
    /// Declares the schema version of this operator's state (default 1): the version is
    /// written with the state into every checkpoint and savepoint. Raise it when the state's
    /// type changes shape, and give the operator a [`migrate_state`](DStream::migrate_state)
    /// hook that turns state of the earlier versions into the new type; a restore then
    /// migrates every key's state. A restore that finds a version newer than the program's,
    /// or another one without a hook, refuses to start, naming the operator and both versions
    /// (unless [`allow_non_restored_state`](crate::StreamingConfig::allow_non_restored_state)
    /// is set: then the operator starts empty). Set it on the operator holding the state, next
    /// to its [`uid`](DStream::uid) (it applies to a composite operator's inner state too).
    ///
    /// This is Flink's schema evolution without the serializer snapshot: Flink stores a
    /// `TypeSerializerSnapshot` with the state and asks the new serializer whether it is
    /// compatible (migrating by reading with the old serializer and writing with the new);
    /// here the program declares the version and migrates with its own hook.
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir::dstream::QueueStream;
    /// use weir::testing::{Collected, ManualClock};
    ///
    /// /// Version 2 of the state: version 1 was a bare `u64` count.
    /// #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
    /// struct Count {
    ///     count: u64,
    ///     last: u64,
    /// }
    ///
    /// let queue = QueueStream::new(true, 1);
    /// queue.push(vec![("a".to_owned(), 5u64)]);
    /// let out = Collected::default();
    /// let (q, o) = (queue.clone(), out.clone());
    /// let mut clock = ManualClock::new(1000, 2, move |ctx| {
    ///     let counts = ctx
    ///         .queue_stream(&q)
    ///         .update_state_by_key(|vs: &[u64], s: Option<Count>| {
    ///             let mut s = s.unwrap_or(Count { count: 0, last: 0 });
    ///             for v in vs {
    ///                 s.count += 1;
    ///                 s.last = *v;
    ///             }
    ///             Some(s)
    ///         })
    ///         .uid("counts")
    ///         .state_schema(2)
    ///         // Restoring state of version 1: each key's count becomes a `Count`.
    ///         .migrate_state(|from, old| match from {
    ///             1 => Ok(Count { count: old.decode::<u64>()?, last: 0 }),
    ///             _ => Err(format!("no migration from version {from}")),
    ///         });
    ///     o.collect(&counts);
    /// })?;
    /// clock.run(1).await?;
    /// assert_eq!(out.sorted(1000), vec![("a".to_owned(), Count { count: 1, last: 5 })]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// If the context has already started, or `version` is 0.
    #[must_use]
    pub fn state_schema(self, version: u32) -> Self {
        assert!(
            !self.graph.is_started(),
            "state schema versions must be set before the streaming context starts"
        );
        assert!(version > 0, "a state schema version starts at 1");
        let set = |meta: &super::graph::NodeMeta| {
            meta.schema_version
                .store(version, std::sync::atomic::Ordering::SeqCst);
        };
        for (_, helper) in lock(&self.node.helpers).iter() {
            set(helper.meta());
        }
        set(&self.node.meta);
        self
    }
}

impl<K, S> DStream<(K, S)>
where
    K: Key + Serialize + DeserializeOwned,
    S: Data + Serialize + DeserializeOwned,
{
    /// Gives this operator (an [`update_state_by_key`](DStream::update_state_by_key)) the
    /// migration hook of its state: on a restore that finds state of an earlier
    /// [schema version](DStream::state_schema) than the program's, `hook(from_version, old)`
    /// is called for each key's state, `old` holding the `postcard` encoding of version
    /// `from_version`'s state type ([`OldState::decode`] reads it), and returns the state in
    /// today's type; keys keep their type. With incremental checkpoints the base and every
    /// delta of a chain are migrated, and the next checkpoint writes a new base. A hook that
    /// returns `Err` fails the start, naming the operator, how many keys were migrated before
    /// and the hook's message. See [`DStream::state_schema`] for an example.
    ///
    /// On an operator without per-key state of type `S`, the context refuses to start.
    ///
    /// # Panics
    ///
    /// If the context has already started.
    #[must_use]
    pub fn migrate_state(
        self,
        hook: impl Fn(u32, OldState<'_>) -> Result<S, String> + Send + Sync + 'static,
    ) -> Self {
        set_hook::<S>(&self.node, &self.graph, Arc::new(hook));
        self
    }
}

/// Gives `node` the migration hook `hook`, or records that it cannot take one.
fn set_hook<S: Data>(
    node: &super::graph::Node<impl Send + Sync + 'static>,
    graph: &super::graph::GraphShared,
    hook: Arc<MigrateFn<S>>,
) {
    assert!(
        !graph.is_started(),
        "migration hooks must be set before the streaming context starts"
    );
    let taken = node
        .compute
        .lifecycle()
        .is_some_and(|l| l.set_migration(Box::new(hook)));
    if !taken {
        graph.invalidate(format!(
            "migrate_state was given to operator {:?} (a {}), which keeps no per-key state of \
             type {}",
            node.meta.uid(),
            node.meta.kind,
            std::any::type_name::<S>()
        ));
    }
}

impl<K, S, T> MapWithStateDStream<K, S, T>
where
    K: Key + Serialize + DeserializeOwned,
    S: Data + Serialize + DeserializeOwned,
    T: Data,
{
    /// Declares the schema version of the operator's state (see [`DStream::state_schema`]).
    ///
    /// # Panics
    ///
    /// If the context has already started, or `version` is 0.
    #[must_use]
    pub fn state_schema(self, version: u32) -> Self {
        // The mapped stream's node holds the state (and shares it with the snapshots).
        let _ = self.mapped().state_schema(version);
        self
    }

    /// Gives the operator the migration hook of its state, `hook(from_version, old) -> S`
    /// (see [`DStream::migrate_state`]): `old` holds the `postcard` encoding of the key's `S`
    /// of version `from_version`; the time of its last update is kept.
    ///
    /// # Panics
    ///
    /// If the context has already started.
    #[must_use]
    pub fn migrate_state(
        self,
        hook: impl Fn(u32, OldState<'_>) -> Result<S, String> + Send + Sync + 'static,
    ) -> Self {
        let mapped = self.mapped();
        set_hook::<S>(&mapped.node, &mapped.graph, Arc::new(hook));
        self
    }
}
