//! The block store: received blocks kept in memory, shared by `Arc`, bounded.
//!
//! A receiver supervisor inserts every block it has stored — after its WAL record is durable,
//! before it reports the block to the tracker — and the job generator takes a batch's blocks
//! from here to build the batch's input ([`BlockStore::get_or_read`]). A block travels as a
//! [`Block`]: cloning it clones an `Arc`, never the records.
//!
//! # A cache, never the only copy
//!
//! Every block in the store is durable in the receiver WAL, and its [`BlockInfo::handle`] says
//! where. The store is therefore only a cache, and that is what lets it be bounded: when a new
//! block would push it over its byte budget, the oldest blocks are evicted, and a batch that
//! needs an evicted block reads it back from the WAL. The same holds after a driver restart,
//! when the store starts empty and every recovered block is read back.
//!
//! # The only copy, with the receiver WAL off
//!
//! With [`EngineConfig::receiver_wal`](crate::config::EngineConfig::receiver_wal) off (Spark's
//! `spark.streaming.receiver.writeAheadLog.enable=false`), a block is never written to the WAL:
//! its handle is a [`memory_handle`], and the store holds the only copy. Such blocks are never
//! evicted for the budget (dropping one would lose it); they leave the store only when their
//! batch is cleaned up. A batch that needs one that is gone — after a driver restart, when the
//! store starts empty — gets [`BlockStoreError::Lost`]: the job generator runs the batch
//! without it and logs what was lost. That is the trade the switch makes: at-most-once input
//! for receivers, for the cost of the WAL.
//!
//! Memory-only blocks are bounded all the same, by admission rather than eviction: before a
//! receiver's blocks are handed to its supervisor, [`BlockStore::wait_for_room`] waits while
//! the memory-only bytes are at the budget, until cleaned-up batches free some. The waiting
//! receiver's `store` does not return, it reads no more, and its sender is pushed back (over
//! TCP, for a socket). The bound is the budget plus what was admitted before the bytes were
//! counted: at most one forwarded batch of blocks per receiver.
//!
//! What a crash leaves behind: nothing — the store is memory only.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::config::DEFAULT_BLOCK_STORE_BYTES;
use crate::ingest::blocks::{Block, BlockInfo, StreamId, decode_records};
use crate::wal::{RecordHandle, Wal, WalError};

/// The segment id of every [`memory_handle`]: no WAL ever reaches it (segment ids count up
/// from 1).
const MEMORY_SEGMENT: u64 = u64::MAX;

/// A handle for a block that is kept in memory only (the receiver WAL is off): unique within
/// the process and, being seeded from the clock, across restarts of it, so a new block is never
/// mistaken for a recovered one. `length` is the block's bytes of records.
pub(crate) fn memory_handle(length: u32) -> RecordHandle {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        AtomicU64::new(nanos)
    });
    RecordHandle {
        segment: MEMORY_SEGMENT,
        offset: next.fetch_add(1, Ordering::Relaxed),
        length,
    }
}

/// Whether `handle` names a block kept in memory only ([`memory_handle`]).
pub(crate) fn is_memory_only(handle: &RecordHandle) -> bool {
    handle.segment == MEMORY_SEGMENT
}

/// Why a block could not be read back from the receiver WAL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BlockStoreError {
    /// The block was kept in memory only (the receiver WAL is off) and is gone: the driver
    /// restarted since it was stored.
    #[error(
        "block {handle} of stream {stream} was kept in memory only (the receiver WAL is off) \
         and is gone"
    )]
    Lost {
        /// The block's stream.
        stream: StreamId,
        /// Its memory-only handle.
        handle: RecordHandle,
    },
    /// The WAL could not read the record (it was cleaned, or the storage failed).
    #[error("reading block {handle} of stream {stream} from the receiver WAL failed: {source}")]
    Wal {
        /// The block's stream.
        stream: StreamId,
        /// Where the block's data was.
        handle: RecordHandle,
        /// The WAL's error.
        #[source]
        source: WalError,
    },
    /// The record is intact by its checksum but is not the block its info describes.
    #[error("block {handle} of stream {stream} in the receiver WAL is unreadable: {reason}")]
    Corrupt {
        /// The block's stream.
        stream: StreamId,
        /// Where the block's data is.
        handle: RecordHandle,
        /// What is wrong with it.
        reason: String,
    },
}

/// Received blocks in memory, keyed by their identity (stream, WAL handle), within a byte
/// budget. Cheap to clone; all clones share one store.
#[derive(Clone, Debug)]
pub(crate) struct BlockStore {
    inner: Arc<Mutex<Inner>>,
    /// Woken whenever memory-only blocks leave the store.
    freed: Arc<Notify>,
}

type Key = (StreamId, RecordHandle);

