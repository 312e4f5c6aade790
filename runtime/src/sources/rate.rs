//! Rate control: a token bucket that caps how fast a source hands over records, and Spark's
//! PID estimator that computes what that cap should be from how fast batches complete.
//!
//! A receiver that reads faster than the batches can be processed only builds a backlog: the
//! scheduling delay grows batch after batch until memory or the WAL runs out. Spark answers
//! this in two layers, and so does weir:
//!
//! * a fixed cap per receiver (`spark.streaming.receiver.maxRate`), enforced where records
//!   enter — here [`RateLimiter`], a token bucket whose `acquire` *sleeps* (no busy loop)
//!   until the records may pass;
//! * backpressure (`spark.streaming.backpressure.enabled`): after every completed batch,
//!   [`PidRateEstimator::compute`] turns the batch's size, processing delay and scheduling
//!   delay into a new rate, which is published to the receivers through a [`RateHandle`]
//!   (Spark's `UpdateReceiverRateLimit`) or used to size the next offset ranges of a direct
//!   source.
//!
//! The estimator is a faithful port of Spark's `PIDRateEstimator`, including its quirks (the
//! first completed batch only seeds the estimate; a batch with no records or no processing
//! time is ignored), so that Spark's tuning advice carries over unchanged.
//!
//! Time comes from [`tokio::time`], so tests can run the limiter under paused time.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Why a rate or an estimator setting was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RateError {
    /// A rate must be a finite number of records per second above zero.
    #[error("a rate must be a finite number of records per second above zero, not {rate}")]
    InvalidRate {
        /// The refused rate.
        rate: f64,
    },
    /// A burst must be at least one record.
    #[error("a burst must be a finite number of at least one record, not {burst}")]
    InvalidBurst {
        /// The refused burst.
        burst: f64,
    },
    /// The batch interval of a PID estimator must be at least one millisecond.
    #[error("the batch interval of a rate estimator must be at least 1 ms, not {interval:?}")]
    InvalidBatchInterval {
        /// The refused interval.
        interval: Duration,
    },
    /// A PID gain must be a finite number of zero or more.
    #[error("the {term} gain of a rate estimator must be a finite number >= 0, not {value}")]
    InvalidGain {
        /// `proportional`, `integral` or `derivative`.
        term: &'static str,
        /// The refused value.
        value: f64,
    },
}

fn check_rate(rate: f64) -> Result<f64, RateError> {
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err(RateError::InvalidRate { rate })
    }
}

// ====================================== the limiter ====================================== //

/// A shared, live-adjustable rate (records per second) of one or more [`RateLimiter`]s.
///
/// This is how backpressure reaches a running receiver: the limiter reads the rate on every
/// `acquire`, so a [`set`](RateHandle::set) takes effect from the next record on. Cloning
/// shares the rate.
#[derive(Clone)]
pub struct RateHandle {
    bits: Arc<AtomicU64>,
}

impl RateHandle {
    /// A handle holding `records_per_sec`.
    ///
    /// # Errors
    ///
    /// The rate is not a finite number above zero.
    pub fn new(records_per_sec: f64) -> Result<Self, RateError> {
        let rate = check_rate(records_per_sec)?;
        Ok(RateHandle {
            bits: Arc::new(AtomicU64::new(rate.to_bits())),
        })
    }

    /// The current rate in records per second.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }

    /// Sets the rate; the limiters sharing this handle use it from their next `acquire`.
    ///
    /// # Errors
    ///
    /// The rate is not a finite number above zero; the old rate stays.
    pub fn set(&self, records_per_sec: f64) -> Result<(), RateError> {
        let rate = check_rate(records_per_sec)?;
        self.bits.store(rate.to_bits(), Ordering::Relaxed);
        Ok(())
    }
}

impl fmt::Debug for RateHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RateHandle").field(&self.get()).finish()
    }
}

/// How many seconds of the rate the bucket holds unless told otherwise (see
/// [`RateLimiter::with_burst`]).
pub const DEFAULT_BURST_SECS: f64 = 0.1;

/// A token bucket: lets on average `rate` records per second through, with bursts of at most
/// `burst` records after an idle spell.
///
/// Tokens accrue continuously at the rate, up to the burst. [`acquire(n)`](Self::acquire)
/// takes `n` tokens at once, even more than the bucket holds, and then sleeps off the debt:
/// it returns when the bucket would be back at zero. So a large request waits in proportion
/// to its size, a small one passes at once while tokens last, and the long-run rate holds for
/// any mix of sizes. Waiting is a [`tokio::time::sleep`], never a spin.
///
/// The bucket starts full. Its burst is, unless [set](Self::with_burst), a tenth of a second
/// of the rate (at least one record); it follows the rate when the [`RateHandle`] changes it.
#[derive(Debug)]
pub struct RateLimiter {
    rate: RateHandle,
    /// The burst as a multiple of the rate (seconds), or a fixed count of records.
    burst: Burst,
    tokens: f64,
    last: Instant,
}

