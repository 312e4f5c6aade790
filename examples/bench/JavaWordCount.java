// Spark Streaming's DStream word count, the Java API, for the weir-vs-Spark bench
// (examples/src/bin/bench.rs). Compiled by examples/bench/setup.sh against the jars that
// PySpark 3.5 ships; run as
//
//   java -cp CLASSES:JARS/* JavaWordCount (socket HOST:PORT | dir DIR) BATCH_MS OUTPUT CHECKPOINT WAL
//
// on local[2]. Lines are split on whitespace and counted per batch (reduceByKey); every
// non-empty batch is written as OUTPUT/batch-<batch time ms>/part-00000, sorted
// `word<TAB>count` lines, written to a hidden temp directory, fsynced and renamed, like
// weir's word_count. WAL=true turns on the receiver write-ahead log
// (spark.streaming.receiver.writeAheadLog.enable). The context is created with getOrCreate
// on CHECKPOINT, so a restart after kill -9 recovers from the checkpoint.
//
// A StreamingListener prints one line per completed batch on stdout, which the bench parses:
//   WEIR_BENCH batch_completed batch_time_ms=T processing_ms=P scheduling_delay_ms=S records=N wall_ms=W

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaPairRDD;
import org.apache.spark.storage.StorageLevel;
import org.apache.spark.streaming.Durations;
import org.apache.spark.streaming.Time;
import org.apache.spark.streaming.api.java.JavaDStream;
import org.apache.spark.streaming.api.java.JavaPairDStream;
import org.apache.spark.streaming.api.java.JavaStreamingContext;
import org.apache.spark.streaming.scheduler.BatchInfo;
import org.apache.spark.streaming.scheduler.StreamingListener;
import org.apache.spark.streaming.scheduler.StreamingListenerBatchCompleted;

import scala.Tuple2;

public final class JavaWordCount {
    private JavaWordCount() {}

    /** Prints one parseable line per completed batch. */
    static final class BatchPrinter implements StreamingListener {
        @Override
        public void onBatchCompleted(StreamingListenerBatchCompleted completed) {
            BatchInfo info = completed.batchInfo();
            long processing = info.processingDelay().isDefined() ? (Long) info.processingDelay().get() : -1L;
            long scheduling = info.schedulingDelay().isDefined() ? (Long) info.schedulingDelay().get() : -1L;
            System.out.println("WEIR_BENCH batch_completed batch_time_ms=" + info.batchTime().milliseconds()
                + " processing_ms=" + processing + " scheduling_delay_ms=" + scheduling
                + " records=" + info.numRecords() + " wall_ms=" + System.currentTimeMillis());
            System.out.flush();
        }
    }

    static void writeBatch(String output, long timeMs, List<Tuple2<String, Long>> counts) throws IOException {
        if (counts.isEmpty()) {
            return;
        }
        Path out = Paths.get(output);
        Path dir = out.resolve("batch-" + timeMs);
        if (Files.exists(dir)) {
            return; // a batch re-run after recovery: written once
        }
        List<String> lines = new ArrayList<>(counts.size());
        for (Tuple2<String, Long> c : counts) {
            lines.add(c._1() + "\t" + c._2());
        }
        lines.sort(null);
        Path tmp = out.resolve(".tmp-batch-" + timeMs);
        Files.createDirectories(tmp);
        Path part = tmp.resolve("part-00000");
        StringBuilder text = new StringBuilder();
        for (String line : lines) {
            text.append(line).append('\n');
        }
        try (FileChannel ch = FileChannel.open(part, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            ch.write(java.nio.ByteBuffer.wrap(text.toString().getBytes(StandardCharsets.UTF_8)));
            ch.force(true);
        }
        try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.READ)) {
            ch.force(true);
        }
        Files.move(tmp, dir, StandardCopyOption.ATOMIC_MOVE);
        try (FileChannel ch = FileChannel.open(out, StandardOpenOption.READ)) {
            ch.force(true);
        }
    }

    static JavaStreamingContext create(String mode, String source, long batchMs, String output,
            String checkpoint, boolean wal) {
        SparkConf conf = new SparkConf()
            .setMaster("local[2]")
            .setAppName("JavaWordCount")
            .set("spark.ui.enabled", "false")
            .set("spark.ui.showConsoleProgress", "false")
            .set("spark.streaming.receiver.writeAheadLog.enable", Boolean.toString(wal));
        JavaStreamingContext ssc = new JavaStreamingContext(conf, Durations.milliseconds(batchMs));
        ssc.checkpoint(checkpoint);
        JavaDStream<String> lines;
        if (mode.equals("socket")) {
            int colon = source.lastIndexOf(':');
            String host = source.substring(0, colon);
            int port = Integer.parseInt(source.substring(colon + 1));
            lines = ssc.socketTextStream(host, port, StorageLevel.MEMORY_AND_DISK_SER());
        } else {
            lines = ssc.textFileStream(source);
        }
        JavaPairDStream<String, Long> counts = lines
            .flatMap(line -> Arrays.asList(line.split("\\s+")).iterator())
            .filter(word -> !word.isEmpty())
            .mapToPair(word -> new Tuple2<>(word, 1L))
            .reduceByKey(Long::sum);
        counts.foreachRDD((JavaPairRDD<String, Long> rdd, Time time) ->
            writeBatch(output, time.milliseconds(), rdd.collect()));
        return ssc;
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 6) {
            System.err.println("usage: JavaWordCount (socket HOST:PORT | dir DIR) BATCH_MS OUTPUT CHECKPOINT WAL");
            System.exit(2);
        }
        String mode = args[0];
        String source = args[1];
        long batchMs = Long.parseLong(args[2]);
        String output = args[3];
        String checkpoint = args[4];
        boolean wal = Boolean.parseBoolean(args[5]);
        Files.createDirectories(Paths.get(output));
        JavaStreamingContext ssc = JavaStreamingContext.getOrCreate(checkpoint,
            () -> create(mode, source, batchMs, output, checkpoint, wal));
        ssc.sparkContext().setLogLevel("WARN");
        ssc.addStreamingListener(new BatchPrinter());
        ssc.start();
        System.out.println("WEIR_BENCH started wall_ms=" + System.currentTimeMillis());
        System.out.flush();
        ssc.awaitTermination();
    }
}