#[derive(Debug)]
struct Entry {
    block: Block,
    /// What the block counts against the budget (0 for a memory-only block).
    bytes: usize,
    /// A memory-only block's bytes (0 for a block the WAL holds).
    memory_only: usize,
    /// Its place in the eviction order; `None` for a memory-only block, which is never
    /// evicted.
    seq: Option<u64>,
}

#[derive(Debug)]
struct Inner {
    max_bytes: usize,
    bytes: usize,
    /// The bytes of the memory-only blocks held (outside `bytes`).
    memory_only: usize,
    next_seq: u64,
    blocks: HashMap<Key, Entry>,
    /// Insertion order, oldest first: the eviction order.
    order: BTreeMap<u64, Key>,
}

impl Inner {
    fn remove(&mut self, key: &Key) {
        if let Some(entry) = self.blocks.remove(key) {
            if let Some(seq) = entry.seq {
                self.order.remove(&seq);
            }
            self.bytes -= entry.bytes;
            self.memory_only -= entry.memory_only;
        }
    }
}

fn key(info: &BlockInfo) -> Key {
    (info.stream, info.handle)
}

/// The bytes a block's records hold: what counts against the budget.
fn block_bytes(block: &Block) -> usize {
    block.records.iter().map(Bytes::len).sum()
}

impl Default for BlockStore {
    /// A store with the [`DEFAULT_BLOCK_STORE_BYTES`] budget.
    fn default() -> Self {
        BlockStore::new(DEFAULT_BLOCK_STORE_BYTES)
    }
}