#[derive(Clone, Copy, Debug)]
enum Burst {
    Seconds(f64),
    Records(f64),
}

impl Clone for RateLimiter {
    /// A limiter with the same (shared) rate and burst and a full bucket of its own.
    fn clone(&self) -> Self {
        let mut limiter = RateLimiter {
            rate: self.rate.clone(),
            burst: self.burst,
            tokens: 0.0,
            last: Instant::now(),
        };
        limiter.tokens = limiter.capacity(limiter.rate.get());
        limiter
    }
}

impl RateLimiter {
    /// A limiter letting `records_per_sec` records per second through.
    ///
    /// # Errors
    ///
    /// The rate is not a finite number above zero.
    pub fn new(records_per_sec: f64) -> Result<Self, RateError> {
        Ok(Self::with_handle(RateHandle::new(records_per_sec)?))
    }

    /// A limiter whose rate is `handle`'s, shared with everyone holding a clone of it.
    pub fn with_handle(handle: RateHandle) -> Self {
        let mut limiter = RateLimiter {
            rate: handle,
            burst: Burst::Seconds(DEFAULT_BURST_SECS),
            tokens: 0.0,
            last: Instant::now(),
        };
        limiter.tokens = limiter.capacity(limiter.rate.get());
        limiter
    }

    /// Sets the bucket's size to a fixed number of records (at least 1), and fills it.
    ///
    /// # Errors
    ///
    /// `records` is not a finite number of at least one.
    pub fn with_burst(mut self, records: f64) -> Result<Self, RateError> {
        if !(records.is_finite() && records >= 1.0) {
            return Err(RateError::InvalidBurst { burst: records });
        }
        self.burst = Burst::Records(records);
        self.tokens = records;
        Ok(self)
    }

    /// The handle through which the rate can be changed while the limiter runs.
    pub fn handle(&self) -> RateHandle {
        self.rate.clone()
    }

    /// The current rate in records per second.
    pub fn rate(&self) -> f64 {
        self.rate.get()
    }

    fn capacity(&self, rate: f64) -> f64 {
        match self.burst {
            Burst::Seconds(secs) => (rate * secs).max(1.0),
            Burst::Records(records) => records,
        }
    }

    /// Takes `n` tokens now and returns how long to wait before the `n` records may pass
    /// (zero if the bucket held enough). For callers that want to do something else before
    /// waiting — a receiver flushes what it buffered — instead of [`acquire`](Self::acquire).
    ///
    /// The tokens are taken even if the caller then does not wait: the limiter errs on the
    /// slow side.
    pub fn reserve(&mut self, n: u64) -> Duration {
        let now = Instant::now();
        let rate = self.rate.get();
        // `last` is in the future while a debt is being waited off: nothing accrues until then.
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(self.capacity(rate));
        self.last = self.last.max(now);
        if n == 0 {
            return Duration::ZERO;
        }
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        // Settle the debt at today's rate: the bucket is empty when the wait ends, so a rate
        // change during the wait applies only to what comes after.
        let debt = Duration::try_from_secs_f64(-self.tokens / rate).unwrap_or(Duration::MAX);
        self.tokens = 0.0;
        match self.last.checked_add(debt) {
            Some(paid) => {
                self.last = paid;
                paid.saturating_duration_since(now)
            }
            // Only for absurdly low rates: wait "forever".
            None => debt,
        }
    }

    /// Waits until `n` more records may pass.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in that it never lets more records through than the rate allows: if
    /// cancelled while waiting, the tokens stay taken, so the next `acquire` waits longer.
    pub async fn acquire(&mut self, n: u64) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

// ===================================== the estimator ===================================== //

/// The gains and floor of a [`PidRateEstimator`]; the defaults are Spark's
/// (`spark.streaming.backpressure.pid.*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PidConfig {
    /// How much the correction depends on the current error (default 1.0).
    pub proportional: f64,
    /// How much it depends on the accumulated error, measured by the scheduling delay
    /// (default 0.2).
    pub integral: f64,
    /// How much it depends on the error's rate of change (default 0.0).
    pub derivative: f64,
    /// The lowest rate it ever proposes, in records per second (default 100; must be > 0 so
    /// that some records always flow and the next estimate has data).
    pub min_rate: f64,
}

