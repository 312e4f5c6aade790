//! The object sink inside a running graph (`DStream::save_as_text_files_in`): word counts of
//! queued batches land as `batch-<t>/part-NNNNN` objects with a `_COMMITTED` marker, empty
//! batches write nothing — on opendal's memory service and, with the `s3` feature, on moto's
//! S3 server.

#![allow(clippy::unwrap_used)]

use weir::Storage;
use weir::dstream::QueueStream;
use weir::sinks::batch_objects::BatchObjectSink;
use weir::testing::ManualClock;

/// Runs two batches (one with words, one empty) writing to `storage`; checks what is there.
async fn counts_land_as_committed_objects(storage: Storage) {
    let queue = QueueStream::new(true, 1);
    queue.push(vec!["b".to_owned(), "a".to_owned(), "b".to_owned()]);
    let (q, out) = (queue.clone(), storage.clone());
    let mut clock = ManualClock::new(1000, 1, move |ctx| {
        let counts = ctx
            .queue_stream(&q)
            .map(|w: &String| (w.clone(), 1u64))
            .reduce_by_key(|a, b| a + b)
            .map(|(w, n)| format!("{w}\t{n}"));
        counts.save_as_text_files_in(&out, "batch").unwrap();
    })
    .unwrap();
    clock.run(2).await.unwrap();

    let Storage::Object { op, prefix } = &storage else {
        panic!("object storage expected")
    };
    let part = op
        .read(&format!("{prefix}batch-1000/part-00000"))
        .await
        .unwrap()
        .to_vec();
    assert_eq!(part, b"a\t1\nb\t2\n");
    let sink = BatchObjectSink::new(&storage, "batch").unwrap();
    let committed = sink
        .committed(1000)
        .await
        .unwrap()
        .expect("batch 1000 committed");
    assert_eq!(committed.parts.len(), 1);
    // The empty batch wrote nothing at all.
    assert!(sink.committed(2000).await.unwrap().is_none());
    assert!(
        op.list(&format!("{prefix}batch-2000/"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_land_as_committed_objects_in_memory() {
    counts_land_as_committed_objects(Storage::memory().join("out")).await;
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_land_as_committed_objects_on_s3() {
    let storage = weir_actors::testing::MotoServer::shared()
        .and_then(|server| server.fresh())
        .unwrap_or_else(|e| panic!("moto's S3 server: {e}"));
    counts_land_as_committed_objects(storage.join("out")).await;
}
