//! Rate control of a whole streaming context: fixed caps per receiver and per direct-source
//! partition, and backpressure — the PID estimator of [`crate::sources::rate`] fed by every
//! completed batch.
//!
//! Spark's settings map one to one:
//!
//! | weir ([`RateConfig`]) | Spark | default |
//! |---|---|---|
//! | `receiver_max_rate` | `spark.streaming.receiver.maxRate` | unlimited |
//! | `max_rate_per_partition` | `spark.streaming.kafka.maxRatePerPartition` | unlimited |
//! | `min_rate_per_partition` | `spark.streaming.kafka.minRatePerPartition` | 1 |
//! | `backpressure: Some(..)` | `spark.streaming.backpressure.enabled` | off |
//! | `BackpressureConfig::initial_rate` | `spark.streaming.backpressure.initialRate` | unlimited |
//! | `BackpressureConfig::pid` | `spark.streaming.backpressure.pid.*` | 1.0 / 0.2 / 0.0 / 100 |
//!
//! With backpressure on, a task follows the engine's `batch_completed` events and, after each,
//! computes a new rate for the whole context (records per second, over all its sources). The
//! rate is shared out evenly: each receiver may store `rate / sources` records per second, and
//! each direct stream may read `rate / sources` per second, split over its partitions in
//! proportion to their lag (as Spark's direct Kafka stream does). The fixed caps still apply on
//! top. Spark estimates per input stream; weir's batch events carry the batch's total record
//! count, so the estimate is per context — with one source, the same thing.
//!
//! Receivers are limited where records enter the engine: [`ReceiverContext::store`] waits for
//! admission (a token bucket that sleeps, never spins), so a receiver that reads faster than
//! its rate is slowed down — and a reliable source is acknowledged later, which is the point.
//! A direct stream's next batch is planned with fewer records per partition. A batch already
//! planned (e.g. to be re-run after a restart) is never re-planned.
//!
//! [`ReceiverContext::store`]: weir_actors::pipeline::ReceiverContext::store

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use weir_actors::Event;
use weir_actors::EventSubscription;
use weir_actors::pipeline::{Admission, BoxFuture, Receiver, ReceiverContext, UserError};

use crate::dstream::memo::lock;
use crate::sources::rate::{
    BatchStats, PidConfig, PidRateEstimator, RateError, RateHandle, RateLimiter,
};

/// How fast the sources of a streaming context may go. The default limits nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateConfig {
    /// At most this many records per second stored by each receiver. Default: unlimited.
    pub receiver_max_rate: Option<f64>,
    /// At most this many records per second read from each partition of a direct stream
    /// (so at most `rate × batch interval` per batch). Default: unlimited.
    pub max_rate_per_partition: Option<f64>,
    /// With backpressure, at least this many records per second per partition of a direct
    /// stream, so that it always makes progress. Default: 1.
    pub min_rate_per_partition: f64,
    /// Backpressure: `Some` turns the PID estimator on. Default: off.
    pub backpressure: Option<BackpressureConfig>,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            receiver_max_rate: None,
            max_rate_per_partition: None,
            min_rate_per_partition: 1.0,
            backpressure: None,
        }
    }
}

/// Backpressure settings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BackpressureConfig {
    /// The rate (records per second, for the whole context) before the first estimate.
    /// Default: unlimited (the fixed caps only).
    pub initial_rate: Option<f64>,
    /// The estimator's gains and floor.
    pub pid: PidConfig,
}

/// "No limit" in a [`RateHandle`], which holds a finite rate.
const UNLIMITED: f64 = f64::MAX;

impl RateConfig {
    /// Checks every rate: each must be a finite number above zero.
    ///
    /// # Errors
    ///
    /// The first invalid rate.
    pub fn validate(&self, batch_interval: Duration) -> Result<(), RateError> {
        let rates = [
            self.receiver_max_rate,
            self.max_rate_per_partition,
            Some(self.min_rate_per_partition),
            self.backpressure.and_then(|b| b.initial_rate),
        ];
        for rate in rates.into_iter().flatten() {
            RateHandle::new(rate)?;
        }
        if let Some(backpressure) = self.backpressure {
            PidRateEstimator::with_config(batch_interval, backpressure.pid)?;
        }
        Ok(())
    }

    fn limits_receivers(&self) -> bool {
        self.receiver_max_rate.is_some() || self.backpressure.is_some()
    }

    fn initial_total(&self) -> f64 {
        self.backpressure
            .and_then(|b| b.initial_rate)
            .unwrap_or(UNLIMITED)
    }
}

/// The rate-controlled sources of one context, and the estimator that steers them.
#[derive(Debug)]
pub(crate) struct RateControl {
    config: RateConfig,
    /// One handle per receiver stream: its records per second.
    receivers: Mutex<Vec<RateHandle>>,
    /// One handle per direct stream: its records per second over all its partitions.
    direct: Mutex<Vec<RateHandle>>,
}

