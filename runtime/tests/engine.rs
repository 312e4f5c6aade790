//! The runtime on the real engine: a stateful graph keeps exactly-once output and exact state
//! while actors are killed under it.
//!
//! A `NumberedReceiver` stores numbered records and remembers what it had acknowledged. The
//! graph commits each batch's numbers under the batch time (a replayed batch must carry the
//! same numbers), and keeps a running count per `n % 7` with `update_state_by_key`. Actors —
//! an executor, the job generator, the receiver, the whole driver — are killed mid-batch. At
//! the end: every acknowledged record was committed in exactly one batch, and the running
//! counts after the last batch add up to exactly the records committed (a state restored
//! twice, or lost, would not).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir::{StreamingConfig, StreamingContext};
use weir_actors::Event;
use weir_actors::EventSubscription;
use weir_actors::pipeline::Receiver;
use weir_actors::testing::NumberedReceiver;

async fn next_matching(events: &mut EventSubscription, what: &str, f: impl Fn(&Event) -> bool) {
    events
        .next_matching(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"));
}

async fn completed_with_records(events: &mut EventSubscription, count: usize) {
    for _ in 0..count {
        next_matching(
            events,
            "a completed batch",
            |e| matches!(e, Event::BatchCompleted { records, .. } if *records > 0),
        )
        .await;
    }
}

#[derive(Default)]
struct Sink {
    committed: Mutex<BTreeMap<u64, Vec<u64>>>,
    totals: Mutex<BTreeMap<u64, BTreeMap<u64, u64>>>,
    conflicts: Mutex<Vec<u64>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_graph_stays_exact_while_actors_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StreamingConfig::local(dir.path()).batch_interval(Duration::from_millis(100));
    config.engine.name_prefix = "rt-e2e/".to_owned();
    config.engine.block_interval = Duration::from_millis(20);
    config.engine.receiver_restart_delay = Duration::from_millis(50);
    config.engine.executors = 2;
    config.engine.driver_policy.intensity.max_restarts = 20;
    config.parallelism = 3;
    let names = config.engine.names();

    let generator = NumberedReceiver::new(10, Duration::from_millis(5));
    let sink = Arc::new(Sink::default());
    let mut ctx = StreamingContext::new(config);
    let numbers = {
        let g = generator.clone();
        ctx.receiver_stream_decoded(
            move || Box::new(g.clone()) as Box<dyn Receiver>,
            |record| Ok(u64::from_le_bytes(record.as_ref().try_into()?)),
        )
        .uid("numbers")
    };
    let s = Arc::clone(&sink);
    numbers.foreach_batch(move |batch| {
        let mut ids: Vec<u64> = batch.iter().copied().collect();
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_unstable();
        let mut committed = s.committed.lock().unwrap();
        match committed.get(&batch.time_ms) {
            Some(existing) if *existing != ids => s.conflicts.lock().unwrap().push(batch.time_ms),
            Some(_) => {}
            None => {
                committed.insert(batch.time_ms, ids);
            }
        }
        Ok(())
    });
    let s = Arc::clone(&sink);
    numbers
        .map(|n| (n % 7, 1u64))
        .update_state_by_key(|new: &[u64], total: Option<u64>| {
            Some(total.unwrap_or(0) + new.iter().sum::<u64>())
        })
        .uid("totals")
        .foreach_batch(move |batch| {
            let totals: BTreeMap<u64, u64> = batch.iter().copied().collect();
            s.totals.lock().unwrap().insert(batch.time_ms, totals);
            Ok(())
        });
    ctx.start().await.unwrap();
    let mut events = ctx.events().unwrap();
    completed_with_records(&mut events, 3).await;

    for victim in [
        names.executor(1),
        names.job_generator(),
        names.receiver(0),
        names.driver(),
    ] {
        next_matching(&mut events, "a batch start", |e| {
            matches!(e, Event::BatchStarted { .. })
        })
        .await;
        ractor::registry::where_is(victim.clone())
            .unwrap_or_else(|| panic!("{victim} is not running"))
            .kill();
        let name = victim.clone();
        next_matching(
            &mut events,
            "the kill's failure event",
            move |e| matches!(e, Event::ActorFailed { actor, .. } if *actor == name),
        )
        .await;
        completed_with_records(&mut events, 2).await;
    }
    ctx.stop(true).await.unwrap();

    let acknowledged = generator.acknowledged();
    let committed = sink.committed.lock().unwrap().clone();
    let mut seen = BTreeMap::new();
    for (batch, ids) in &committed {
        for id in ids {
            if let Some(first) = seen.insert(*id, *batch) {
                panic!("record {id} committed in batches {first} and {batch}");
            }
        }
    }
    let lost: Vec<&u64> = acknowledged
        .iter()
        .filter(|id| !seen.contains_key(id))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged records lost: {:?}",
        &lost[..lost.len().min(10)]
    );
    assert!(
        sink.conflicts.lock().unwrap().is_empty(),
        "a batch was committed with different records"
    );
    assert!(
        acknowledged.len() > 100,
        "too little data flowed: {}",
        acknowledged.len()
    );

    let totals = sink.totals.lock().unwrap();
    let (&last, last_totals) = totals.iter().next_back().unwrap();
    let counted: u64 = last_totals.values().sum();
    let committed_through_last: u64 = committed
        .range(..=last)
        .map(|(_, ids)| ids.len() as u64)
        .sum();
    assert_eq!(
        counted, committed_through_last,
        "the running counts after batch {last} disagree with the records committed up to it"
    );
    let per_key: BTreeMap<u64, u64> = committed
        .range(..=last)
        .flat_map(|(_, ids)| ids.iter().map(|n| n % 7))
        .fold(BTreeMap::new(), |mut m, k| {
            *m.entry(k).or_default() += 1;
            m
        });
    assert_eq!(*last_totals, per_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_text_stream_counts_words_on_the_engine() {
    use tokio::io::AsyncWriteExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut config = StreamingConfig::local(dir.path()).batch_interval(Duration::from_millis(100));
    config.engine.name_prefix = "rt-socket/".to_owned();
    config.engine.block_interval = Duration::from_millis(20);
    let mut ctx = StreamingContext::new(config);
    let counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let c = Arc::clone(&counts);
    ctx.socket_text_stream(addr)
        .flat_map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|w| (w.clone(), 1u64))
        .reduce_by_key(|a, b| a + b)
        .foreach_batch(move |batch| {
            let mut counts = c.lock().unwrap();
            for (w, n) in batch.iter() {
                *counts.entry(w.clone()).or_default() += n;
            }
            Ok(())
        });
    ctx.start().await.unwrap();
    let mut events = ctx.events().unwrap();
    let (mut socket, _) = listener.accept().await.unwrap();
    socket
        .write_all(b"the quick brown fox\njumps over the lazy dog\nthe end\n")
        .await
        .unwrap();
    socket.flush().await.unwrap();
    next_matching(
        &mut events,
        "a batch with the lines",
        |e| matches!(e, Event::BatchCompleted { records, .. } if *records > 0),
    )
    .await;
    ctx.stop(true).await.unwrap();
    let counts = counts.lock().unwrap();
    assert_eq!(counts.get("the"), Some(&3));
    assert_eq!(counts.get("fox"), Some(&1));
    assert_eq!(counts.values().sum::<u64>(), 11);
}
