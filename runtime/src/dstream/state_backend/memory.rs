//! The in-memory backend: every version of a partition's state is a whole map, shared by
//! `Arc` and copied when a batch changes it (copy-on-write), as before backends existed.
//!
//! Invariant: a version is never mutated after it is made; a batch that changes nothing
//! shares its predecessor's map.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::part::{Decoded, Entries, Next, StatePart, encoding};
use crate::dstream::{Data, Key, StableMap, partition_of};
use crate::error::{ComputeError, ComputeResult};

/// The partitions holding `entries`.
pub(crate) fn seed<K: Key, S: Data>(
    partitions: usize,
    entries: impl IntoIterator<Item = (K, S)>,
) -> Vec<StatePart<K, S>> {
    let mut parts: Vec<StableMap<K, S>> = (0..partitions).map(|_| StableMap::default()).collect();
    for (k, s) in entries {
        parts[partition_of(&k, partitions)].insert(k, s);
    }
    parts
        .into_iter()
        .map(|p| StatePart::Memory(Arc::new(p)))
        .collect()
}

/// `previous` changed by `next`.
pub(crate) fn next<K: Key, S: Data>(
    previous: &Arc<StableMap<K, S>>,
    next: Next<K, S>,
) -> StatePart<K, S> {
    match next {
        Next::Same => StatePart::Memory(Arc::clone(previous)),
        Next::Replace(map) => StatePart::Memory(Arc::new(map)),
        Next::Changes(changes) if changes.is_empty() => StatePart::Memory(Arc::clone(previous)),
        Next::Changes(changes) => {
            let mut map = previous.as_ref().clone();
            for (k, s) in changes {
                match s {
                    Some(s) => {
                        map.insert(k, s);
                    }
                    None => {
                        map.remove(&k);
                    }
                }
            }
            StatePart::Memory(Arc::new(map))
        }
    }
}

/// The checkpoint encoding of `parts`.
pub(crate) fn encode<K, S>(as_of: Option<u64>, parts: &[StatePart<K, S>]) -> ComputeResult<Vec<u8>>
where
    K: Key + Serialize,
    S: Data + Serialize,
{
    let mut entries: Vec<(&K, &S)> = Vec::new();
    for part in parts {
        match part {
            StatePart::Memory(m) => entries.extend(m.iter()),
            StatePart::Disk(_) => {
                return Err(ComputeError::new(
                    "a state version of one backend was given to another",
                ));
            }
        }
    }
    postcard::to_allocvec(&(as_of, entries)).map_err(encoding)
}

/// The base decoded from a checkpoint's `bytes`.
pub(crate) fn decode<K, S>(partitions: usize, bytes: &[u8]) -> ComputeResult<Decoded<K, S>>
where
    K: Key + DeserializeOwned,
    S: Data + DeserializeOwned,
{
    let (as_of, entries) = Entries::<K, S>::open(bytes)?;
    let mut parts: Vec<StableMap<K, S>> = (0..partitions).map(|_| StableMap::default()).collect();
    for entry in entries {
        let (k, s) = entry?;
        parts[partition_of(&k, partitions)].insert(k, s);
    }
    Ok((
        as_of,
        parts
            .into_iter()
            .map(|p| StatePart::Memory(Arc::new(p)))
            .collect(),
    ))
}