impl RateControl {
    pub(crate) fn new(config: RateConfig) -> Self {
        RateControl {
            config,
            receivers: Mutex::new(Vec::new()),
            direct: Mutex::new(Vec::new()),
        }
    }

    fn sources(&self) -> usize {
        lock(&self.receivers).len() + lock(&self.direct).len()
    }

    /// The admission control of a new receiver stream (`None`: nothing limits it). Every start
    /// of the stream's receiver shares it.
    pub(crate) fn receiver_admission(&self) -> Result<Option<Arc<dyn Admission>>, RateError> {
        if !self.config.limits_receivers() {
            return Ok(None);
        }
        let handle = RateHandle::new(self.receiver_rate(self.config.initial_total()))?;
        lock(&self.receivers).push(handle.clone());
        Ok(Some(Arc::new(SharedLimiter {
            limiter: Mutex::new(RateLimiter::with_handle(handle)),
        })))
    }

    /// The rate of a new direct stream, over all its partitions (`None`: no backpressure).
    pub(crate) fn direct_rate(&self) -> Result<Option<RateHandle>, RateError> {
        if self.config.backpressure.is_none() {
            return Ok(None);
        }
        let handle = RateHandle::new(self.config.initial_total())?;
        lock(&self.direct).push(handle.clone());
        Ok(Some(handle))
    }

    fn receiver_rate(&self, share: f64) -> f64 {
        match self.config.receiver_max_rate {
            Some(cap) => share.min(cap),
            None => share,
        }
    }

    /// Publishes a new estimate for the whole context.
    pub(crate) fn publish(&self, total: f64) {
        let sources = self.sources().max(1);
        let share = total / sources as f64;
        for handle in lock(&self.receivers).iter() {
            let _ = handle.set(self.receiver_rate(share));
        }
        for handle in lock(&self.direct).iter() {
            let _ = handle.set(share);
        }
        tracing::debug!(rate = total, sources, "backpressure: new rate");
    }

    /// Starts following `events` when backpressure is on; the task ends with the
    /// subscription.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        batch_interval: Duration,
        mut events: EventSubscription,
    ) -> Result<Option<JoinHandle<()>>, RateError> {
        let Some(backpressure) = self.config.backpressure else {
            return Ok(None);
        };
        let mut estimator = PidRateEstimator::with_config(batch_interval, backpressure.pid)?;
        let control = Arc::clone(self);
        Ok(Some(tokio::spawn(async move {
            while let Some(record) = events.next().await {
                if let Some(stats) = batch_stats(&record.event)
                    && let Some(rate) = estimator.compute(stats)
                {
                    control.publish(rate);
                }
            }
        })))
    }
}

/// What the estimator needs from a `batch_completed` event.
fn batch_stats(event: &Event) -> Option<BatchStats> {
    match *event {
        Event::BatchCompleted {
            batch_time_ms,
            scheduling_delay_ms,
            processing_ms,
            records,
        } => Some(BatchStats {
            batch_time_ms,
            records,
            processing_delay_ms: processing_ms,
            scheduling_delay_ms,
        }),
        _ => None,
    }
}

/// How many records each partition of a direct stream may read in one batch, given their
/// `lags` (records available), the stream's rate (`None`: no backpressure) and the fixed
/// caps — Spark's `DirectKafkaInputDStream.maxMessagesPerPartition`. `None` for a partition:
/// no limit.
pub(crate) fn per_partition_caps(
    config: &RateConfig,
    rate: Option<f64>,
    lags: &[u64],
    batch_interval: Duration,
) -> Vec<Option<u64>> {
    let secs = batch_interval.as_secs_f64();
    let total_lag: u64 = lags.iter().sum();
    lags.iter()
        .map(|&lag| {
            let estimated = rate.filter(|r| *r < UNLIMITED).map(|rate| {
                // Share the stream's rate by lag; an idle stream shares it evenly.
                let share = if total_lag == 0 {
                    rate / lags.len().max(1) as f64
                } else {
                    rate * lag as f64 / total_lag as f64
                };
                share.max(config.min_rate_per_partition)
            });
            let per_sec = match (estimated, config.max_rate_per_partition) {
                (Some(e), Some(cap)) => Some(e.min(cap)),
                (e, cap) => e.or(cap),
            }?;
            Some((per_sec * secs).floor().max(1.0) as u64)
        })
        .collect()
}

/// A receiver whose every start stores through `admission`.
pub(crate) struct Admitted {
    pub(crate) inner: Box<dyn Receiver>,
    pub(crate) admission: Arc<dyn Admission>,
}

impl Receiver for Admitted {
    fn start(&mut self, ctx: ReceiverContext) -> BoxFuture<'_, Result<(), UserError>> {
        let ctx = ctx.with_admission(Arc::clone(&self.admission));
        self.inner.start(ctx)
    }
}

