//! The token bucket under paused time, and Spark's `PIDRateEstimatorSuite` scenarios
//! re-derived from the estimator's documented semantics.

use std::time::Duration;

use tokio::time::Instant;
use weir::sources::rate::{
    BatchStats, PidConfig, PidRateEstimator, RateError, RateHandle, RateLimiter,
};

// ====================================== limiter ====================================== //

#[tokio::test(start_paused = true)]
async fn limiter_holds_the_rate_for_single_records() {
    let mut limiter = RateLimiter::new(1000.0).unwrap().with_burst(1.0).unwrap();
    let start = Instant::now();
    for _ in 0..5000 {
        limiter.acquire(1).await;
    }
    // The first record uses the full bucket; the other 4999 wait 1 ms each.
    let elapsed = start.elapsed().as_secs_f64();
    assert!((4.99..=5.01).contains(&elapsed), "took {elapsed} s");
}

#[tokio::test(start_paused = true)]
async fn a_large_request_waits_in_proportion_to_its_size() {
    let mut limiter = RateLimiter::new(100.0).unwrap().with_burst(10.0).unwrap();
    let start = Instant::now();
    limiter.acquire(510).await;
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    // The debt is paid: the next record waits for one token only.
    let start = Instant::now();
    limiter.acquire(1).await;
    assert_eq!(start.elapsed(), Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn an_idle_spell_allows_at_most_one_burst() {
    let mut limiter = RateLimiter::new(100.0).unwrap().with_burst(10.0).unwrap();
    limiter.acquire(10).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let start = Instant::now();
    limiter.acquire(10).await;
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "a full bucket passes at once"
    );
    limiter.acquire(1).await;
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(10),
        "but holds only ten"
    );
}

#[tokio::test(start_paused = true)]
async fn the_default_burst_is_a_tenth_of_a_second() {
    let mut limiter = RateLimiter::new(1000.0).unwrap();
    assert_eq!(limiter.reserve(100), Duration::ZERO);
    assert_eq!(limiter.reserve(1), Duration::from_millis(1));
}

#[tokio::test(start_paused = true)]
async fn a_rate_change_through_the_handle_applies_to_the_next_acquire() {
    let mut limiter = RateLimiter::new(10.0).unwrap().with_burst(1.0).unwrap();
    let handle = limiter.handle();
    limiter.acquire(1).await;
    let start = Instant::now();
    limiter.acquire(1).await;
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    handle.set(1000.0).unwrap();
    assert_eq!(limiter.rate(), 1000.0);
    let start = Instant::now();
    for _ in 0..100 {
        limiter.acquire(1).await;
    }
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[test]
fn nonsense_rates_are_refused_with_a_sentence() {
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = RateLimiter::new(rate).unwrap_err();
        assert!(
            matches!(err, RateError::InvalidRate { .. }),
            "{rate}: {err}"
        );
    }
    let handle = RateHandle::new(5.0).unwrap();
    assert!(handle.set(0.0).is_err());
    assert_eq!(handle.get(), 5.0, "a refused rate leaves the old one");
    let err = RateLimiter::new(5.0).unwrap().with_burst(0.5).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a burst must be a finite number of at least one record, not 0.5"
    );
}

// ===================================== estimator ===================================== //

fn stats(time: u64, records: u64, processing: u64, scheduling: u64) -> BatchStats {
    BatchStats {
        batch_time_ms: time,
        records,
        processing_delay_ms: processing,
        scheduling_delay_ms: scheduling,
    }
}

fn estimator(interval_ms: u64, p: f64, i: f64, d: f64, min_rate: f64) -> PidRateEstimator {
    PidRateEstimator::with_config(
        Duration::from_millis(interval_ms),
        PidConfig {
            proportional: p,
            integral: i,
            derivative: d,
            min_rate,
        },
    )
    .expect("valid estimator settings")
}

/// Spark's suite uses a 20 ms interval, kP = 1 and no other terms as its default.
fn default_estimator() -> PidRateEstimator {
    estimator(20, 1.0, 0.0, 0.0, 10.0)
}

#[test]
fn spark_defaults_are_the_documented_gains() {
    let config = PidConfig::default();
    assert_eq!(
        (
            config.proportional,
            config.integral,
            config.derivative,
            config.min_rate
        ),
        (1.0, 0.2, 0.0, 100.0)
    );
}

#[test]
fn estimator_checks_ranges() {
    let interval = Duration::from_millis(100);
    let with = |p, i, d, min_rate| {
        PidRateEstimator::with_config(
            interval,
            PidConfig {
                proportional: p,
                integral: i,
                derivative: d,
                min_rate,
            },
        )
    };
    assert!(matches!(
        PidRateEstimator::new(Duration::ZERO),
        Err(RateError::InvalidBatchInterval { .. })
    ));
    assert!(matches!(
        with(-1.0, 2.0, 3.0, 10.0),
        Err(RateError::InvalidGain {
            term: "proportional",
            ..
        })
    ));
    assert!(matches!(
        with(0.0, -1.0, 3.0, 10.0),
        Err(RateError::InvalidGain {
            term: "integral",
            ..
        })
    ));
    assert!(matches!(
        with(0.0, 0.0, -1.0, 10.0),
        Err(RateError::InvalidGain {
            term: "derivative",
            ..
        })
    ));
    assert!(matches!(
        with(0.0, 0.0, 0.0, 0.0),
        Err(RateError::InvalidRate { .. })
    ));
    assert!(matches!(
        with(0.0, 0.0, 0.0, -10.0),
        Err(RateError::InvalidRate { .. })
    ));
    assert!(with(0.0, 0.0, 0.0, 1.0).is_ok());
}

