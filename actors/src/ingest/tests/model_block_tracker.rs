//! State-machine property test of the received-block tracker against a model.
//!
//! The model is a plain reference implementation of Spark's rules: a list of unallocated
//! blocks in arrival order, the allocations by batch time, and the last allocated time. The
//! system under test is the real actor on a local WAL in a temporary directory, driven through
//! its messages. Transitions add blocks (random streams, many duplicates), allocate (the next
//! time, a live old time, or any older time), clean up, crash (kill the idle actor and start a
//! new one on the same log), restart after a graceful stop, and crash *during* a request: the
//! request is sent, the actor is killed a random number of scheduler turns later, a new one
//! starts on the log, and the request is sent again — as a receiver or job generator retries an
//! unanswered request. Whether the killed request reached the log or not, the result must be
//! the model's. Segments are tiny, so cleanups compact and delete segments, and crashes land in
//! the middle of compactions.
//!
//! After every transition the tracker's unallocated counts, every allocation (and the absence
//! of every other one) and its last allocated time equal the model's.

// Helpers outside `#[test]` functions are test code too.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::ingest::blocks::{BlockInfo, StreamId};
use crate::ingest::received_block_tracker::{
    Backlog, BatchAllocation, ReceivedBlockTracker, ReceivedBlockTrackerArgs,
    ReceivedBlockTrackerMsg as Msg, TrackerError,
};
use crate::wal::{RecordHandle, WalConfig};
use crate::{EventSink, Storage};
use proptest::prelude::*;
use proptest::test_runner::Config;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use ractor::{Actor, ActorRef, RpcReplyPort, call};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);
/// Streams the blocks come from.
const STREAMS: u64 = 3;
/// Block ids are drawn from this range, so adds repeat blocks often.
const BLOCK_IDS: u64 = 40;

/// The block with id `id`: always the same stream, handle and contents.
fn block(id: u64) -> BlockInfo {
    BlockInfo {
        stream: (id % STREAMS) as StreamId,
        handle: RecordHandle {
            segment: 1 + id / 16,
            offset: 64 + id * 50,
            length: 42,
        },
        records: id % 7 + 1,
        stored_ms: 1_000 + id,
    }
}

// ================================== the model ================================== //

#[derive(Clone, Debug, Default)]
struct Model {
    /// Unallocated blocks in arrival order, all streams together.
    unallocated: Vec<BlockInfo>,
    /// Live allocations: the blocks in arrival order.
    allocations: BTreeMap<u64, Vec<BlockInfo>>,
    last_allocated: Option<u64>,
    /// Every batch time any transition used, to check that no other allocation exists.
    times: BTreeSet<u64>,
}

impl Model {
    fn known(&self, b: &BlockInfo) -> bool {
        self.unallocated.contains(b) || self.allocations.values().any(|a| a.contains(b))
    }

    fn add(&mut self, ids: &[u64]) {
        for b in ids.iter().map(|id| block(*id)) {
            if !self.known(&b) {
                self.unallocated.push(b);
            }
        }
    }

    fn allocate(&mut self, t: u64) {
        self.times.insert(t);
        if self.allocations.contains_key(&t) || self.last_allocated.is_some_and(|l| t <= l) {
            return;
        }
        self.allocations
            .insert(t, std::mem::take(&mut self.unallocated));
        self.last_allocated = Some(t);
    }

    fn cleanup(&mut self, before: u64) {
        self.times.insert(before);
        self.allocations.retain(|t, _| *t >= before);
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Add(ids) => self.add(ids),
            Op::Allocate(t) => self.allocate(*t),
            Op::Cleanup(before) => self.cleanup(*before),
        }
    }

    /// The allocation of `t` as the tracker reports it: grouped by stream, order kept.
    fn allocation(&self, t: u64) -> Option<BatchAllocation> {
        let blocks = self.allocations.get(&t)?;
        let mut grouped = BatchAllocation::default();
        for b in blocks {
            grouped.blocks.entry(b.stream).or_default().push(*b);
        }
        Some(grouped)
    }

    fn backlog(&self) -> BTreeMap<StreamId, Backlog> {
        let mut backlog = BTreeMap::<StreamId, Backlog>::new();
        for b in &self.unallocated {
            let entry = backlog.entry(b.stream).or_default();
            entry.blocks += 1;
            entry.records += b.records;
        }
        backlog
    }
}

