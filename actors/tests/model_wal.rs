//! State-machine property test of the WAL against a model: the list of records that must be in
//! the log, in order. Transitions append groups concurrently, roll, crash (the runtime dies with
//! the log open), crash with a torn group commit at the end of the newest segment, and reopen.
//! After every transition the log holds exactly the model's records.

// Helpers outside `#[test]` functions are test code too (clippy's `allow-unwrap-in-tests`
// only covers the test functions themselves).
#![allow(clippy::unwrap_used)]
mod common;

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use common::{Mode, Store, payloads, read_all};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use tokio::runtime::Runtime;
use weir_actors::wal::format::{encode_frame, frame_len};
use weir_actors::wal::{Wal, WalConfig};

/// The model: what must be in the log.
#[derive(Clone, Debug, Default)]
struct Model {
    /// The records, grouped as they were added: an `Append` is one group (its records may be
    /// in any order among themselves, the order the log assigned), every frame recovered from
    /// a torn crash is a group of its own.
    groups: Vec<Vec<Vec<u8>>>,
    /// Whether a segment exists (some append happened), so a torn write has a segment to tear.
    has_segment: bool,
}

#[derive(Clone)]
enum Transition {
    Append(Vec<Vec<u8>>),
    Roll,
    Crash,
    TornCrash { payloads: Vec<Vec<u8>>, cut: Index },
    Reopen,
}

impl fmt::Debug for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lens = |ps: &[Vec<u8>]| ps.iter().map(Vec::len).collect::<Vec<_>>();
        match self {
            Transition::Append(ps) => write!(f, "Append(lens {:?})", lens(ps)),
            Transition::Roll => f.write_str("Roll"),
            Transition::Crash => f.write_str("Crash"),
            Transition::TornCrash { payloads, cut } => {
                let total = torn_frames(payloads).len();
                write!(
                    f,
                    "TornCrash(lens {:?}, cut {} of {total})",
                    lens(payloads),
                    cut.index(total + 1)
                )
            }
            Transition::Reopen => f.write_str("Reopen"),
        }
    }
}

/// The frames a torn crash writes (record time: the payload's length, any value will do).
fn torn_frames(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        encode_frame(&mut out, p.len() as u64, p);
    }
    out
}

/// The payloads whose frames lie wholly within the first `cut` bytes.
fn whole_before(payloads: &[Vec<u8>], cut: usize) -> Vec<Vec<u8>> {
    let mut end = 0;
    payloads
        .iter()
        .take_while(|p| {
            end += frame_len(p.len());
            end <= cut
        })
        .cloned()
        .collect()
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=300)
}

fn group() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(payload(), 1..=8)
}

struct WalModel;

impl ReferenceStateMachine for WalModel {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Transition> {
        let common = prop_oneof![
            6 => group().prop_map(Transition::Append),
            1 => Just(Transition::Roll),
            2 => Just(Transition::Crash),
            2 => Just(Transition::Reopen),
        ];
        if state.has_segment {
            prop_oneof![
                11 => common,
                3 => (prop::collection::vec(payload(), 1..=4), any::<Index>())
                    .prop_map(|(payloads, cut)| Transition::TornCrash { payloads, cut }),
            ]
            .boxed()
        } else {
            common.boxed()
        }
    }

    fn preconditions(state: &Model, transition: &Transition) -> bool {
        match transition {
            Transition::TornCrash { .. } => state.has_segment,
            _ => true,
        }
    }

    fn apply(mut state: Model, transition: &Transition) -> Model {
        match transition {
            Transition::Append(group) => {
                state.groups.push(group.clone());
                state.has_segment = true;
            }
            Transition::TornCrash { payloads, cut } => {
                let cut = cut.index(torn_frames(payloads).len() + 1);
                for p in whole_before(payloads, cut) {
                    state.groups.push(vec![p]);
                }
            }
            Transition::Roll | Transition::Crash | Transition::Reopen => {}
        }
        state
    }
}

/// Which storage mode a state-machine test runs in.
trait ModeOf {
    const MODE: Mode;
}

struct Local;
struct Memory;
struct ObjectFs;

impl ModeOf for Local {
    const MODE: Mode = Mode::Local;
}
impl ModeOf for Memory {
    const MODE: Mode = Mode::Memory;
}
impl ModeOf for ObjectFs {
    const MODE: Mode = Mode::ObjectFs;
}
#[cfg(feature = "s3")]
struct S3;
#[cfg(feature = "s3")]
impl ModeOf for S3 {
    const MODE: Mode = Mode::S3;
}

