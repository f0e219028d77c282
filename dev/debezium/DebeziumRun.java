// Debezium 3.6.1's embedded engine (Postgres connector, JSON converter without schemas), as the
// reference sluice is compared with: `java -cp 'target/debezium/libs/*' dev/debezium/DebeziumRun.java
// key=value…`. Every argument is an engine property, except the harness's own:
//   harness.out=stdout            each record as a JSON line {"topic","key","value"} (default)
//   harness.out=kafka:HOST:PORT   each record produced to that broker (acks=all), keyed and
//                                 named as Debezium's Kafka Connect deployment would
//   harness.events=N              stop after N records (tombstones included)
//   harness.idle_ms=MS            or after MS without a record, once one arrived
// On stop it prints `records=N seconds=S` (from the first record to the last) to stderr.
import java.io.BufferedWriter;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.format.Json;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

public class DebeziumRun {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("name", "reference");
        props.setProperty("connector.class", "io.debezium.connector.postgresql.PostgresConnector");
        props.setProperty("offset.storage", "org.apache.kafka.connect.storage.MemoryOffsetBackingStore");
        props.setProperty("offset.flush.interval.ms", "60000");
        props.setProperty("plugin.name", "pgoutput");
        props.setProperty("converter.schemas.enable", "false");
        props.setProperty("key.converter.schemas.enable", "false");
        props.setProperty("value.converter.schemas.enable", "false");
        String out = "stdout";
        long events = Long.MAX_VALUE;
        long idleMs = Long.MAX_VALUE;
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq < 0) {
                throw new IllegalArgumentException("not key=value: " + arg);
            }
            String key = arg.substring(0, eq);
            String value = arg.substring(eq + 1);
            switch (key) {
                case "harness.out" -> out = value;
                case "harness.events" -> events = Long.parseLong(value);
                case "harness.idle_ms" -> idleMs = Long.parseLong(value);
                default -> props.setProperty(key, value);
            }
        }
        final long wanted = events;
        BufferedWriter stdout = new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8), 1 << 20);
        KafkaProducer<String, String> producer = null;
        if (out.startsWith("kafka:")) {
            Properties p = new Properties();
            p.setProperty("bootstrap.servers", out.substring("kafka:".length()));
            p.setProperty("acks", "all");
            p.setProperty("enable.idempotence", "true");
            p.setProperty("linger.ms", "5");
            p.setProperty("batch.size", "1048576");
            producer = new KafkaProducer<>(p, new StringSerializer(), new StringSerializer());
        }
        final KafkaProducer<String, String> kafka = producer;
        AtomicLong count = new AtomicLong();
        AtomicLong first = new AtomicLong();
        AtomicLong last = new AtomicLong();
        CountDownLatch done = new CountDownLatch(1);
        DebeziumEngine<ChangeEvent<String, String>> engine = DebeziumEngine.create(Json.class)
            .using(props)
            .notifying((List<ChangeEvent<String, String>> records,
                        DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer) -> {
                for (ChangeEvent<String, String> record : records) {
                    if (first.get() == 0) {
                        first.set(System.nanoTime());
                    }
                    if (kafka != null) {
                        kafka.send(new ProducerRecord<>(record.destination(), record.key(), record.value()));
                    } else {
                        write(stdout, "{\"topic\":" + quote(record.destination()) + ",\"key\":"
                            + (record.key() == null ? "null" : record.key()) + ",\"value\":"
                            + (record.value() == null ? "null" : record.value()) + "}\n");
                    }
                    committer.markProcessed(record);
                    last.set(System.nanoTime());
                    if (count.incrementAndGet() >= wanted) {
                        done.countDown();
                    }
                }
                if (kafka != null) {
                    kafka.flush();
                } else {
                    write(stdout, "");
                }
                last.set(System.nanoTime());
                committer.markBatchFinished();
            })
            .using((success, message, error) -> {
                if (!success) {
                    System.err.println("engine stopped: " + message + (error == null ? "" : ": " + error));
                }
                done.countDown();
            })
            .build();
        ExecutorService executor = Executors.newSingleThreadExecutor();
        executor.execute(engine);
        while (!done.await(100, TimeUnit.MILLISECONDS)) {
            long seen = last.get();
            if (idleMs != Long.MAX_VALUE && seen != 0 && System.nanoTime() - seen > idleMs * 1_000_000L) {
                break;
            }
        }
        double seconds = (last.get() - first.get()) / 1e9;
        System.err.println("records=" + count.get() + " seconds=" + seconds);
        engine.close();
        executor.shutdown();
        executor.awaitTermination(30, TimeUnit.SECONDS);
        if (kafka != null) {
            kafka.close();
        }
        stdout.flush();
        System.exit(0);
    }

    private static void write(BufferedWriter out, String line) {
        try {
            out.write(line);
            if (line.isEmpty()) {
                out.flush();
            }
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    private static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }
}