/// A token bucket shared by the restarts of one receiver.
#[derive(Debug)]
struct SharedLimiter {
    limiter: Mutex<RateLimiter>,
}

impl Admission for SharedLimiter {
    fn admit(&self, records: u64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let wait = {
                let mut limiter = lock(&self.limiter);
                // Backpressure before its first estimate: nothing to wait for.
                if limiter.rate() >= UNLIMITED {
                    return;
                }
                limiter.reserve(records)
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RateConfig {
        RateConfig {
            backpressure: Some(BackpressureConfig::default()),
            ..RateConfig::default()
        }
    }

    #[test]
    fn caps_follow_lag_and_fixed_limits() {
        let second = Duration::from_secs(1);
        // No backpressure, no cap: unlimited.
        assert_eq!(
            per_partition_caps(&RateConfig::default(), None, &[5, 5], second),
            vec![None, None]
        );
        // A fixed cap per partition, over half a second.
        let fixed = RateConfig {
            max_rate_per_partition: Some(100.0),
            ..RateConfig::default()
        };
        assert_eq!(
            per_partition_caps(&fixed, None, &[5, 5], Duration::from_millis(500)),
            vec![Some(50), Some(50)]
        );
        // Backpressure shares 300/s by lag: 1:2.
        assert_eq!(
            per_partition_caps(&config(), Some(300.0), &[10, 20], second),
            vec![Some(100), Some(200)]
        );
        // ... capped by the fixed limit, and floored by the minimum.
        let both = RateConfig {
            max_rate_per_partition: Some(150.0),
            min_rate_per_partition: 40.0,
            ..config()
        };
        assert_eq!(
            per_partition_caps(&both, Some(300.0), &[0, 1000], second),
            vec![Some(40), Some(150)]
        );
        // The initial "unlimited" rate of backpressure limits nothing.
        assert_eq!(
            per_partition_caps(&config(), Some(UNLIMITED), &[1, 1], second),
            vec![None, None]
        );
    }

    #[test]
    fn an_estimate_is_shared_by_all_sources_and_capped_per_receiver() {
        let control = RateControl::new(RateConfig {
            receiver_max_rate: Some(500.0),
            ..config()
        });
        assert!(control.receiver_admission().expect("valid").is_some());
        assert!(control.receiver_admission().expect("valid").is_some());
        let direct = control
            .direct_rate()
            .expect("valid")
            .expect("backpressure is on");
        control.publish(900.0);
        let receivers: Vec<f64> = lock(&control.receivers)
            .iter()
            .map(RateHandle::get)
            .collect();
        assert_eq!(receivers, vec![300.0, 300.0]);
        assert_eq!(direct.get(), 300.0);
        control.publish(3000.0);
        let receivers: Vec<f64> = lock(&control.receivers)
            .iter()
            .map(RateHandle::get)
            .collect();
        assert_eq!(
            receivers,
            vec![500.0, 500.0],
            "the fixed cap applies on top"
        );
        assert_eq!(direct.get(), 1000.0);
    }

    #[tokio::test]
    async fn completed_batches_steer_the_rate() {
        let hub = weir_actors::EventHub::new(16);
        let control = Arc::new(RateControl::new(config()));
        let direct = control
            .direct_rate()
            .expect("valid")
            .expect("backpressure is on");
        assert_eq!(direct.get(), UNLIMITED, "no estimate yet: unlimited");
        let task = control
            .spawn(Duration::from_secs(1), hub.subscribe())
            .expect("valid")
            .expect("backpressure is on");
        let completed = |t, records, processing_ms, scheduling_delay_ms| Event::BatchCompleted {
            batch_time_ms: t,
            scheduling_delay_ms,
            processing_ms,
            records,
        };
        // The first batch only seeds the estimate (2000 records/s).
        hub.publish(completed(1000, 1000, 500, 0));
        // Then 500 records/s, 1 s behind: 2000 - 1.0 * (2000 - 500) - 0.2 * 500 = 400.
        hub.publish(completed(2000, 1000, 2000, 1000));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while direct.get() == UNLIMITED {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no rate was published"
            );
            tokio::task::yield_now().await;
        }
        assert!((direct.get() - 400.0).abs() < 1e-9, "rate {}", direct.get());
        task.abort();
    }

    #[test]
    fn without_limits_receivers_are_not_wrapped() {
        let control = RateControl::new(RateConfig::default());
        assert!(control.receiver_admission().expect("valid").is_none());
        assert!(control.direct_rate().expect("valid").is_none());
    }

    #[test]
    fn invalid_rates_are_refused() {
        let bad = RateConfig {
            receiver_max_rate: Some(-1.0),
            ..RateConfig::default()
        };
        assert!(bad.validate(Duration::from_secs(1)).is_err());
        assert!(config().validate(Duration::from_secs(1)).is_ok());
    }
}