/// The system under test: a log and the runtime of the "process" that has it open.
struct Sut {
    store: Store,
    /// Dropped (with the log) by a crash; a fresh one is built for the next process lifetime.
    rt: Runtime,
    wal: Option<Wal>,
    /// The log's records in log order, as the acknowledgements ordered them.
    expected: Vec<Vec<u8>>,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl Sut {
    fn wal(&self) -> &Wal {
        self.wal.as_ref().unwrap()
    }

    /// Opens the log on a fresh runtime (a new process lifetime).
    fn start(store: Store) -> Sut {
        let rt = runtime();
        let (wal, _) = rt
            .block_on(Wal::open(store.storage(), WalConfig::default()))
            .unwrap();
        Sut {
            store,
            rt,
            wal: Some(wal),
            expected: Vec::new(),
        }
    }

    /// The process dies: the log is dropped without close, and so is its runtime.
    fn crash(&mut self) {
        drop(self.wal.take());
        self.rt = runtime();
    }

    fn open(&mut self) {
        let (wal, report) = self
            .rt
            .block_on(Wal::open(self.store.storage(), WalConfig::default()))
            .unwrap();
        assert_eq!(report.records as usize, self.expected.len());
        self.wal = Some(wal);
    }
}

struct WalTest<M>(PhantomData<M>);

impl<M: ModeOf> StateMachineTest for WalTest<M> {
    type SystemUnderTest = Sut;
    type Reference = WalModel;

    fn init_test(_: &Model) -> Sut {
        Sut::start(Store::new(M::MODE))
    }

    fn apply(mut sut: Sut, _: &Model, transition: Transition) -> Sut {
        match transition {
            Transition::Append(group) => {
                let wal = sut.wal().clone();
                let acked = sut.rt.block_on(async {
                    let appends = group.iter().map(|p| wal.append(Bytes::from(p.clone())));
                    futures::future::join_all(appends).await
                });
                let mut acked: Vec<_> = acked.into_iter().map(Result::unwrap).zip(group).collect();
                acked.sort_by_key(|(h, _)| *h);
                assert!(acked.windows(2).all(|w| w[0].0 < w[1].0), "a handle twice");
                sut.rt.block_on(async {
                    for (h, p) in &acked {
                        assert_eq!(wal.read(*h).await.unwrap().as_ref(), p.as_slice());
                    }
                });
                sut.expected.extend(acked.into_iter().map(|(_, p)| p));
            }
            Transition::Roll => sut.rt.block_on(sut.wal().roll()).unwrap(),
            Transition::Crash => {
                sut.crash();
                sut.open();
            }
            Transition::TornCrash { payloads, cut } => {
                sut.crash();
                let frames = torn_frames(&payloads);
                let cut = cut.index(frames.len() + 1);
                sut.rt.block_on(sut.store.append_raw(&frames[..cut]));
                sut.expected.extend(whole_before(&payloads, cut));
                sut.open();
            }
            Transition::Reopen => {
                let wal = sut.wal.take().unwrap();
                sut.rt.block_on(wal.close()).unwrap();
                sut.open();
            }
        }
        sut
    }

    fn check_invariants(sut: &Sut, model: &Model) {
        // The log holds exactly the records the acknowledgements promised, in their order...
        let wal = sut.wal();
        let records = sut.rt.block_on(read_all(wal));
        assert_eq!(payloads(&records), sut.expected);
        sut.rt.block_on(async {
            for r in &records {
                assert_eq!(wal.read(r.handle).await.unwrap(), r.payload);
            }
        });
        // ...and those are the model's: group by group, the same records.
        let mut at = 0;
        for group in &model.groups {
            let mut logged = sut.expected[at..at + group.len()].to_vec();
            let mut want = group.clone();
            logged.sort();
            want.sort();
            assert_eq!(logged, want);
            at += group.len();
        }
        assert_eq!(at, sut.expected.len());
    }

    fn teardown(sut: Sut, _: Model) {
        if let Some(wal) = &sut.wal {
            sut.rt.block_on(wal.clone().close()).unwrap();
        }
    }
}

fn config() -> Config {
    Config {
        cases: 24,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    }
}

prop_state_machine! {
    #![proptest_config(config())]

    #[test]
    fn log_matches_the_model_local(sequential 1..=30 => WalTest<Local>);

    #[test]
    fn log_matches_the_model_memory(sequential 1..=30 => WalTest<Memory>);

    #[test]
    fn log_matches_the_model_object_fs(sequential 1..=30 => WalTest<ObjectFs>);
}

#[cfg(feature = "s3")]
prop_state_machine! {
    #![proptest_config(config())]

    #[test]
    fn log_matches_the_model_s3(sequential 1..=30 => WalTest<S3>);
}
