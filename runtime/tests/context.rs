//! The streaming context on the real engine: waiting with a timeout, the opt-in graceful
//! stop on SIGTERM, and configuration changes across a restart — reported, and in effect.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir::dstream::QueueStream;
use weir::{StreamingConfig, StreamingContext};
use weir_actors::Event;
use weir_actors::EventSubscription;

async fn next_matching(events: &mut EventSubscription, what: &str, f: impl Fn(&Event) -> bool) {
    events
        .next_matching(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"));
}

fn config(dir: &std::path::Path, prefix: &str) -> StreamingConfig {
    let mut config = StreamingConfig::local(dir).batch_interval(Duration::from_millis(50));
    config.engine.name_prefix = prefix.to_owned();
    config.engine.executors = 2;
    config.parallelism = 2;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_termination_timeout_reports_running_then_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = StreamingContext::new(config(dir.path(), "ctx-timeout/"));
    assert!(
        ctx.await_termination_timeout(Duration::from_millis(1))
            .await
            .is_err(),
        "not started yet"
    );
    let queue = QueueStream::<u32>::new(true, 1);
    ctx.queue_stream(&queue).count().foreach_batch(|_| Ok(()));
    ctx.start().await.unwrap();
    let mut events = ctx.events().unwrap();
    next_matching(&mut events, "a completed batch", |e| {
        matches!(e, Event::BatchCompleted { .. })
    })
    .await;
    assert!(
        !ctx.await_termination_timeout(Duration::from_millis(20))
            .await
            .unwrap(),
        "still running"
    );
    // Still usable after a timeout: it keeps running batches, and stops.
    next_matching(&mut events, "another completed batch", |e| {
        matches!(e, Event::BatchCompleted { .. })
    })
    .await;
    ctx.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_when_asked_to() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), "ctx-signal/");
    config.stop_gracefully_on_shutdown = true;
    let mut ctx = StreamingContext::new(config);
    let queue = QueueStream::<u32>::new(true, 1);
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let s = Arc::clone(&seen);
    ctx.queue_stream(&queue)
        .uid("queue")
        .foreach_batch(move |b| {
            s.lock().unwrap().extend(b.iter().copied());
            Ok(())
        });
    ctx.start().await.unwrap();
    let mut events = ctx.events().unwrap();
    queue.push(vec![1, 2, 3]);
    next_matching(&mut events, "a batch with the records", |e| {
        matches!(e, Event::BatchCompleted { .. })
    })
    .await;

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The handler stops the context gracefully: it ends by itself, cleanly, and the last
    // thing it did was to checkpoint.
    assert!(
        ctx.await_termination_timeout(Duration::from_secs(30))
            .await
            .unwrap(),
        "the context did not stop after SIGTERM"
    );
    let mut last_checkpoint = false;
    while let Some(r) = events.try_next() {
        last_checkpoint = matches!(r.event, Event::CheckpointWritten { .. })
            || (last_checkpoint && !matches!(r.event, Event::BatchCompleted { .. }));
    }
    assert!(
        last_checkpoint,
        "no checkpoint after the last completed batch"
    );
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_settings_are_reported_on_restore_and_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let partitions: Arc<Mutex<Vec<usize>>> = Arc::default();
    let build = |prefix: &'static str,
                 parallelism: usize,
                 attempts: u32,
                 rate: Option<f64>,
                 partitions: Arc<Mutex<Vec<usize>>>| {
        move |mut config: StreamingConfig| {
            config = config.batch_interval(Duration::from_millis(50));
            config.engine.name_prefix = prefix.to_owned();
            config.engine.executors = 2;
            config.engine.max_task_attempts = attempts;
            config.parallelism = parallelism;
            config.rate.max_rate_per_partition = rate;
            let ctx = StreamingContext::new(config);
            let queue = QueueStream::<u32>::new(true, 1);
            ctx.queue_stream(&queue)
                .uid("queue")
                .map(|x| (*x, 1u32))
                .reduce_by_key(|a, b| a + b)
                .foreach_batch(move |b| {
                    partitions.lock().unwrap().push(b.partitions.len());
                    Ok(())
                });
            Ok(ctx)
        }
    };

    let mut first = StreamingContext::get_or_create(
        dir.path(),
        build("ctx-settings-1/", 2, 4, None, Arc::clone(&partitions)),
    )
    .await
    .unwrap();
    assert!(first.restored().is_none());
    first.start().await.unwrap();
    let mut events = first.events().unwrap();
    next_matching(&mut events, "a checkpoint", |e| {
        matches!(e, Event::CheckpointWritten { .. })
    })
    .await;
    first.stop(true).await.unwrap();
    assert!(partitions.lock().unwrap().iter().all(|&n| n == 2));

    partitions.lock().unwrap().clear();
    let mut second = StreamingContext::get_or_create(
        dir.path(),
        build(
            "ctx-settings-2/",
            3,
            7,
            Some(100.0),
            Arc::clone(&partitions),
        ),
    )
    .await
    .unwrap();
    let changed = second.restored().unwrap().changed_settings.clone();
    assert_eq!(
        changed,
        vec![
            "max_rate_per_partition: unlimited -> 100",
            "max_task_attempts: 4 -> 7",
            "parallelism: 2 -> 3",
        ],
        "exactly the settings that changed, each once"
    );
    second.start().await.unwrap();
    let mut events = second.events().unwrap();
    next_matching(&mut events, "a completed batch", |e| {
        matches!(e, Event::BatchCompleted { .. })
    })
    .await;
    second.stop(true).await.unwrap();
    let seen = partitions.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|&n| n == 3),
        "the new parallelism is in effect: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_stream_converts_each_line_into_a_record() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = StreamingContext::new(config(dir.path(), "ctx-socket/"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u64>>();
    ctx.socket_stream(addr, |line| Ok(line.trim().parse::<u64>()?))
        .map(|n| n * 10)
        .foreach_batch(move |batch| {
            let records: Vec<u64> = batch.iter().copied().collect();
            if !records.is_empty() {
                let _ = tx.send(records);
            }
            Ok(())
        });
    ctx.start().await.unwrap();
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("the receiver connects")
        .unwrap();
    conn.write_all(b"1\n2\n3\n").await.unwrap();
    conn.flush().await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let batch = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the records arrive")
            .expect("the output is running");
        seen.extend(batch);
    }
    ctx.stop(false).await.unwrap();
    assert_eq!(seen, vec![10, 20, 30]);
}
