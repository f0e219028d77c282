"""The cases of dev/bench for the log on Kafka (bench/run.py runs them; `b` is run.py's module,
for its helpers and settings). Both use the broker `dev/services up kafka` starts.

  pg_stream_kafka  pg_stream's backlog (TXNS transactions, ROWS rows, in a slot) streamed by the
                   Postgres source into the log on Kafka (`[log] kind = "kafka"`) vs
                   pg_recvlogical reading the same WAL; the same workload into the embedded log
                   runs in the same rounds, and the notes give its ratio too.
  sink_scaleout    ROWS change events in a 4-partition topic of the log on Kafka, applied by the
                   Postgres sink: two `sluice run --only sinks` processes (one consumer group)
                   against one. Ratio = one process's time / two processes' (goal >= 1.6). The
                   notes give the cores the box has and the CPU each side used.
"""

import os
import subprocess
import tempfile
import time

BROKERS = "127.0.0.1:9092"


def kafka_log(workdir, partitions=1):
    return (f'[log]\ndir = "{workdir}/log"\nkind = "kafka"\nbrokers = "{BROKERS}"\n'
            f'partitions = {partitions}\n\n')


def source(b, name, slot, snapshot):
    return (f'[[sources]]\nname = "{name}"\nkind = "postgres"\n'
            f'url = "postgres://postgres@127.0.0.1:5432/{b.DB}?sslmode=disable"\n'
            f'tables = ["public.t", "public.marker"]\nslot = "{slot}"\npublication = "bench"\n'
            f'snapshot = "{snapshot}"\n' + ('adopt_slot = true\n' if snapshot == "never" else '')
            + 'stream_in_progress = false\n')


def kafka_records(b, topic):
    """Records (and transaction markers) in a topic of the broker: its partitions' end offsets."""
    out = subprocess.run([b.KAFKA_PY, "-c", """
import sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[2], "group.id": "bench-count"})
meta = c.list_topics(sys.argv[1], timeout=10).topics.get(sys.argv[1])
print(sum(c.get_watermark_offsets(TopicPartition(sys.argv[1], p), timeout=10)[1] for p in meta.partitions)
      if meta is not None and meta.error is None else 0)
""", topic, BROKERS], check=True, capture_output=True, text=True).stdout
    return int(out.strip() or 0)