impl Default for PidConfig {
    fn default() -> Self {
        PidConfig {
            proportional: 1.0,
            integral: 0.2,
            derivative: 0.0,
            min_rate: 100.0,
        }
    }
}

/// What the estimator learns from one completed batch (Spark's `BatchInfo` fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchStats {
    /// The batch time (ms).
    pub batch_time_ms: u64,
    /// How many records the batch held.
    pub records: u64,
    /// How long the batch took to process (ms).
    pub processing_delay_ms: u64,
    /// How long the batch waited before it started (ms).
    pub scheduling_delay_ms: u64,
}

/// Spark's PID rate estimator: after each completed batch, proposes the rate (records per
/// second) at which the source should send so that batches finish within the batch interval.
///
/// For a batch with `n` records processed in `p` ms after waiting `s` ms:
///
/// ```text
/// processing rate  r = n / p · 1000
/// error            e = latest rate − r
/// historical error h = s · r / batch interval        (the backlog, as a rate)
/// error derivative d = (e − latest error) / seconds since the latest estimate
/// new rate           = max(min rate, latest rate − kP·e − kI·h − kD·d)
/// ```
///
/// A batch is ignored (`None`) unless it is newer than the latest one used and has records
/// and a processing delay. The first batch used only seeds the latest rate with its
/// processing rate and also returns `None`.
#[derive(Clone, Debug)]
pub struct PidRateEstimator {
    batch_interval_ms: f64,
    config: PidConfig,
    first_run: bool,
    latest_time_ms: Option<u64>,
    latest_rate: f64,
    latest_error: f64,
}

impl PidRateEstimator {
    /// An estimator for batches every `batch_interval`, with Spark's default gains.
    ///
    /// # Errors
    ///
    /// The interval is under one millisecond.
    pub fn new(batch_interval: Duration) -> Result<Self, RateError> {
        Self::with_config(batch_interval, PidConfig::default())
    }

    /// An estimator with chosen gains and floor.
    ///
    /// # Errors
    ///
    /// The interval is under one millisecond, a gain is negative or not finite, or the
    /// minimum rate is not above zero.
    pub fn with_config(batch_interval: Duration, config: PidConfig) -> Result<Self, RateError> {
        if batch_interval.as_millis() == 0 {
            return Err(RateError::InvalidBatchInterval {
                interval: batch_interval,
            });
        }
        for (term, value) in [
            ("proportional", config.proportional),
            ("integral", config.integral),
            ("derivative", config.derivative),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(RateError::InvalidGain { term, value });
            }
        }
        check_rate(config.min_rate)?;
        Ok(PidRateEstimator {
            batch_interval_ms: batch_interval.as_millis() as f64,
            config,
            first_run: true,
            latest_time_ms: None,
            latest_rate: -1.0,
            latest_error: -1.0,
        })
    }

    /// The gains and floor in use.
    pub fn config(&self) -> PidConfig {
        self.config
    }

    /// Takes in a completed batch; returns the new rate, or `None` if this batch gives no
    /// estimate (see the type's documentation).
    pub fn compute(&mut self, batch: BatchStats) -> Option<f64> {
        let newer = self.latest_time_ms.is_none_or(|t| batch.batch_time_ms > t);
        if !(newer && batch.records > 0 && batch.processing_delay_ms > 0) {
            tracing::trace!(?batch, "rate estimation skipped");
            return None;
        }
        // Spark starts `latestTime` at -1 ms; only the (discarded) first estimate sees it.
        let since_ms = match self.latest_time_ms {
            Some(t) => (batch.batch_time_ms - t) as f64,
            None => batch.batch_time_ms as f64 + 1.0,
        };
        let delay_since_update = since_ms / 1000.0;
        let processing_rate = batch.records as f64 / batch.processing_delay_ms as f64 * 1000.0;
        let error = self.latest_rate - processing_rate;
        let historical_error =
            batch.scheduling_delay_ms as f64 * processing_rate / self.batch_interval_ms;
        let d_error = (error - self.latest_error) / delay_since_update;
        let c = &self.config;
        let new_rate = (self.latest_rate
            - c.proportional * error
            - c.integral * historical_error
            - c.derivative * d_error)
            .max(c.min_rate);
        self.latest_time_ms = Some(batch.batch_time_ms);
        if self.first_run {
            self.latest_rate = processing_rate;
            self.latest_error = 0.0;
            self.first_run = false;
            tracing::trace!(processing_rate, "first batch seeds the rate estimate");
            None
        } else {
            self.latest_rate = new_rate;
            self.latest_error = error;
            tracing::trace!(
                new_rate,
                error,
                historical_error,
                d_error,
                "new rate estimate"
            );
            Some(new_rate)
        }
    }
}
