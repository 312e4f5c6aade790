//! Rate control of a streaming context: a direct stream reads at most its per-partition rate
//! per batch, and a receiver stores at most its rate, on the real engine.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;
use weir::dstream::StartingOffsets;
use weir::testing::{Collected, ManualClock, MemoryLog};
use weir::{Storage, StreamingConfig, StreamingContext, UserError};
use weir_actors::pipeline::{BoxFuture, Receiver, ReceiverContext};

fn log(partitions: usize, records: usize) -> Arc<MemoryLog> {
    let log = MemoryLog::new("log", partitions);
    for p in 0..partitions {
        for i in 0..records {
            log.append(p, &[&format!("{p}-{i}")]);
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_stream_reads_at_most_its_rate_per_partition() {
    let source = log(2, 10);
    let out = Collected::default();
    let (s, o) = (Arc::clone(&source), out.clone());
    // 3 records per second per partition, batches of half a second: 1 record per partition
    // per batch (never less than one).
    let mut clock = ManualClock::with_config(
        500,
        2,
        |config| config.rate.max_rate_per_partition = Some(3.0),
        move |ctx| {
            let records = ctx
                .direct_stream(s.clone(), StartingOffsets::Earliest, None)
                .uid("log")
                .map(|b| String::from_utf8(b.to_vec()).unwrap());
            o.collect(&records);
        },
    )
    .unwrap();
    clock.run(3).await.unwrap();
    for (k, batch) in out.all_sorted().iter().enumerate() {
        assert_eq!(
            batch,
            &vec![format!("0-{k}"), format!("1-{k}")],
            "batch {k}"
        );
    }

    // At 1 s batches the same rate is 3 per partition per batch, and a smaller fixed cap
    // per batch wins.
    let out = Collected::default();
    let (s, o) = (Arc::clone(&source), out.clone());
    let mut clock = ManualClock::with_config(
        1000,
        2,
        |config| config.rate.max_rate_per_partition = Some(3.0),
        move |ctx| {
            o.collect(
                &ctx.direct_stream(s.clone(), StartingOffsets::Earliest, None)
                    .map(|b| String::from_utf8(b.to_vec()).unwrap()),
            );
        },
    )
    .unwrap();
    clock.run(4).await.unwrap();
    let sizes: Vec<usize> = out.all_sorted().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![6, 6, 6, 2], "3 + 3 per batch, then the rest");
}

/// Stores 10 records at a time as fast as it may, and tells how many were acknowledged.
#[derive(Clone)]
struct Flood {
    acked: Arc<AtomicU64>,
    progress: watch::Sender<u64>,
}

impl Receiver for Flood {
    fn start(&mut self, ctx: ReceiverContext) -> BoxFuture<'_, Result<(), UserError>> {
        Box::pin(async move {
            while !ctx.is_stopping() {
                let records = vec![Bytes::from_static(b"r"); 10];
                if ctx.store(records).await.is_ok() {
                    let acked = self.acked.fetch_add(10, Ordering::SeqCst) + 10;
                    self.progress.send_replace(acked);
                }
            }
            Ok(())
        })
    }
}

/// How long (virtual time) until a flooding receiver had 300 records acknowledged, with the
/// given per-receiver rate limit.
async fn time_to_store_300(rate: Option<f64>, prefix: &str) -> Duration {
    let mut config =
        StreamingConfig::new(Storage::memory()).batch_interval(Duration::from_millis(200));
    config.engine.name_prefix = prefix.to_owned();
    config.rate.receiver_max_rate = rate;
    let context = StreamingContext::new(config);
    let (progress, mut watch) = watch::channel(0);
    let flood = Flood {
        acked: Arc::default(),
        progress,
    };
    let seen = Arc::new(Mutex::new(0u64));
    let s = Arc::clone(&seen);
    context
        .receiver_stream(move || Box::new(flood.clone()) as Box<dyn Receiver>)
        .foreach_batch(move |batch| {
            *s.lock().unwrap() += batch.len() as u64;
            Ok(())
        });
    let mut context = context;
    let started = Instant::now();
    context.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(600), watch.wait_for(|n| *n >= 300))
        .await
        .expect("300 records are stored within 10 virtual minutes")
        .unwrap();
    let elapsed = started.elapsed();
    context.stop(false).await.unwrap();
    elapsed
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_receiver_stores_at_most_its_rate() {
    // 100 records/s with a burst of a tenth of a second (10 records): 300 records take at
    // least (300 - 10) / 100 s.
    let limited = time_to_store_300(Some(100.0), "rate-limited-").await;
    assert!(
        limited >= Duration::from_millis(2900),
        "300 records at 100/s were stored in {limited:?}"
    );
    assert!(limited < Duration::from_secs(5), "took {limited:?}");
    // Without the limit the same receiver is not held back.
    let unlimited = time_to_store_300(None, "rate-unlimited-").await;
    assert!(
        unlimited < Duration::from_secs(1),
        "without a limit it took {unlimited:?}"
    );
}
