//! The engine's `batch` span reaches the user's code: a `tracing` event emitted inside a
//! `map` closure (run on the blocking pool, by an executor) carries `batch_time_ms` of the
//! batch that ran it.
//!
//! Its own test binary: it installs a global subscriber (the closures run on other threads,
//! which a thread-local default would not reach), the same JSON format `weir::logging` uses,
//! writing into a buffer.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir::dstream::QueueStream;
use weir::{Storage, StreamingConfig, StreamingContext};

/// A writer appending to a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_in_a_map_closure_carries_the_batch_time_of_its_batch() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_env_filter("info")
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let config = StreamingConfig::new(Storage::memory()).batch_interval(Duration::from_millis(50));
    let mut ctx = StreamingContext::new(config);
    let queue = QueueStream::new(true, 1);
    let values: Vec<u64> = vec![11, 22, 33];
    for v in &values {
        queue.push(vec![*v]);
    }
    let (tx, rx) = std::sync::mpsc::channel::<(u64, Vec<u64>)>();
    ctx.queue_stream(&queue)
        .map(|v: &u64| {
            tracing::info!(value = *v, "mapped in user code");
            *v
        })
        .foreach_batch(move |batch| {
            if !batch.is_empty() {
                let _ = tx.send((batch.time_ms, batch.iter().copied().collect()));
            }
            Ok(())
        });
    ctx.start().await.unwrap();
    let seen = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        while seen.len() < 3 {
            seen.push(
                rx.recv_timeout(Duration::from_secs(30))
                    .expect("three batches"),
            );
        }
        seen
    })
    .await
    .unwrap();
    ctx.stop(true).await.unwrap();

    // The batch each value was output in (a batch re-run would output it under the same time).
    let batch_of = |value: u64| {
        seen.iter()
            .find(|(_, vs)| vs.contains(&value))
            .map(|(t, _)| *t)
            .unwrap()
    };
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let mut checked = 0;
    for line in text.lines() {
        let json: serde_json::Value = serde_json::from_str(line).unwrap();
        if json["fields"]["message"] != "mapped in user code" {
            continue;
        }
        let value = json["fields"]["value"].as_u64().unwrap();
        assert_eq!(json["span"]["name"], "batch", "{line}");
        assert_eq!(
            json["span"]["batch_time_ms"].as_u64(),
            Some(batch_of(value)),
            "{line}"
        );
        checked += 1;
    }
    assert!(checked >= values.len(), "{checked} map events in:\n{text}");
}
