//! `get_or_create` refuses a checkpoint that does not fit the current code at once, naming the
//! operator — it does not start a driver that fails on it again and again until the root gives
//! up.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::Path;
use std::time::Duration;

use weir::dstream::QueueStream;
use weir::{Error, StreamingConfig, StreamingContext};

fn configure(config: StreamingConfig) -> StreamingConfig {
    let mut config = config.batch_interval(Duration::from_millis(50));
    config.engine.name_prefix = format!("restore-check-{}/", fastrand::u32(..));
    config.parallelism = 1;
    config
}

/// Runs a running count per word until one batch with records completed, then stops.
async fn run_once(dir: &Path) {
    let queue = QueueStream::new(true, 1);
    queue.push(vec!["a".to_owned(), "b".to_owned(), "a".to_owned()]);
    let (seen, mut saw) = tokio::sync::watch::channel(false);
    let mut ctx = StreamingContext::get_or_create(dir, |config| {
        let ctx = StreamingContext::new(configure(config));
        ctx.queue_stream(&queue)
            .uid("words")
            .map(|w: &String| (w.clone(), 1u64))
            .update_state_by_key(|values: &[u64], total: Option<u64>| {
                Some(total.unwrap_or(0) + values.iter().sum::<u64>())
            })
            .uid("totals")
            .foreach_batch(move |batch| {
                if !batch.is_empty() {
                    seen.send_replace(true);
                }
                Ok(())
            });
        Ok(ctx)
    })
    .await
    .unwrap();
    ctx.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), saw.wait_for(|seen| *seen))
        .await
        .expect("the totals are output")
        .unwrap();
    // A graceful stop checkpoints the completed batches, state included.
    ctx.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_state_type_is_refused_by_get_or_create() {
    let dir = tempfile::tempdir().unwrap();
    run_once(dir.path()).await;
    let queue: QueueStream<String> = QueueStream::new(true, 1);
    let err = StreamingContext::get_or_create(dir.path(), |config| {
        let ctx = StreamingContext::new(configure(config));
        ctx.queue_stream(&queue)
            .uid("words")
            .map(|w: &String| (w.clone(), 1u64))
            // The state is now a String: the checkpoint's u64 totals do not fit.
            .update_state_by_key(|_: &[u64], s: Option<String>| s.or(Some(String::new())))
            .uid("totals")
            .foreach_batch(|_| Ok(()));
        Ok(ctx)
    })
    .await
    .unwrap_err();
    match err {
        Error::Incompatible(message) => assert!(message.contains("\"totals\""), "{message}"),
        other => panic!("expected Incompatible, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_stateful_operator_is_refused_unless_its_state_may_be_dropped() {
    let dir = tempfile::tempdir().unwrap();
    run_once(dir.path()).await;
    let build = |allow: bool| {
        move |config: StreamingConfig| {
            let mut config = configure(config);
            config.allow_unmatched_state = allow;
            let ctx = StreamingContext::new(config);
            let queue: QueueStream<String> = QueueStream::new(true, 1);
            // The running totals are gone from the code.
            ctx.queue_stream(&queue)
                .uid("words")
                .foreach_batch(|_| Ok(()));
            Ok(ctx)
        }
    };
    let err = StreamingContext::get_or_create(dir.path(), build(false))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Incompatible(m) if m.contains("\"totals\"")),
        "{err}"
    );
    let ctx = StreamingContext::get_or_create(dir.path(), build(true))
        .await
        .unwrap();
    assert!(ctx.restored().is_some());
    assert!(
        ctx.restore_report().iter().any(|l| l.contains("totals")),
        "{:?}",
        ctx.restore_report()
    );
}
