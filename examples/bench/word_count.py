"""Spark Streaming's DStream word count, the PySpark API, for the weir-vs-Spark bench
(examples/src/bin/bench.rs). Run with the venv that examples/bench/setup.sh makes:

    python word_count.py (socket HOST:PORT | dir DIR) BATCH_MS OUTPUT CHECKPOINT WAL

on local[2]. The same job as JavaWordCount.java: lines split on whitespace, counted per
batch, every non-empty batch written as OUTPUT/batch-<batch time ms>/part-00000 (sorted
`word<TAB>count` lines, temp dir fsynced and renamed); WAL=true turns on the receiver
write-ahead log; getOrCreate on CHECKPOINT. A StreamingListener prints, per completed batch:

    WEIR_BENCH batch_completed batch_time_ms=T processing_ms=P scheduling_delay_ms=S records=N wall_ms=W
"""

import os
import sys
import time

from pyspark import SparkConf, SparkContext, StorageLevel
from pyspark.streaming import StreamingContext
from pyspark.streaming.listener import StreamingListener


class BatchPrinter(StreamingListener):
    """Prints one parseable line per completed batch."""

    def onBatchCompleted(self, batchCompleted):
        info = batchCompleted.batchInfo()
        # PySpark's listener wrapper hands over a JavaBatchInfo: delays are longs, -1 if unset.
        processing = int(info.processingDelay())
        scheduling = int(info.schedulingDelay())
        print(
            "WEIR_BENCH batch_completed batch_time_ms=%d processing_ms=%d "
            "scheduling_delay_ms=%d records=%d wall_ms=%d"
            % (info.batchTime().milliseconds(), processing, scheduling,
               info.numRecords(), int(time.time() * 1000)),
            flush=True,
        )


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_batch(output, time_ms, counts):
    if not counts:
        return
    target = os.path.join(output, "batch-%d" % time_ms)
    if os.path.exists(target):
        return  # a batch re-run after recovery: written once
    tmp = os.path.join(output, ".tmp-batch-%d" % time_ms)
    os.makedirs(tmp, exist_ok=True)
    lines = sorted("%s\t%d" % (w, c) for w, c in counts)
    with open(os.path.join(tmp, "part-00000"), "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmp)
    os.rename(tmp, target)
    fsync_dir(output)


def create(mode, source, batch_ms, output, checkpoint, wal):
    conf = (
        SparkConf()
        .setMaster("local[2]")
        .setAppName("PySparkWordCount")
        .set("spark.ui.enabled", "false")
        .set("spark.ui.showConsoleProgress", "false")
        .set("spark.streaming.receiver.writeAheadLog.enable", "true" if wal else "false")
    )
    sc = SparkContext(conf=conf)
    sc.setLogLevel("WARN")
    ssc = StreamingContext(sc, batch_ms / 1000.0)
    ssc.checkpoint(checkpoint)
    if mode == "socket":
        host, port = source.rsplit(":", 1)
        lines = ssc.socketTextStream(host, int(port), StorageLevel.MEMORY_AND_DISK)
    else:
        lines = ssc.textFileStream(source)
    counts = (
        lines.flatMap(lambda line: line.split())
        .map(lambda word: (word, 1))
        .reduceByKey(lambda a, b: a + b)
    )

    def save(t, rdd):
        write_batch(output, int(round(t.timestamp() * 1000)), rdd.collect())

    counts.foreachRDD(save)
    return ssc


def main():
    if len(sys.argv) != 7:
        print("usage: word_count.py (socket HOST:PORT | dir DIR) BATCH_MS OUTPUT CHECKPOINT WAL",
              file=sys.stderr)
        sys.exit(2)
    mode, source, batch_ms, output, checkpoint, wal = sys.argv[1:]
    batch_ms = int(batch_ms)
    wal = wal == "true"
    os.makedirs(output, exist_ok=True)
    ssc = StreamingContext.getOrCreate(
        checkpoint, lambda: create(mode, source, batch_ms, output, checkpoint, wal)
    )
    ssc.sparkContext.setLogLevel("WARN")
    ssc.addStreamingListener(BatchPrinter())
    ssc.start()
    print("WEIR_BENCH started wall_ms=%d" % int(time.time() * 1000), flush=True)
    ssc.awaitTermination()


if __name__ == "__main__":
    main()