#[test]
fn first_estimate_is_none() {
    let mut p = default_estimator();
    assert_eq!(p.compute(stats(0, 10, 10, 0)), None);
}

#[test]
fn second_estimate_is_the_processing_rate() {
    let mut p = default_estimator();
    p.compute(stats(0, 10, 10, 0));
    // 10 records in 10 ms: 1000 records/s.
    assert_eq!(p.compute(stats(10, 10, 10, 0)), Some(1000.0));
}

#[test]
fn no_estimate_when_no_time_passed_between_batches() {
    let mut p = default_estimator();
    p.compute(stats(0, 10, 10, 0));
    assert!(p.compute(stats(10, 10, 10, 0)).is_some());
    assert_eq!(p.compute(stats(10, 10, 10, 0)), None);
    assert_eq!(p.compute(stats(5, 10, 10, 0)), None, "an older batch too");
}

#[test]
fn no_estimate_when_the_batch_had_no_records() {
    let mut p = default_estimator();
    p.compute(stats(0, 10, 10, 0));
    assert_eq!(p.compute(stats(10, 0, 10, 0)), None);
    // The skipped batch changed nothing: the next one still estimates.
    assert_eq!(p.compute(stats(20, 10, 10, 0)), Some(1000.0));
}

#[test]
fn no_estimate_when_there_is_no_processing_delay() {
    let mut p = default_estimator();
    p.compute(stats(0, 10, 10, 0));
    assert_eq!(p.compute(stats(10, 10, 0, 0)), None);
}

#[test]
fn no_records_before_the_first_batch_seeds_nothing() {
    let mut p = default_estimator();
    assert_eq!(p.compute(stats(0, 0, 10, 0)), None);
    // Still the first run: this batch seeds.
    assert_eq!(p.compute(stats(10, 10, 10, 0)), None);
    assert_eq!(p.compute(stats(20, 10, 10, 0)), Some(1000.0));
}

#[test]
fn estimate_is_never_less_than_min_rate() {
    let min_rate = 5.0;
    let mut p = estimator(20, 1.0, 1.0, 0.0, min_rate);
    // One batch every 20 ms with one record processed in 20 ms (50 records/s) and a large
    // scheduling delay: the integral term pushes far below zero; the floor holds.
    let results: Vec<_> = (0..50)
        .map(|i| p.compute(stats(i * 20, 1, 20, 100)))
        .collect();
    assert_eq!(results[0], None);
    assert!(
        results[1..].iter().all(|r| *r == Some(min_rate)),
        "{results:?}"
    );
}

#[test]
fn with_no_accumulated_error_an_increasing_speed_is_followed() {
    // The integral gain is non-zero, but with no scheduling delay only kP = 1 acts, so the
    // estimate is exactly the last batch's processing rate.
    let mut p = estimator(20, 1.0, 1.0, 0.0, 10.0);
    for i in 0..50u64 {
        let records = (i + 1) * 20; // increasing, always processed in 20 ms
        let rate = p.compute(stats(i * 20, records, 20, 0));
        let expected = (i > 0).then(|| (i + 1) as f64 * 1000.0);
        assert_eq!(rate, expected, "batch {i}");
    }
}

#[test]
fn with_no_accumulated_error_a_decreasing_speed_is_followed() {
    let mut p = estimator(20, 1.0, 1.0, 0.0, 10.0);
    for i in 0..50u64 {
        let records = (50 - i) * 20; // decreasing: ask for less and less
        let rate = p.compute(stats(i * 20, records, 20, 0));
        let expected = (i > 0).then(|| (50 - i) as f64 * 1000.0);
        assert_eq!(rate, expected, "batch {i}");
    }
}

#[test]
fn with_accumulated_error_the_estimate_stays_below_the_processing_speed() {
    let mut p = estimator(20, 1.0, 0.01, 0.0, 10.0);
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..50u64 {
        let records = rng.u64(1..1000);
        let scheduling = rng.u64(0..19);
        let speed = records as f64 / 20.0 * 1000.0;
        let rate = p.compute(stats(i * 20, records, 20, scheduling));
        if i == 0 {
            assert_eq!(rate, None);
            continue;
        }
        let rate = rate.unwrap_or_else(|| panic!("batch {i} gave no estimate"));
        if scheduling > 0 {
            assert!(rate < speed, "batch {i}: {rate} >= {speed}");
        }
    }
}

#[test]
fn the_derivative_term_damps_a_growing_error() {
    // Worked by hand: seed at 1000/s, then a batch at 500/s one second later.
    let mut p = estimator(1000, 0.0, 0.0, 0.5, 1.0);
    assert_eq!(p.compute(stats(1000, 1000, 1000, 0)), None);
    // error = 1000 - 500 = 500; dError = (500 - 0) / 1 s; rate = 1000 - 0.5 * 500.
    assert_eq!(p.compute(stats(2000, 500, 1000, 0)), Some(750.0));
}

#[test]
fn the_integral_term_uses_the_scheduling_delay_as_backlog() {
    // error 0 (steady 1000/s) but 500 ms of scheduling delay on a 1 s interval:
    // historical error = 500 * 1000 / 1000 = 500; rate = 1000 - 0.2 * 500.
    let mut p = PidRateEstimator::new(Duration::from_secs(1)).unwrap();
    p.compute(stats(1000, 1000, 1000, 0));
    assert_eq!(p.compute(stats(2000, 1000, 1000, 500)), Some(900.0));
}