impl BlockStore {
    /// An empty store that keeps at most `max_bytes` of records.
    pub(crate) fn new(max_bytes: usize) -> Self {
        BlockStore {
            freed: Arc::new(Notify::new()),
            inner: Arc::new(Mutex::new(Inner {
                max_bytes,
                bytes: 0,
                memory_only: 0,
                next_seq: 0,
                blocks: HashMap::new(),
                order: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `block`, evicting the oldest blocks while the budget would be exceeded. A block
    /// larger than the whole budget is not kept (it is read back from the WAL when needed).
    /// Inserting a block that is already there replaces it. A memory-only block
    /// ([`memory_handle`]) is always kept, outside the budget: it is the only copy.
    pub(crate) fn insert(&self, block: Block) {
        let bytes = block_bytes(&block);
        let key = key(&block.info);
        let mut inner = self.lock();
        inner.remove(&key);
        if is_memory_only(&block.info.handle) {
            inner.memory_only += bytes;
            inner.blocks.insert(
                key,
                Entry {
                    block,
                    bytes: 0,
                    memory_only: bytes,
                    seq: None,
                },
            );
            return;
        }
        if bytes > inner.max_bytes {
            tracing::debug!(stream = block.info.stream, handle = %block.info.handle, bytes,
                "block larger than the block store's budget; it stays in the WAL only");
            return;
        }
        while inner.bytes + bytes > inner.max_bytes {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some(entry) = inner.blocks.remove(&oldest) {
                inner.bytes -= entry.bytes;
                inner.memory_only -= entry.memory_only;
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.order.insert(seq, key);
        inner.bytes += bytes;
        inner.blocks.insert(
            key,
            Entry {
                block,
                bytes,
                memory_only: 0,
                seq: Some(seq),
            },
        );
    }

    /// The block `info` names, if it is in memory.
    pub(crate) fn get(&self, info: &BlockInfo) -> Option<Block> {
        self.lock().blocks.get(&key(info)).map(|e| e.block.clone())
    }

    /// The block `info` names: from memory, or else read back from `wal` (the receiver WAL).
    /// A block read back is not put in the store (it is usually an old block, needed once, by a
    /// batch re-run after a restart).
    ///
    /// # Errors
    ///
    /// [`BlockStoreError::Wal`] if the record cannot be read (it was cleaned, or the storage
    /// failed); [`BlockStoreError::Corrupt`] if it does not decode to `info.records` records;
    /// [`BlockStoreError::Lost`] if the block was memory-only and is not in memory.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub(crate) async fn get_or_read(
        &self,
        info: &BlockInfo,
        wal: &Wal,
    ) -> Result<Block, BlockStoreError> {
        if let Some(block) = self.get(info) {
            return Ok(block);
        }
        if is_memory_only(&info.handle) {
            return Err(BlockStoreError::Lost {
                stream: info.stream,
                handle: info.handle,
            });
        }
        let payload = wal
            .read(info.handle)
            .await
            .map_err(|source| BlockStoreError::Wal {
                stream: info.stream,
                handle: info.handle,
                source,
            })?;
        let corrupt = |reason: String| BlockStoreError::Corrupt {
            stream: info.stream,
            handle: info.handle,
            reason,
        };
        let records = decode_records(&payload)
            .map_err(|e| corrupt(format!("not a block of records: {e}")))?;
        if records.len() as u64 != info.records {
            return Err(corrupt(format!(
                "it holds {} records, but the block was stored with {}",
                records.len(),
                info.records
            )));
        }
        Ok(Block {
            info: *info,
            records: Arc::from(records),
        })
    }

    /// Drops these blocks from memory (those not in it are ignored).
    pub(crate) fn remove(&self, blocks: &[BlockInfo]) {
        let freed = {
            let mut inner = self.lock();
            let before = inner.memory_only;
            for info in blocks {
                inner.remove(&key(info));
            }
            inner.memory_only < before
        };
        if freed {
            self.freed.notify_waiters();
        }
    }

    /// Waits until `bytes` more of memory-only blocks fit in the budget — at once if they
    /// do, or if no memory-only block is held (a block larger than the whole budget is let
    /// through alone rather than never). See the module documentation.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is reserved.
    pub(crate) async fn wait_for_room(&self, bytes: usize) {
        loop {
            // Registered before the check, so a removal between the check and the wait wakes
            // it.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let inner = self.lock();
                if inner.memory_only == 0 || inner.memory_only + bytes <= inner.max_bytes {
                    return;
                }
            }
            freed.await;
        }
    }

    /// The bytes of the memory-only blocks held (receiver WAL off): what
    /// [`wait_for_room`](Self::wait_for_room) bounds.
    pub(crate) fn memory_only_bytes(&self) -> usize {
        self.lock().memory_only
    }

    /// How many blocks are in memory.
    pub(crate) fn len(&self) -> usize {
        self.lock().blocks.len()
    }

    /// Whether no block is in memory.
    #[cfg_attr(not(test), expect(dead_code, reason = "what the tests inspect"))]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of records in memory that count against the eviction budget (memory-only
    /// blocks do not: see [`memory_only_bytes`](Self::memory_only_bytes)); with those, the
    /// `weir_block_store_bytes` metric.
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Storage;
    use crate::ingest::blocks::encode_records;
    use crate::wal::WalConfig;

    fn info(stream: StreamId, offset: u64, records: u64, stored_ms: u64) -> BlockInfo {
        BlockInfo {
            stream,
            handle: RecordHandle {
                segment: 1,
                offset,
                length: 1,
            },
            records,
            stored_ms,
        }
    }

    /// A block of `n` records of 10 bytes each.
    fn block(stream: StreamId, offset: u64, n: usize, stored_ms: u64) -> Block {
        let records: Vec<Bytes> = (0..n).map(|_| Bytes::from(vec![b'x'; 10])).collect();
        Block {
            info: info(stream, offset, n as u64, stored_ms),
            records: Arc::from(records),
        }
    }

    #[test]
    fn blocks_are_shared_not_copied() {
        let store = BlockStore::new(1000);
        let b = block(0, 1, 3, 5);
        store.insert(b.clone());
        let got = store.get(&b.info).unwrap();
        assert!(Arc::ptr_eq(&got.records, &b.records));
        assert_eq!(
            store.get(&info(1, 1, 3, 5)),
            None,
            "another stream, another block"
        );
        assert_eq!((store.len(), store.bytes()), (1, 30));
    }

    #[test]
    fn the_oldest_blocks_are_evicted_to_stay_within_the_budget() {
        let store = BlockStore::new(100);
        for i in 0..4 {
            store.insert(block(0, i, 3, i)); // 30 bytes each
        }
        assert_eq!((store.len(), store.bytes()), (3, 90));
        assert!(store.get(&info(0, 0, 3, 0)).is_none());
        assert!(store.get(&info(0, 3, 3, 3)).is_some());
        // Larger than the whole budget: not kept, nothing evicted for it.
        store.insert(block(0, 9, 11, 9));
        assert!(store.get(&info(0, 9, 11, 9)).is_none());
        assert_eq!(store.len(), 3);
        // Re-inserting a block replaces it rather than counting it twice.
        store.insert(block(0, 3, 3, 3));
        assert_eq!((store.len(), store.bytes()), (3, 90));
    }

    #[test]
    fn remove_drops_the_blocks_named_and_ignores_the_others() {
        let store = BlockStore::new(1000);
        for i in 0..5 {
            store.insert(block(i as StreamId % 2, i, 1, 100 + i));
        }
        store.remove(&[info(0, 0, 1, 100), info(7, 7, 1, 1)]);
        assert_eq!(store.len(), 4);
        store.remove(&[info(1, 1, 1, 0), info(0, 2, 1, 0)]);
        let left: Vec<u64> = (0..5)
            .filter(|i| store.get(&info(*i as StreamId % 2, *i, 1, 0)).is_some())
            .collect();
        assert_eq!(left, vec![3, 4]);
        assert_eq!(store.bytes(), 20);
    }

    #[tokio::test]
    async fn memory_only_blocks_are_never_evicted_and_are_lost_once_removed() {
        let (wal, _) = Wal::open(Storage::memory(), WalConfig::default())
            .await
            .unwrap();
        let store = BlockStore::new(50);
        let memory_only = |n: usize| {
            let records: Vec<Bytes> = (0..n).map(|_| Bytes::from(vec![b'm'; 10])).collect();
            Block {
                info: BlockInfo {
                    stream: 2,
                    handle: memory_handle(10 * n as u32),
                    records: n as u64,
                    stored_ms: 7,
                },
                records: Arc::from(records),
            }
        };
        let (a, b) = (memory_only(3), memory_only(9)); // b alone is over the budget
        assert_ne!(a.info.handle, b.info.handle, "each handle is new");
        assert!(is_memory_only(&a.info.handle));
        assert!(!is_memory_only(&info(0, 1, 1, 1).handle));
        store.insert(a.clone());
        store.insert(b.clone());
        for i in 0..10 {
            store.insert(block(0, i, 3, i)); // WAL-backed blocks evict each other only
        }
        assert!(Arc::ptr_eq(
            &store.get_or_read(&a.info, &wal).await.unwrap().records,
            &a.records
        ));
        assert!(store.get(&b.info).is_some());
        assert!(
            store.bytes() <= 50,
            "memory-only blocks are outside the budget"
        );
        store.remove(&[a.info]);
        assert!(matches!(
            store.get_or_read(&a.info, &wal).await,
            Err(BlockStoreError::Lost { stream: 2, .. })
        ));
        assert!(store.get(&info(0, 9, 3, 9)).is_some());
    }

    fn memory_only_block(records: usize, len: usize) -> Block {
        let recs: Vec<Bytes> = (0..records).map(|_| Bytes::from(vec![b'm'; len])).collect();
        Block {
            info: BlockInfo {
                stream: 3,
                handle: memory_handle((records * len) as u32),
                records: records as u64,
                stored_ms: 1,
            },
            records: Arc::from(recs),
        }
    }

    #[tokio::test]
    async fn memory_only_blocks_wait_for_room_in_the_budget_until_blocks_are_removed() {
        let store = BlockStore::new(100);
        // Room at once while they fit.
        store.wait_for_room(60).await;
        let first = memory_only_block(6, 10);
        store.insert(first.clone());
        assert_eq!(store.memory_only_bytes(), 60);
        store.wait_for_room(40).await;
        let second = memory_only_block(4, 10);
        store.insert(second.clone());
        assert_eq!(store.memory_only_bytes(), 100);
        // Full: the next block waits …
        let waiting = {
            let store = store.clone();
            tokio::spawn(async move { store.wait_for_room(50).await })
        };
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "admitted over the budget");
        // … through a removal that frees too little (60 + 50 > 100) …
        store.remove(&[second.info]);
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "admitted with 60 + 50 over 100");
        // … until enough is removed.
        store.remove(&[first.info]);
        waiting.await.unwrap();
        assert_eq!(store.memory_only_bytes(), 0);
        // A block larger than the whole budget passes when nothing memory-only is held.
        let empty = BlockStore::new(10);
        empty.wait_for_room(1000).await;
        // WAL-backed blocks never count here.
        empty.insert(block(0, 1, 3, 1));
        assert_eq!(empty.memory_only_bytes(), 0);
    }

    #[tokio::test]
    async fn an_evicted_block_is_read_back_from_the_wal() {
        let (wal, _) = Wal::open(Storage::memory(), WalConfig::default())
            .await
            .unwrap();
        let records = vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")];
        let payload = Bytes::from(encode_records(&records).unwrap());
        let handle = wal.append(payload).await.unwrap();
        let info = BlockInfo {
            stream: 4,
            handle,
            records: 2,
            stored_ms: 1,
        };
        let store = BlockStore::new(1000);
        let block = store.get_or_read(&info, &wal).await.unwrap();
        assert_eq!(block.info, info);
        assert_eq!(&block.records[..], &records[..]);
        assert!(store.is_empty(), "a block read back is not cached");

        let wrong_count = BlockInfo { records: 3, ..info };
        let err = store.get_or_read(&wrong_count, &wal).await.unwrap_err();
        assert!(
            matches!(err, BlockStoreError::Corrupt { .. }) && err.to_string().contains("3"),
            "{err}"
        );
        let nowhere = BlockInfo {
            handle: RecordHandle {
                segment: 99,
                ..handle
            },
            ..info
        };
        assert!(matches!(
            store.get_or_read(&nowhere, &wal).await,
            Err(BlockStoreError::Wal { .. })
        ));
    }
}