/// A request to the tracker.
#[derive(Clone, Debug)]
enum Op {
    Add(Vec<u64>),
    Allocate(u64),
    Cleanup(u64),
}

#[derive(Clone, Debug)]
enum Transition {
    Do(Op),
    /// Kill the idle actor; start a new one on the log.
    Crash,
    /// Stop the actor gracefully; start a new one on the log.
    Restart,
    /// Send `op`, kill the actor after `turns` scheduler turns, start a new one, send `op`
    /// again.
    CrashDuring {
        op: Op,
        turns: u8,
    },
}

fn op(state: &Model) -> BoxedStrategy<Op> {
    let last = state.last_allocated.unwrap_or(0);
    let add = prop::collection::vec(0..BLOCK_IDS, 1..=6).prop_map(Op::Add);
    let next = (1..=3u64).prop_map(move |d| Op::Allocate(last + 10 * d));
    let older = (0..=last).prop_map(Op::Allocate);
    let cleanup = (0..=last + 20).prop_map(Op::Cleanup);
    let live: Vec<u64> = state.allocations.keys().copied().collect();
    if live.is_empty() {
        prop_oneof![5 => add, 4 => next, 1 => older, 2 => cleanup].boxed()
    } else {
        let again = prop::sample::select(live).prop_map(Op::Allocate);
        prop_oneof![5 => add, 4 => next, 1 => older, 1 => again, 2 => cleanup].boxed()
    }
}

struct TrackerModel;

impl ReferenceStateMachine for TrackerModel {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Transition> {
        prop_oneof![
            10 => op(state).prop_map(Transition::Do),
            1 => Just(Transition::Crash),
            1 => Just(Transition::Restart),
            3 => (op(state), 0..40u8).prop_map(|(op, turns)| Transition::CrashDuring { op, turns }),
        ]
        .boxed()
    }

    fn apply(mut state: Model, transition: &Transition) -> Model {
        match transition {
            Transition::Do(op) | Transition::CrashDuring { op, .. } => state.apply(op),
            Transition::Crash | Transition::Restart => {}
        }
        state
    }
}

// ============================ the system under test ============================ //

struct Sut {
    rt: Runtime,
    dir: TempDir,
    actor: ActorRef<Msg>,
    join: JoinHandle<()>,
}

fn wal_config() -> WalConfig {
    WalConfig {
        // Tiny segments: the log rolls every few records, so cleanups compact and delete.
        segment_max_bytes: 160,
        ..WalConfig::default()
    }
}

async fn spawn(dir: &TempDir) -> (ActorRef<Msg>, JoinHandle<()>) {
    let args = ReceivedBlockTrackerArgs {
        wal_storage: Storage::local(dir.path()),
        wal_config: wal_config(),
        events: EventSink::discard(),
    };
    Actor::spawn(None, ReceivedBlockTracker, args)
        .await
        .unwrap()
}

impl Sut {
    /// Replaces the (stopped) actor with a new one on the same log.
    fn respawn(&mut self) {
        let (actor, join) = self.rt.block_on(spawn(&self.dir));
        self.actor = actor;
        let old = std::mem::replace(&mut self.join, join);
        assert!(old.is_finished());
    }

    fn kill(&mut self) {
        self.rt.block_on(async {
            self.actor.kill_and_wait(Some(WAIT)).await.unwrap();
            (&mut self.join).await.unwrap();
        });
    }

