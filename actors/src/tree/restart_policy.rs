//! OTP-style restart policy for weir's supervisors, on top of ractor's linking.
//!
//! ractor gives mechanisms, not policy: `spawn_linked` and [`SupervisionEvent`]s, but no
//! restart strategy, no intensity limit, no backoff. This module is the policy, as pure logic
//! that the supervising actors call from `handle_supervisor_evt`; it decides, the actor acts.
//!
//! * [`Exit::classify`] turns a supervision event into a normal or abnormal exit. A `kill()`
//!   arrives from ractor as a *normal* termination with the reason `"killed"`; here it is
//!   abnormal, so a chaos kill is restarted like a panic.
//! * [`RestartType`] says whether an exit is restarted: permanent children always, transient
//!   ones only after an abnormal exit, temporary ones never.
//! * [`Strategy`] says which children restart with it: the one (one-for-one), all
//!   (one-for-all), or it and every child started after it (rest-for-one).
//! * [`RestartTracker`] enforces the restart intensity — at most `max_restarts` within
//!   `period`, or the supervisor gives up and escalates to its parent — and computes the
//!   exponential backoff with jitter, which resets after a quiet period.
//!
//! Times are [`tokio::time::Instant`], so tests run the policy under paused time.

use std::collections::VecDeque;
use std::time::Duration;

use ractor::SupervisionEvent;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Which children restart when one of them exits and is to be restarted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the child that exited.
    #[default]
    OneForOne,
    /// Every child: the others are stopped first, then all start again in order.
    OneForAll,
    /// The child that exited and every child started after it.
    RestForOne,
}

impl Strategy {
    /// The indices (in start order) of the children to restart when child `failed` of
    /// `count` exits.
    pub fn restart_set(self, failed: usize, count: usize) -> std::ops::Range<usize> {
        match self {
            Strategy::OneForOne => failed..failed + 1,
            Strategy::OneForAll => 0..count,
            Strategy::RestForOne => failed..count,
        }
    }
}

/// When a child is restarted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RestartType {
    /// Always, whatever the exit.
    #[default]
    Permanent,
    /// Only after an abnormal exit (a failure, a panic, a kill).
    Transient,
    /// Never.
    Temporary,
}

impl RestartType {
    /// Whether a child of this type is restarted after `exit`.
    pub(crate) fn restarts_after(self, exit: &Exit) -> bool {
        match self {
            RestartType::Permanent => true,
            RestartType::Transient => exit.is_abnormal(),
            RestartType::Temporary => false,
        }
    }
}

/// How a child ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "exit", rename_all = "snake_case")]
pub(crate) enum Exit {
    /// It stopped by itself or was stopped (the reason, if one was given).
    Normal {
        /// The stop reason.
        reason: Option<String>,
    },
    /// It failed: returned an error, panicked, or was killed.
    Abnormal {
        /// What happened, as a sentence fragment (`"killed"`, the panic message, the error).
        reason: String,
    },
}

/// The reason ractor gives a `kill()`ed actor's termination.
pub(crate) const KILLED: &str = "killed";
/// The reason ractor gives an actor whose task was cancelled (runtime shutdown).
const TASK_CANCELLED: &str = "actor_task_cancelled";

impl Exit {
    /// Classifies a supervision event; `None` for events that are not exits.
    ///
    /// A kill and a cancelled task are abnormal: ractor reports them as terminations, but the
    /// actor did not choose to end.
    pub(crate) fn classify(event: &SupervisionEvent) -> Option<Exit> {
        match event {
            SupervisionEvent::ActorFailed(_, err) => Some(Exit::Abnormal {
                reason: err.to_string(),
            }),
            SupervisionEvent::ActorTerminated(_, _, Some(reason))
                if reason == KILLED || reason == TASK_CANCELLED =>
            {
                Some(Exit::Abnormal {
                    reason: reason.clone(),
                })
            }
            SupervisionEvent::ActorTerminated(_, _, reason) => Some(Exit::Normal {
                reason: reason.clone(),
            }),
            _ => None,
        }
    }

    /// Whether the exit is a failure.
    pub(crate) fn is_abnormal(&self) -> bool {
        matches!(self, Exit::Abnormal { .. })
    }

    /// The reason, for messages.
    pub(crate) fn reason(&self) -> &str {
        match self {
            Exit::Normal { reason } => reason.as_deref().unwrap_or("stopped"),
            Exit::Abnormal { reason } => reason,
        }
    }
}

/// At most `max_restarts` restarts within `period`; one more and the supervisor gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intensity {
    /// Restarts allowed within `period`.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl Default for Intensity {
    /// 5 restarts in 60 s.
    fn default() -> Self {
        Intensity {
            max_restarts: 5,
            period: Duration::from_secs(60),
        }
    }
}

/// Exponential backoff between restarts, with jitter, reset after a quiet period.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// The delay before the first restart (and after a reset).
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// Each restart multiplies the delay by this (at least 1).
    pub multiplier: u32,
    /// Up to this fraction of the delay is added at random (0.0 – 1.0), so that many
    /// supervisors restarting at once do not retry in lockstep.
    pub jitter: f64,
    /// After this long without a restart, the next delay starts from `initial` again.
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// 100 ms, doubling, at most 10 s, 20 % jitter, reset after 60 s quiet.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2,
            jitter: 0.2,
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// No delay at all.
    pub fn none() -> Self {
        Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            multiplier: 1,
            jitter: 0.0,
            reset_after: Duration::ZERO,
        }
    }

    /// The delay before restart number `attempt` (0 for the first after a reset), without
    /// jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let factor = u64::from(self.multiplier.max(1)).saturating_pow(attempt);
        let nanos = u64::try_from(self.initial.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(nanos.saturating_mul(factor)).min(self.max)
    }
}

