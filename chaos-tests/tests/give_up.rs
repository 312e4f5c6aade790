//! A receiver that keeps failing until its restart budget is spent: the failure escalates up
//! the tree, the engine gives up, and says why with a typed error — while everything that was
//! acknowledged before is still committed exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use weir_actors::Storage;
use weir_actors::{EngineConfig, EngineError};
use weir_chaos_tests::{
    HarnessContext, Numbered, NumberedConfig, Parts, RunConfig, Runner, Schedule, VisibleBatch,
    Workload,
};

/// The harness's workload with small restart budgets: a user's own `Workload` adjusts the
/// engine the same way, in `configure`.
struct SmallBudgets(Numbered);

impl Workload for SmallBudgets {
    fn build(&self, ctx: &HarnessContext) -> Parts {
        self.0.build(ctx)
    }

    fn configure(&self, config: &mut EngineConfig) {
        config.receiver_restart_delay = Duration::from_millis(5);
        for policy in [&mut config.receiver_policy, &mut config.driver_policy] {
            policy.intensity.max_restarts = 2;
            policy.intensity.period = Duration::from_secs(60);
            policy.backoff.initial = Duration::from_millis(5);
            policy.backoff.max = Duration::from_millis(20);
        }
    }

    fn visible(&self) -> Option<BTreeMap<u64, VisibleBatch>> {
        self.0.visible()
    }

    fn restarted(&self) {
        self.0.heal();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_until_its_budget_is_spent_is_given_up_with_its_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workload = Arc::new(SmallBudgets(Numbered::new(NumberedConfig {
        receivers_fail_after: Some(5),
        ..NumberedConfig::default()
    })));
    let mut config = RunConfig::new(Storage::local(dir.path()), "give-up/");
    config.bounds.give_up_expected = true;
    // After the give-up, start again (receivers fixed): what was acknowledged before must be
    // committed then.
    config.restart_after_give_up = true;
    let runner = Runner::new(workload, config);
    let outcome = runner
        .run(&Schedule {
            seed: 0,
            steps: Vec::new(),
        })
        .await;
    match &outcome.engine {
        Err(EngineError::GaveUp { actor, reason, .. }) => {
            assert_eq!(actor, "give-up/driver");
            assert!(
                reason.contains("failed after 5 stores"),
                "the give-up does not carry the receiver's error: {reason}"
            );
        }
        other => panic!("expected the engine to give up, got {other:?}"),
    }
    let h = &outcome.history;
    assert!(
        h.give_ups.iter().any(|g| g.child == "give-up/receiver-0"),
        "no supervisor gave up on the receiver: {:?}",
        h.give_ups
    );
    assert!(
        matches!(outcome.restarted, Some(Ok(()))),
        "the engine did not run again after the give-up: {:?}",
        outcome.restarted
    );
    assert!(outcome.report.is_ok(), "{}", outcome.report);
    assert!(
        !h.acknowledged.is_empty(),
        "nothing was acknowledged before the give-up"
    );
}