    /// Sends `op` and checks the answer against the model (`model` is the state after `op`).
    fn request(&self, op: &Op, model: &Model) {
        let actor = &self.actor;
        self.rt.block_on(async {
            match op {
                Op::Add(ids) => {
                    let blocks = ids.iter().map(|id| block(*id)).collect::<Vec<_>>();
                    call!(actor, Msg::AddBlocks, blocks).unwrap().unwrap();
                }
                Op::Allocate(t) => {
                    let got = call!(actor, Msg::AllocateBatch, *t).unwrap();
                    match (got, model.allocation(*t)) {
                        (Ok(got), Some(want)) => assert_eq!(got, want, "allocation of {t}"),
                        (Err(TrackerError::BatchTooOld { .. }), None) => {}
                        (got, want) => panic!("allocating {t}: got {got:?}, want {want:?}"),
                    }
                }
                Op::Cleanup(before) => {
                    let report = call!(actor, Msg::CleanupBefore, *before).unwrap().unwrap();
                    assert_eq!(report.compaction_error, None);
                }
            }
        });
    }

    /// Sends `op` without waiting for the answer; kills the actor `turns` scheduler turns later.
    fn crash_during(&mut self, op: &Op, turns: u8) {
        let msg = match op {
            Op::Add(ids) => Msg::AddBlocks(ids.iter().map(|id| block(*id)).collect(), unread()),
            Op::Allocate(t) => Msg::AllocateBatch(*t, unread()),
            Op::Cleanup(before) => Msg::CleanupBefore(*before, unread()),
        };
        self.actor.cast(msg).unwrap();
        self.rt.block_on(async {
            for _ in 0..turns {
                tokio::task::yield_now().await;
            }
        });
        self.kill();
    }
}

/// A reply port whose answer nobody reads (the caller "died" with the request in flight).
fn unread<T: Send + 'static>() -> RpcReplyPort<T> {
    ractor::concurrency::oneshot().0.into()
}

struct TrackerTest;

impl StateMachineTest for TrackerTest {
    type SystemUnderTest = Sut;
    type Reference = TrackerModel;

    fn init_test(_: &Model) -> Sut {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (actor, join) = rt.block_on(spawn(&dir));
        Sut {
            rt,
            dir,
            actor,
            join,
        }
    }

    fn apply(mut sut: Sut, model: &Model, transition: Transition) -> Sut {
        match transition {
            Transition::Do(op) => sut.request(&op, model),
            Transition::Crash => {
                sut.kill();
                sut.respawn();
            }
            Transition::Restart => {
                sut.rt.block_on(async {
                    sut.actor.stop_and_wait(None, Some(WAIT)).await.unwrap();
                    (&mut sut.join).await.unwrap();
                });
                sut.respawn();
            }
            Transition::CrashDuring { op, turns } => {
                sut.crash_during(&op, turns);
                sut.respawn();
                sut.request(&op, model);
            }
        }
        sut
    }

    fn check_invariants(sut: &Sut, model: &Model) {
        let actor = &sut.actor;
        sut.rt.block_on(async {
            assert_eq!(call!(actor, Msg::Unallocated).unwrap(), model.backlog());
            for t in &model.times {
                let got = call!(actor, Msg::GetAllocation, *t).unwrap();
                assert_eq!(got, model.allocation(*t), "allocation of {t}");
            }
            let state = call!(actor, Msg::Inspect).unwrap();
            assert_eq!(state.allocations().len(), model.allocations.len());
            assert_eq!(state.last_allocated_ms(), model.last_allocated);
        });
    }

    fn teardown(mut sut: Sut, _: Model) {
        sut.kill();
    }
}

fn config() -> Config {
    Config {
        cases: 32,
        max_shrink_iters: 512,
        failure_persistence: None,
        ..Config::default()
    }
}

prop_state_machine! {
    #![proptest_config(config())]

    #[test]
    fn tracker_matches_the_model_across_crashes(sequential 1..=40 => TrackerTest);
}