/// A supervisor's restart policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Which children restart together.
    pub strategy: Strategy,
    /// How many restarts before giving up.
    pub intensity: Intensity,
    /// How long to wait before each restart.
    pub backoff: Backoff,
}

/// The restart intensity was exceeded: the supervisor gives up and escalates.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error(
    "gave up after {restarts} restarts within {period:?} (the limit is {max_restarts}); the \
     last failure: {last_reason}"
)]
pub(crate) struct GaveUp {
    /// Restarts within the window, this one included.
    pub restarts: u32,
    /// The limit.
    pub max_restarts: u32,
    /// The window.
    pub period: Duration,
    /// Why the last child exited.
    pub last_reason: String,
}

/// Tracks one supervisor's restarts: intensity window and backoff.
#[derive(Debug)]
pub(crate) struct RestartTracker {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
    attempt: u32,
    last: Option<Instant>,
    rng: fastrand::Rng,
}

impl RestartTracker {
    /// A tracker for `policy`; `seed` makes the jitter reproducible.
    pub(crate) fn new(policy: RestartPolicy, seed: u64) -> Self {
        RestartTracker {
            policy,
            recent: VecDeque::new(),
            attempt: 0,
            last: None,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The policy.
    pub(crate) fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Records a restart decided at `now` after an exit for `reason`. Returns the delay to wait
    /// before restarting, or [`GaveUp`] when this restart would exceed the intensity.
    pub(crate) fn on_restart(&mut self, now: Instant, reason: &str) -> Result<Duration, GaveUp> {
        let Intensity {
            max_restarts,
            period,
        } = self.policy.intensity;
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= period)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let restarts = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        if restarts > max_restarts {
            return Err(GaveUp {
                restarts,
                max_restarts,
                period,
                last_reason: reason.to_owned(),
            });
        }
        let backoff = self.policy.backoff;
        if self
            .last
            .is_some_and(|t| now.duration_since(t) >= backoff.reset_after)
        {
            self.attempt = 0;
        }
        self.last = Some(now);
        let base = backoff.base_delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = backoff.jitter.clamp(0.0, 1.0) * self.rng.f64();
        Ok(base + base.mul_f64(jitter))
    }

    /// Restarts counted in the current window.
    pub(crate) fn recent_restarts(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_restarts: u32, period_s: u64, backoff: Backoff) -> RestartPolicy {
        RestartPolicy {
            strategy: Strategy::OneForOne,
            intensity: Intensity {
                max_restarts,
                period: Duration::from_secs(period_s),
            },
            backoff,
        }
    }

    #[test]
    fn restart_sets_follow_the_strategy() {
        assert_eq!(Strategy::OneForOne.restart_set(1, 4), 1..2);
        assert_eq!(Strategy::OneForAll.restart_set(1, 4), 0..4);
        assert_eq!(Strategy::RestForOne.restart_set(1, 4), 1..4);
        assert_eq!(Strategy::RestForOne.restart_set(3, 4), 3..4);
    }

    #[test]
    fn restart_types_decide_by_exit() {
        let normal = Exit::Normal { reason: None };
        let failed = Exit::Abnormal {
            reason: "boom".into(),
        };
        assert!(RestartType::Permanent.restarts_after(&normal));
        assert!(RestartType::Permanent.restarts_after(&failed));
        assert!(!RestartType::Transient.restarts_after(&normal));
        assert!(RestartType::Transient.restarts_after(&failed));
        assert!(!RestartType::Temporary.restarts_after(&failed));
    }

    #[tokio::test(start_paused = true)]
    async fn intensity_gives_up_on_the_restart_past_the_limit_and_forgets_old_ones() {
        let mut t = RestartTracker::new(policy(3, 10, Backoff::none()), 1);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(t.on_restart(Instant::now(), "x").is_ok());
        }
        let gave_up = t.on_restart(Instant::now(), "boom").unwrap_err();
        assert_eq!((gave_up.restarts, gave_up.max_restarts), (4, 3));
        assert!(gave_up.to_string().contains("boom"), "{gave_up}");

        // Ten seconds later the window has emptied.
        let mut t = RestartTracker::new(policy(3, 10, Backoff::none()), 1);
        for _ in 0..3 {
            t.on_restart(start, "x").unwrap();
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(t.on_restart(Instant::now(), "x").is_ok());
        assert_eq!(t.recent_restarts(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_max_and_resets_after_a_quiet_period() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            multiplier: 2,
            jitter: 0.0,
            reset_after: Duration::from_secs(30),
        };
        let mut t = RestartTracker::new(policy(100, 1000, backoff), 1);
        let delays: Vec<u64> = (0..5)
            .map(|_| t.on_restart(Instant::now(), "x").unwrap().as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            t.on_restart(Instant::now(), "x").unwrap(),
            Duration::from_millis(100)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_within_its_fraction_and_is_reproducible_from_the_seed() {
        let backoff = Backoff {
            jitter: 0.5,
            reset_after: Duration::from_secs(3600),
            ..Backoff::default()
        };
        let run = |seed| {
            let mut t = RestartTracker::new(policy(100, 1000, backoff), seed);
            (0..6)
                .map(|_| t.on_restart(Instant::now(), "x").unwrap())
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        for (attempt, d) in a.iter().enumerate() {
            let base = backoff.base_delay(attempt as u32);
            assert!(
                *d >= base && *d <= base.mul_f64(1.5),
                "attempt {attempt}: {d:?} vs {base:?}"
            );
        }
        assert_ne!(a, run(8), "different seeds give different jitter");
    }
}