def case_pg_stream_kafka(b):
    subprocess.run(["dev/services", "up", "kafka"], check=True, capture_output=True)
    stamp = time.strftime("%H%M%S")
    b.reset_db()
    for i in range(b.REPEAT):
        for side in ("ref", "ours", "emb"):
            b.psql(f"SELECT pg_create_logical_replication_slot('bench_{side}_{i}', 'pgoutput')")
    b.fill(b.TXNS, b.ROWS // b.TXNS)
    end = b.end_marker()
    b.psql("CHECKPOINT")
    embedded = []

    def reference(i):
        return b.run_timed([
            "pg_recvlogical", "-h", "127.0.0.1", "-U", "postgres", "-d", b.DB, "--slot", f"bench_ref_{i}",
            "--start", "-o", "proto_version=1", "-o", "publication_names=bench", "--endpos", end,
            "--no-loop", "-f", "/dev/null"])

    def ours(i):
        # A source name per run: its topics and checkpoint on the broker are its own.
        name = f"bk{stamp}{i}"
        with tempfile.TemporaryDirectory() as workdir:
            config = os.path.join(workdir, "kafka.toml")
            with open(config, "w") as f:
                f.write(kafka_log(workdir) + source(b, name, f"bench_ours_{i}", "never"))
            elapsed, rss = b.peak_rss_mb_of([b.SLUICE, "run", "-c", config, "--stop-at", b.lsn_position(end)])
        records = kafka_records(b, f"{name}.public.t")
        if records < b.ROWS:
            raise SystemExit(f"pg_stream_kafka: only {records} of {b.ROWS} rows reached the log")
        # The same slot's twin into the embedded log, in the same round.
        with tempfile.TemporaryDirectory() as workdir:
            config = b.sluice_config(workdir, f"bench_emb_{i}", "never", extra="stream_in_progress = false\n")
            embedded.append(b.peak_rss_mb_of([b.SLUICE, "run", "-c", config, "--stop-at", b.lsn_position(end)])[0])
        return elapsed, rss

    try:
        ours_s, ref_s, rss = b.best_of(reference, ours)
    finally:
        b.drop_kafka_topics(f"bk{stamp}")
    emb_s = min(embedded)
    notes = (f"txns={b.TXNS} rows={b.ROWS} kafka_log_s={ours_s:.2f} embedded_log_s={emb_s:.2f} "
             f"ratio_embedded={ref_s / emb_s:.2f} ratio_kafka={ref_s / ours_s:.2f} "
             f"peak_rss_mb={rss / 1024:.0f} (pg_recvlogical {ref_s:.2f} s)")
    return ours_s, ref_s, notes


def case_sink_scaleout(b):
    subprocess.run(["dev/services", "up", "kafka"], check=True, capture_output=True)
    stamp = time.strftime("%H%M%S")
    name = f"bs{stamp}"
    b.reset_db()
    b.fill(max(1, b.TXNS // 10), b.ROWS // max(1, b.TXNS // 10))
    end = b.psql("SELECT pg_current_wal_lsn()")
    cpu_runs = {}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            # The events: a snapshot of t into 4 partitions of the log on Kafka.
            config = os.path.join(workdir, "fill.toml")
            with open(config, "w") as f:
                f.write(kafka_log(workdir, 4) + source(b, name, f"bench_scale_{stamp}", "initial"))
            b.run_timed([b.SLUICE, "run", "-c", config, "--stop-at", b.lsn_position(end)])
            b.psql(f"SELECT pg_drop_replication_slot('bench_scale_{stamp}')")

            def run(processes, i):
                """Seconds from the processes' start until the target holds every row."""
                b.reset_target()
                sink = f"{name}_{processes}_{i}"
                config = os.path.join(workdir, f"{sink}.toml")
                with open(config, "w") as f:
                    f.write(kafka_log(workdir, 4)
                            + f'[[sinks]]\nname = "{sink}"\nkind = "postgres"\n'
                            f'url = "postgres://postgres@127.0.0.1:5432/{b.TARGET_DB}"\n'
                            f'topics = ["{name}.public.t"]\n')
                start = time.perf_counter()
                procs = [subprocess.Popen([b.SLUICE, "run", "-c", config, "--only", "sinks"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                         for _ in range(processes)]
                try:
                    while True:
                        for proc in procs:
                            if proc.poll() is not None:
                                raise SystemExit(f"sink_scaleout: sluice exited:\n{proc.stderr.read().decode()[-3000:]}")
                        if (b.psql("SELECT to_regclass('public.t') IS NOT NULL", b.TARGET_DB) == "t"
                                and int(b.psql("SELECT count(*) FROM t", b.TARGET_DB)) >= b.ROWS):
                            elapsed = time.perf_counter() - start
                            break
                        time.sleep(0.05)
                    cpu = 0.0
                    for proc in procs:
                        with open(f"/proc/{proc.pid}/stat") as stat:
                            fields = stat.read().rsplit(")", 1)[1].split()
                        cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                    cpu_runs.setdefault(processes, []).append(cpu / elapsed)
                finally:
                    for proc in procs:
                        proc.terminate()
                    for proc in procs:
                        proc.wait()
                return elapsed

            two, one = b.best_of(lambda i: run(1, i), lambda i: (run(2, i), None))[:2]
    finally:
        b.drop_kafka_topics(name)
        b.psql(f"DROP DATABASE IF EXISTS {b.TARGET_DB} WITH (FORCE)", "postgres")
    cores = lambda n: max(cpu_runs.get(n, [0.0]))
    notes = (f"rows={b.ROWS} partitions=4 one_process_s={one:.2f} two_processes_s={two:.2f} "
             f"box_cores={os.cpu_count()} sluice_cores_used one={cores(1):.2f} two={cores(2):.2f} "
             f"(goal: ratio >= 1.6; Postgres applies both sides' rows on the same cores)")
    return two, one, notes
