"""sluice's ratio benchmarks: each case runs sluice and a physical reference on the same data,
in the same run, with the same server settings, and reports ours / reference as a speed ratio
(> 1 means sluice is faster). Absolute numbers drift on shared machines; ratios do not.

Cases:
  pg_stream          1,000,000 rows in 1,000 transactions, streamed from a slot into the log
                     (fsync always) vs pg_recvlogical (pgoutput, proto 1) to /dev/null.
  pg_stream_one_txn  the same rows in one transaction, protocol 1 on both sides (the walsender
                     spills the transaction to its disk until the commit).
  pg_stream_one_txn_v2  the same with protocol 2 and streaming = on on both sides (sluice spools
                     the streamed transaction itself); notes: the walsender's spill and stream
                     bytes for sluice's slot.
  pg_stream_tls      pg_stream with both sides over TLS (sslmode=require); every other case
                     connects without TLS on both sides.
  pg_snapshot        initial snapshot of a 1,000,000-row table into the log vs psql \\copy to /dev/null.
  pg_snapshot_avro   the same with encoding = "avro".
  pg_snapshot_100m   the snapshot of a 100,000,000-row table (--big-rows=N to change), once each
                     side: rows/s and sluice's peak RSS. By hand only (it takes about half an hour
                     and ~25 GB of disk): not run unless named.
  log_append_fsync_* 4 producers appending to the log with fsync=always vs dd conv=fdatasync.
  log_append_nofsync 100-byte records with fsync=never vs the goal of 1M records/s.
  log_ack_latency    p99 append-to-acknowledgement at 10,000 records/s vs the 5 ms goal.
  log_read           reading every record back from the page cache vs cat of the segments.
  pg_sink_apply      1,000,000 change events applied by the Postgres sink vs COPY FROM of the same
                     rows into an identical table.
  mysql_stream       1,000,000 single-row inserts (1,000 transactions) from the MariaDB binlog into the
                     log vs mariadb-binlog --skip-ssl --read-from-remote-server -v decoding the same range.
  mysql_snapshot     a 1,000,000-row MariaDB table snapshotted into the log vs mariadb -e "SELECT *".
  pg_replication_latency  source commit → visible in the target at 2,000 transactions/s (p50, p99).
  incremental_snapshot  an on-demand snapshot of a 1,000,000-row table while a writer commits
                     1,000 transactions/s vs psql \\copy of the table; streaming p99 during it.
  mysql_incremental_snapshot  an on-demand snapshot (through the signal table) of the
                     1,000,000-row MariaDB table while a writer commits about 1,000 transactions/s
                     into another captured table, vs mariadb -e "SELECT *" of the table; the
                     writer's achieved rate in the notes.
  kafka_sink         the 1,000,000-row snapshot in the log delivered into Kafka by the Kafka sink
                     (exactly once: transactions; acks=all) vs Kafka's ProducerPerformance sending
                     as many records of the same average size, acks=all, with transactions.
  kafka_sink_at_least_once  the same without transactions on both sides.
  pg_to_kafka        1,000 transactions x 1,000 rows from a Postgres slot's backlog into Kafka end to
                     end (sluice: source, log and Kafka sink, exactly once) vs Debezium 3.6.1's
                     embedded engine (JSON converter, a Kafka producer, acks=all); peak RSS of both.
  transforms         1,000,000 20-column JSON records decoded as a sink does, through a chain of 4
                     transforms (filter, mask, columns, set) vs decoding alone (goal >= 0.8).
  encode_avro        1,000,000 events of a 20-column row encoded as Avro (Confluent wire format)
                     vs the same events as Debezium JSON (encode_json); one thread each; also
                     bytes per event of both.
  pg_big_txn         one transaction of --big-gb (default 5) GB of 1 KB rows from Postgres through
                     the log into a Postgres sink in transactional mode: sluice's peak RSS (whole
                     process) vs the 200 MB goal (ratio = goal / ours); the time and the
                     walsender's spill and stream bytes are in the notes. Streamed (protocol 2).
  pg_big_txn_at_commit  the same with stream_in_progress = false (protocol 1: the walsender
                     spills the transaction and sends it after its commit).
  mysql_big_txn      the same from MariaDB.
  opensearch_sink, typesense_sink, search_freshness: see bench/search_cases.py.
  clickhouse_sink, clickhouse_sink_avro, iceberg_sink, iceberg_sink_avro, iceberg_freshness: see
  bench/warehouse_cases.py.
  pg_stream_kafka, sink_scaleout (the log on Kafka): see bench/scaleout_cases.py.
Peak RSS of sluice is reported for pg_stream (goal <= 64 MB).
"""

import calendar
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import search_cases
import scaleout_cases
import warehouse_cases

SLUICE = os.environ.get("SLUICE_BIN", "target/release/sluice")
TINY = "--tiny" in sys.argv
# --repeat=N: the database, log append/read and encode cases run ours and the reference N times
# each (default 2) and take the best of each.
REPEAT = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--repeat=")), 2)
CASES = [a for a in sys.argv[1:] if not a.startswith("--")]
# --big-gb=N: the size of the one transaction of the *_big_txn cases.
BIG_GB = next((float(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--big-gb=")), 5.0)
# --big-rows=N: the table of pg_snapshot_100m.
BIG_ROWS = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--big-rows=")), 100_000_000)
if TINY:
    BIG_GB = 0.005
    BIG_ROWS = 20_000
ROWS = 2_000 if TINY else 1_000_000
TXNS = 20 if TINY else 1_000
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
DB = "sluice_bench"
# Both sides connect without TLS (libpq's PGSSLMODE for the references, the URL for sluice), so
# that the ratios measure the pipelines and not two TLS stacks; pg_stream_tls measures TLS.
SSLMODE = "disable"
# The same for MariaDB (its clients ask for TLS by default: --skip-ssl).
MY_URL = "mysql://root@127.0.0.1:3306?ssl-mode=DISABLED"
os.environ["PGSSLMODE"] = SSLMODE


def psql(sql, db=DB):
    return subprocess.run(PSQL + ["-d", db, "-c", sql], check=True, capture_output=True, text=True).stdout.strip()


def reset_db():
    psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{DB}'", "postgres")
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", "postgres")
    psql(f"CREATE DATABASE {DB}", "postgres")
    psql(
        "CREATE TABLE t (id bigint PRIMARY KEY, customer int NOT NULL, amount numeric(12,2) NOT NULL, "
        "note text, created timestamptz NOT NULL DEFAULT now()); "
        "CREATE TABLE marker (id int PRIMARY KEY); "
        "CREATE PUBLICATION bench FOR TABLE t, marker;"
    )


def fill(txns, rows_per_txn):
    """Inserts txns transactions of rows_per_txn rows each, in one psql session."""
    statements = []
    for i in range(txns):
        lo, hi = i * rows_per_txn + 1, (i + 1) * rows_per_txn
        statements.append(
            f"INSERT INTO t (id, customer, amount, note) SELECT g, g % 1000, (g % 100000) / 100.0, "
            f"'order note number ' || g FROM generate_series({lo}, {hi}) g;"
        )
    subprocess.run(PSQL + ["-d", DB], input="\n".join(statements), check=True, capture_output=True, text=True)


def end_marker():
    """The WAL position after all data, then one more transaction past it, so both readers have
    data at or beyond the end position."""
    end = psql("SELECT pg_current_wal_lsn()")
    psql("INSERT INTO marker VALUES (1)")
    return end


def run_timed(cmd):
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def peak_rss_mb_of(cmd):
    """Runs cmd and returns (seconds, its own peak RSS in KiB, from wait4)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read().decode()[-3000:]}")
    return elapsed, usage.ru_maxrss


def sluice_config(workdir, slot, snapshot, encoding="json", extra=""):
    path = os.path.join(workdir, "bench.toml")
    with open(path, "w") as f:
        f.write(
            f'[log]\ndir = "{workdir}/log"\nfsync = "always"\n\n'
            f'[[sources]]\nname = "bench"\nkind = "postgres"\n'
            f'url = "postgres://postgres@127.0.0.1:5432/{DB}?sslmode={SSLMODE}"\n'
            f'tables = ["public.t", "public.marker"]\nslot = "{slot}"\npublication = "bench"\nsnapshot = "{snapshot}"\n'
            + ('adopt_slot = true\n' if snapshot == "never" else '')
            + f'encoding = "{encoding}"\n' + extra
        )
    return path


def slot_spill(slot):
    """The walsender's (spilled, streamed) MB for `slot` so far, from pg_stat_replication_slots."""
    row = psql(f"SELECT spill_bytes, stream_bytes FROM pg_stat_replication_slots WHERE slot_name = '{slot}'", "postgres")
    spill, stream = (int(x) for x in row.split("|")) if row else (0, 0)
    return spill / 1e6, stream / 1e6


# Notes a case adds to its line (the walsender's spill of the last run of ours).
EXTRA_NOTES = []


def lsn_position(lsn):
    return "pg:" + lsn


def case_stream(name, txns, sslmode="disable", protocol=1):
    """A slot per run, all created at the same point, read the same WAL: reference, ours, ours,
    reference, ... so that neither side gets the colder cache; each side's best run counts.
    With `sslmode` require both sides stream over TLS (the server's certificate, unverified)."""
    global SSLMODE
    SSLMODE = sslmode
    os.environ["PGSSLMODE"] = sslmode
    try:
        return stream_runs(name, txns, protocol)
    finally:
        SSLMODE = "disable"
        os.environ["PGSSLMODE"] = "disable"


def stream_runs(name, txns, protocol=1):
    reset_db()
    for i in range(REPEAT):
        for side in ("ref", "ours"):
            psql(f"SELECT pg_create_logical_replication_slot('bench_{side}_{i}', 'pgoutput')")
    fill(txns, ROWS // txns)
    end = end_marker()
    psql("CHECKPOINT")

    def reference(i):
        return run_timed([
            "pg_recvlogical", "-h", "127.0.0.1", "-U", "postgres", "-d", DB, "--slot", f"bench_ref_{i}", "--start",
            "-o", f"proto_version={protocol}", "-o", "publication_names=bench", "--endpos", end, "--no-loop", "-f", "/dev/null",
        ] + (["-o", "streaming=on"] if protocol >= 2 else []))

    def ours(i):
        with tempfile.TemporaryDirectory() as workdir:
            extra = "" if protocol >= 2 else "stream_in_progress = false\n"
            config = sluice_config(workdir, f"bench_ours_{i}", "never", extra=extra)
            elapsed, rss = peak_rss_mb_of([SLUICE, "run", "-c", config, "--stop-at", lsn_position(end)])
            records = count_records(workdir, "bench.public.t")
        if records < ROWS:
            raise SystemExit(f"{name}: only {records} of {ROWS} rows reached the log")
        spill, streamed = slot_spill(f"bench_ours_{i}")
        EXTRA_NOTES[:] = [f"walsender_spill_mb={spill:.0f} walsender_stream_mb={streamed:.0f}"]
        return elapsed, rss

    return best_of(reference, ours)


def best_of(reference, ours):
    """Runs the reference and ours REPEAT times each, alternating which goes first (ref, ours,
    ours, ref, ...); returns ours' best time, the reference's best time and ours' peak RSS.
    `reference(i)` returns seconds, `ours(i)` (seconds, peak RSS or None) for run i. The best of
    several runs filters out the moments a shared machine stalls."""
    refs, runs = [], []
    for i in range(REPEAT):
        if i % 2 == 0:
            refs.append(reference(i))
            runs.append(ours(i))
        else:
            runs.append(ours(i))
            refs.append(reference(i))
    LAST_RUNS["ours"] = [t for t, _ in runs]
    LAST_RUNS["reference"] = refs
    return min(LAST_RUNS["ours"]), min(refs), max((rss for _, rss in runs if rss is not None), default=None)


# Every run of the last best_of, for the results (and the median ratio in the notes).
LAST_RUNS = {}


def count_records(workdir, topic):
    out = subprocess.run([SLUICE, "log", "topics", "--dir", f"{workdir}/log"], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        fields = line.split("\t")
        if fields[0] == topic:
            return int(fields[2].split("=")[1])
    return 0


def case_snapshot(encoding="json", rows=None):
    rows = rows or ROWS
    reset_db()
    txns = max(1, rows // 1_000_000) if rows > ROWS else max(1, TXNS // 10)
    fill(txns, rows // txns)
    psql("VACUUM ANALYZE t")
    copy = PSQL + ["-d", DB, "-c", "\\copy (SELECT * FROM t) TO /dev/null"]

    def ours(i):
        end = psql("SELECT pg_current_wal_lsn()")
        with tempfile.TemporaryDirectory() as workdir:
            config = sluice_config(workdir, f"bench_snapshot_{i}", "initial", encoding)
            elapsed, rss = peak_rss_mb_of([SLUICE, "run", "-c", config, "--stop-at", lsn_position(end)])
            records = count_records(workdir, "bench.public.t")
        if records < rows:
            raise SystemExit(f"pg_snapshot: only {records} of {rows} rows reached the log")
        return elapsed, rss

    return best_of(lambda _: run_timed(copy), ours)


def case_snapshot_100m():
    """The snapshot of a BIG_ROWS-row table, one run each side; rows/s and peak RSS."""
    global REPEAT
    repeat, REPEAT = REPEAT, 1
    try:
        ours, ref, rss = case_snapshot(rows=BIG_ROWS)
    finally:
        REPEAT = repeat
    notes = (f"rows={BIG_ROWS} sluice_rows_per_s={BIG_ROWS / ours:.0f} copy_rows_per_s={BIG_ROWS / ref:.0f} "
             f"sluice_peak_rss_mb={rss / 1024:.1f}")
    return ours, ref, notes


TARGET_DB = "sluice_bench_target"


def reset_target():
    psql(f"DROP DATABASE IF EXISTS {TARGET_DB} WITH (FORCE)", "postgres")
    psql(f"CREATE DATABASE {TARGET_DB}", "postgres")


def case_pg_sink_apply():
    """1,000,000 change events (Avro, in the log) applied by the Postgres sink into an empty
    target, vs COPY FROM of the same rows into an identical table. Ratio = COPY's time / ours."""
    reset_db()
    fill(max(1, TXNS // 10), ROWS // max(1, TXNS // 10))
    end = psql("SELECT pg_current_wal_lsn()")
    with tempfile.TemporaryDirectory() as workdir:
        # The events: a snapshot of t written to the log as Avro.
        config = sluice_config(workdir, "bench_sink_apply", "initial", "avro")
        run_timed([SLUICE, "run", "-c", config, "--stop-at", lsn_position(end)])
        psql("SELECT pg_drop_replication_slot('bench_sink_apply')")
        rows_file = os.path.join(workdir, "rows.copy")
        subprocess.run(PSQL + ["-d", DB, "-c", f"\\copy t TO '{rows_file}'"], check=True, capture_output=True)
        table_ddl = ("(id bigint PRIMARY KEY, customer int NOT NULL, amount numeric(12,2) NOT NULL, "
                     "note text, created timestamptz NOT NULL DEFAULT now())")

        def reference(_):
            reset_target()
            psql(f"CREATE TABLE t_ref {table_ddl}", TARGET_DB)
            return run_timed(PSQL + ["-d", TARGET_DB, "-c", f"\\copy t_ref FROM '{rows_file}'"])

        def ours(_):
            reset_target()
            sink_config = os.path.join(workdir, "sink.toml")
            with open(sink_config, "w") as f:
                f.write(f'[log]\ndir = "{workdir}/log"\n\n[[sinks]]\nname = "bench"\nkind = "postgres"\n'
                        f'url = "postgres://postgres@127.0.0.1:5432/{TARGET_DB}?sslmode={SSLMODE}"\ntopics = ["bench.public.t"]\n')
            start = time.perf_counter()
            proc = subprocess.Popen([SLUICE, "run", "-c", sink_config], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            done = None
            while done is None:
                if proc.poll() is not None:
                    raise SystemExit(f"pg_sink_apply: sluice exited:\n{proc.stderr.read().decode()[-3000:]}")
                exists = psql("SELECT to_regclass('public.t') IS NOT NULL", TARGET_DB) == "t"
                if exists and int(psql("SELECT count(*) FROM t", TARGET_DB)) >= ROWS:
                    done = time.perf_counter() - start
                else:
                    time.sleep(0.05)
            proc.terminate()
            proc.wait()
            return done, None

        result = best_of(reference, ours)
    psql(f"DROP DATABASE IF EXISTS {TARGET_DB} WITH (FORCE)", "postgres")
    return result


BIG_RSS_GOAL_MB = 200


def case_big_txn(engine, stream=True):
    """One transaction of BIG_GB GB (~1 KB rows) written at the source while sluice streams it
    through the log into a Postgres sink in transactional mode; sluice's peak RSS vs the goal."""
    rows = int(BIG_GB * 1_000_000)
    reset_target()
    with tempfile.TemporaryDirectory() as workdir:
        config = os.path.join(workdir, "big.toml")
        if engine == "pg":
            psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{DB}'", "postgres")
            psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", "postgres")
            psql(f"CREATE DATABASE {DB}", "postgres")
            psql("CREATE TABLE big (id bigint PRIMARY KEY, pad text NOT NULL)")
            source = (f'[[sources]]\nname = "big"\nkind = "postgres"\nurl = "postgres://postgres@127.0.0.1:5432/{DB}?sslmode={SSLMODE}"\n'
                      f'tables = ["public.big"]\nslot = "bench_big"\nsnapshot = "never"\n'
                      + ('' if stream else 'stream_in_progress = false\n'))
            topic = "big.public.big"
            fill = ["sh", "-c", " ".join(PSQL) + f" -d {DB} -c \"INSERT INTO big SELECT g, md5(g::text) || "
                    f"repeat(md5((g + 1)::text), 30) FROM generate_series(1, {rows}) g\""]
        else:
            my(f"DROP DATABASE IF EXISTS {MY_DB}; CREATE DATABASE {MY_DB}; "
               f"CREATE TABLE {MY_DB}.big (id bigint PRIMARY KEY, pad text NOT NULL)")
            my("FLUSH BINARY LOGS")
            my(f"PURGE BINARY LOGS TO '{my('SHOW MASTER STATUS').split(chr(9))[0]}'")
            source = (f'[[sources]]\nname = "big"\nkind = "mysql"\nurl = "{MY_URL}"\n'
                      f'tables = ["{MY_DB}.big"]\nserver_id = 9102\nsnapshot = "never"\n')
            topic = f"big.{MY_DB}.big"
            fill = ["sh", "-c", " ".join(MY) + f" -D {MY_DB} -e \"SET SESSION max_statement_time = 0; INSERT INTO {MY_DB}.big "
                    f"SELECT seq, CONCAT(MD5(seq), REPEAT(MD5(seq + 1), 30)) FROM seq_1_to_{rows}\""]
        with open(config, "w") as f:
            f.write(f'[log]\ndir = "{workdir}/log"\n\n{source}\n[[sinks]]\nname = "big"\nkind = "postgres"\n'
                    f'url = "postgres://postgres@127.0.0.1:5432/{TARGET_DB}?sslmode={SSLMODE}"\ntopics = ["{topic}"]\n'
                    f'schema = "public"\ntransactional = true\n')
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen([SLUICE, "run", "-c", config], stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.time() + 60
            while True:
                err.seek(0)
                text = err.read().decode(errors="replace")
                if "streaming" in text:
                    break
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"{engine}_big_txn: sluice did not start streaming:\n{text[-3000:]}")
                time.sleep(0.1)
            start = time.perf_counter()
            subprocess.run(fill, check=True, capture_output=True)
            written = time.perf_counter() - start
            while True:
                if proc.poll() is not None:
                    err.seek(0)
                    raise SystemExit(f"{engine}_big_txn: sluice exited:\n{err.read().decode()[-3000:]}")
                exists = psql("SELECT to_regclass('public.big') IS NOT NULL", TARGET_DB) == "t"
                if exists and int(psql("SELECT count(*) FROM big", TARGET_DB)) >= rows:
                    break
                time.sleep(1 if rows > 100_000 else 0.05)
            elapsed = time.perf_counter() - start
            proc.terminate()
            _, status, usage = os.wait4(proc.pid, 0)
        spill = ""
        if engine == "pg":
            spilled, streamed = slot_spill("bench_big")
            spill = f" walsender_spill_mb={spilled:.0f} walsender_stream_mb={streamed:.0f}"
            psql("SELECT pg_drop_replication_slot('bench_big')", "postgres")
    psql(f"DROP DATABASE IF EXISTS {TARGET_DB} WITH (FORCE)", "postgres")
    peak_mb = usage.ru_maxrss / 1024
    notes = (f"txn_gb={BIG_GB} rows={rows} sluice_peak_rss_mb={peak_mb:.1f} goal_mb={BIG_RSS_GOAL_MB} "
             f"source_write_s={written:.1f} end_to_end_s={elapsed:.1f}{spill}")
    return peak_mb, BIG_RSS_GOAL_MB, notes


MY = ["mariadb", "--skip-ssl", "-h", "127.0.0.1", "-P", "3306", "-u", "root", "-N", "-B"]
MY_DB = "sluice_bench"


def my(sql):
    return subprocess.run(MY, input=sql, check=True, capture_output=True, text=True).stdout.strip()


def my_reset_and_fill():
    """1,000,000 single-row INSERTs in transactions of 1,000 (a stored procedure), in a fresh
    binlog file; returns (gtid_before, gtid_after, file, start_pos, end_pos)."""
    my(f"DROP DATABASE IF EXISTS {MY_DB}; CREATE DATABASE {MY_DB}; "
       f"CREATE TABLE {MY_DB}.t (id bigint PRIMARY KEY, customer int NOT NULL, amount decimal(12,2) NOT NULL, "
       f"note varchar(100), created datetime(6) NOT NULL)")
    my(f"DELIMITER //\nCREATE PROCEDURE {MY_DB}.fill(n INT, per INT) BEGIN DECLARE i INT DEFAULT 1; START TRANSACTION; "
       f"WHILE i <= n DO INSERT INTO {MY_DB}.t VALUES (i, i % 1000, (i % 100000) / 100, CONCAT('order note number ', i), NOW(6)); "
       f"IF i % per = 0 THEN COMMIT; START TRANSACTION; END IF; SET i = i + 1; END WHILE; COMMIT; END//\nDELIMITER ;\n")
    my("FLUSH BINARY LOGS")
    # Earlier fills' binlogs (400 MB each) go: only this run's file is read.
    my(f"PURGE BINARY LOGS TO '{my('SHOW MASTER STATUS').split(chr(9))[0]}'")
    before = my("SELECT @@GLOBAL.gtid_binlog_pos")
    file, start = my("SHOW MASTER STATUS").split("\t")[:2]
    my(f"CALL {MY_DB}.fill({ROWS}, {max(1, ROWS // TXNS)})")
    after = my("SELECT @@GLOBAL.gtid_binlog_pos")
    end_file, end = my("SHOW MASTER STATUS").split("\t")[:2]
    if end_file != file:
        raise SystemExit(f"mysql bench: the fill spans binlog files {file}..{end_file}; raise max_binlog_size")
    return before, after, file, int(start), int(end)


def mysql_config(workdir, extra):
    path = os.path.join(workdir, "my.toml")
    with open(path, "w") as f:
        f.write(f'[log]\ndir = "{workdir}/log"\nfsync = "always"\n\n[[sources]]\nname = "bench"\nkind = "mysql"\n'
                f'url = "{MY_URL}"\ntables = ["{MY_DB}.t"]\nserver_id = 9101\n{extra}\n')
    return path


def case_mysql_stream():
    """1,000,000 single-row inserts streamed from the binlog into the log until durable, vs
    mariadb-binlog decoding the same binlog range (rows decoded, -v) to /dev/null."""
    before, after, file, start, end = my_reset_and_fill()

    def reference(_):
        return run_timed(["sh", "-c", f"mariadb-binlog --skip-ssl --read-from-remote-server -h 127.0.0.1 -P 3306 -u root "
                          f"--base64-output=DECODE-ROWS -v --start-position={start} --stop-position={end} {file} > /dev/null"])

    def ours(_):
        with tempfile.TemporaryDirectory() as workdir:
            config = mysql_config(workdir, f'snapshot = "never"\nstart_at = "mariadb-gtid:{before}"')
            elapsed, rss = peak_rss_mb_of([SLUICE, "run", "-c", config, "--stop-at", f"mariadb-gtid:{after}"])
            records = count_records(workdir, f"bench.{MY_DB}.t")
        if records < ROWS:
            raise SystemExit(f"mysql_stream: only {records} of {ROWS} rows reached the log")
        return elapsed, rss

    return best_of(reference, ours)


def case_mysql_snapshot():
    """A 1,000,000-row table snapshotted into the log vs `mariadb -e "SELECT * FROM t"` to /dev/null."""
    _, after, _, _, _ = my_reset_and_fill()

    def reference(_):
        return run_timed(["sh", "-c", f"mariadb -h 127.0.0.1 -P 3306 -u root -e 'SELECT * FROM {MY_DB}.t' > /dev/null"])

    def ours(_):
        with tempfile.TemporaryDirectory() as workdir:
            config = mysql_config(workdir, 'snapshot = "initial"')
            elapsed, rss = peak_rss_mb_of([SLUICE, "run", "-c", config, "--stop-at", f"mariadb-gtid:{after}"])
            records = count_records(workdir, f"bench.{MY_DB}.t")
        if records < ROWS:
            raise SystemExit(f"mysql_snapshot: only {records} of {ROWS} rows reached the log")
        return elapsed, rss

    return best_of(reference, ours)


LATENCY_BENCH = os.environ.get("LATENCY_BENCH_BIN", "target/release/latency-bench")


def case_pg_replication_latency():
    """Source commit → visible in the target, at a steady 2,000 transactions/s, measured with
    marker rows. Reference = a 100 ms p99 goal (ratio > 1: faster)."""
    reset_db()
    reset_target()
    psql("CREATE TABLE load (id bigint PRIMARY KEY, payload text); "
         "CREATE TABLE markers (seq bigint PRIMARY KEY, sent_us bigint NOT NULL)")
    seconds = 3 if TINY else 20
    with tempfile.TemporaryDirectory() as workdir:
        config = os.path.join(workdir, "latency.toml")
        with open(config, "w") as f:
            f.write(f'[log]\ndir = "{workdir}/log"\n\n[[sources]]\nname = "bench"\nkind = "postgres"\n'
                    f'url = "postgres://postgres@127.0.0.1:5432/{DB}?sslmode={SSLMODE}"\ntables = ["public.load", "public.markers"]\n'
                    f'slot = "bench_latency"\nencoding = "avro"\n\n[[sinks]]\nname = "replica"\nkind = "postgres"\n'
                    f'url = "postgres://postgres@127.0.0.1:5432/{TARGET_DB}?sslmode={SSLMODE}"\ntopics = ["bench.public.*"]\n')
        proc = subprocess.Popen([SLUICE, "run", "-c", config], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            out = subprocess.run([LATENCY_BENCH, "--source", f"postgres://postgres@127.0.0.1:5432/{DB}?sslmode={SSLMODE}",
                                  "--target", f"postgres://postgres@127.0.0.1:5432/{TARGET_DB}?sslmode={SSLMODE}",
                                  "--rate", "2000", "--seconds", str(seconds)],
                                 check=True, capture_output=True, text=True).stdout
        finally:
            proc.terminate()
            proc.wait()
    psql("SELECT pg_drop_replication_slot('bench_latency')")
    psql(f"DROP DATABASE IF EXISTS {TARGET_DB} WITH (FORCE)", "postgres")
    result = json.loads(out)
    notes = (f"p50_ms={result['p50_ms']:.1f} p99_ms={result['p99_ms']:.1f} markers={result['markers']} "
             f"achieved_tps={result['achieved_tps']:.0f} (reference = 100 ms p99 goal)")
    return result["p99_ms"] / 1000, 0.1, notes


def case_incremental_snapshot():
    """An on-demand snapshot (`sluice snapshot`) of the 1,000,000-row table t while a writer
    commits 1,000 transactions/s into other captured tables (latency-bench, markers replicated
    to a Postgres sink): the snapshot's time vs psql \\copy of the same table, and the streaming
    p99 (source commit -> visible in the target) during it, in the notes."""
    reset_db()
    fill(max(1, TXNS // 10), ROWS // max(1, TXNS // 10))
    psql("VACUUM ANALYZE t")
    psql("CREATE TABLE load (id bigint PRIMARY KEY, payload text); "
         "CREATE TABLE markers (seq bigint PRIMARY KEY, sent_us bigint NOT NULL)")
    copy = PSQL + ["-d", DB, "-c", "\\copy (SELECT * FROM t) TO /dev/null"]
    refs = [run_timed(copy) for _ in range(REPEAT)]
    # The writer runs from 1 s before the snapshot to about its end: the p99 is the snapshot's.
    seconds = 5
    with tempfile.TemporaryDirectory() as workdir:
        reset_target()
        config = os.path.join(workdir, "incremental.toml")
        with open(config, "w") as f:
            f.write(f'[log]\ndir = "{workdir}/log"\nfsync = "always"\n\n[[sources]]\nname = "bench"\nkind = "postgres"\n'
                    f'url = "postgres://postgres@127.0.0.1:5432/{DB}?sslmode={SSLMODE}"\n'
                    f'tables = ["public.t", "public.load", "public.markers"]\nslot = "bench_incremental"\n'
                    f'snapshot = "never"\n\n[[sinks]]\nname = "replica"\nkind = "postgres"\n'
                    f'url = "postgres://postgres@127.0.0.1:5432/{TARGET_DB}?sslmode={SSLMODE}"\n'
                    f'topics = ["bench.public.load", "bench.public.markers"]\n')
        err_path = os.path.join(workdir, "sluice.err")
        with open(err_path, "w") as err:
            proc = subprocess.Popen([SLUICE, "run", "-c", config], stdout=subprocess.DEVNULL, stderr=err)
        try:
            for _ in range(300):
                if psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bench_incremental' AND active") == "1":
                    break
                time.sleep(0.1)
            latency = subprocess.Popen([LATENCY_BENCH, "--source", f"postgres://postgres@127.0.0.1:5432/{DB}?sslmode={SSLMODE}",
                                        "--target", f"postgres://postgres@127.0.0.1:5432/{TARGET_DB}?sslmode={SSLMODE}",
                                        "--rate", "1000", "--seconds", str(seconds)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(1)
            start = time.perf_counter()
            subprocess.run([SLUICE, "snapshot", "-c", config, "bench", "public.t"], check=True, capture_output=True)
            while "on-demand snapshot of the table done" not in open(err_path).read():
                if proc.poll() is not None:
                    raise SystemExit(f"incremental_snapshot: sluice exited:\n{open(err_path).read()[-3000:]}")
                time.sleep(0.05)
            elapsed = time.perf_counter() - start
            out, lat_err = latency.communicate()
            if latency.returncode != 0:
                raise SystemExit(f"latency-bench failed:\n{lat_err[-3000:]}")
            records = count_records(workdir, "bench.public.t")
        finally:
            proc.terminate()
            proc.wait()
    psql("SELECT pg_drop_replication_slot('bench_incremental')")
    psql(f"DROP DATABASE IF EXISTS {TARGET_DB} WITH (FORCE)", "postgres")
    if records < ROWS:
        raise SystemExit(f"incremental_snapshot: only {records} of {ROWS} rows reached the log")
    result = json.loads(out)
    LAST_RUNS["ours"] = [elapsed]
    LAST_RUNS["reference"] = refs
    notes = (f"rows={ROWS} rows_per_s={ROWS / elapsed:.0f} writer_tps={result['achieved_tps']:.0f} "
             f"stream_p50_ms={result['p50_ms']:.1f} stream_p99_ms={result['p99_ms']:.1f} "
             f"(latency over the writer's {seconds} s, the snapshot {elapsed:.1f} s of them)")
    return elapsed, min(refs), notes


def case_mysql_incremental_snapshot():
    """An on-demand snapshot of the 1,000,000-row MariaDB table t (`sluice snapshot`, through
    the signal table) while a stored procedure commits single-row transactions into `load`
    (about 1,000/s, one per millisecond), vs `mariadb -e "SELECT * FROM t"` to /dev/null."""
    my_reset_and_fill()
    my(f"CREATE TABLE {MY_DB}.sluice_signal (id VARCHAR(64) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT); "
       f"CREATE TABLE {MY_DB}.load (id bigint PRIMARY KEY, payload varchar(100))")
    my(f"DELIMITER //\nCREATE PROCEDURE {MY_DB}.writer(seconds INT) BEGIN DECLARE i INT DEFAULT 1; "
       f"DECLARE stop_at DATETIME(6) DEFAULT NOW(6) + INTERVAL seconds SECOND; "
       f"WHILE NOW(6) < stop_at DO INSERT INTO {MY_DB}.load VALUES (i, 'a row of load'); SET i = i + 1; "
       f"DO SLEEP(0.001); END WHILE; SELECT i - 1; END//\nDELIMITER ;\n")
    select = ["sh", "-c", f"mariadb --skip-ssl -h 127.0.0.1 -P 3306 -u root -e 'SELECT * FROM {MY_DB}.t' > /dev/null"]
    refs = [run_timed(select) for _ in range(REPEAT)]
    seconds = 10 if not TINY else 3
    with tempfile.TemporaryDirectory() as workdir:
        config = mysql_config(workdir, f'snapshot = "never"\nsignal_table = "{MY_DB}.sluice_signal"')
        with open(config) as f:
            text = f.read().replace(f'tables = ["{MY_DB}.t"]', f'tables = ["{MY_DB}.t", "{MY_DB}.load"]')
        with open(config, "w") as f:
            f.write(text)
        err_path = os.path.join(workdir, "sluice.err")
        with open(err_path, "w") as err:
            proc = subprocess.Popen([SLUICE, "run", "-c", config], stdout=subprocess.DEVNULL, stderr=err)
        try:
            while "streaming the binlog" not in open(err_path).read():
                if proc.poll() is not None:
                    raise SystemExit(f"mysql_incremental_snapshot: sluice exited:\n{open(err_path).read()[-3000:]}")
                time.sleep(0.05)
            writer = subprocess.Popen(MY + ["-e", f"CALL {MY_DB}.writer({seconds})"], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            time.sleep(1)
            start = time.perf_counter()
            subprocess.run([SLUICE, "snapshot", "-c", config, "bench", f"{MY_DB}.t"], check=True, capture_output=True)
            while "on-demand snapshot of the table done" not in open(err_path).read():
                if proc.poll() is not None:
                    raise SystemExit(f"mysql_incremental_snapshot: sluice exited:\n{open(err_path).read()[-3000:]}")
                time.sleep(0.05)
            elapsed = time.perf_counter() - start
            out, writer_err = writer.communicate()
            if writer.returncode != 0:
                raise SystemExit(f"mysql_incremental_snapshot: the writer failed:\n{writer_err[-3000:]}")
            records = count_records(workdir, f"bench.{MY_DB}.t")
            loaded = count_records(workdir, f"bench.{MY_DB}.load")
        finally:
            proc.terminate()
            proc.wait()
    if records < ROWS:
        raise SystemExit(f"mysql_incremental_snapshot: only {records} of {ROWS} rows reached the log")
    written = int(out.strip() or 0)
    LAST_RUNS["ours"] = [elapsed]
    LAST_RUNS["reference"] = refs
    notes = (f"rows={ROWS} rows_per_s={ROWS / elapsed:.0f} writer_tps={written / seconds:.0f} "
             f"writer_rows_in_log={loaded}/{written} (the writer's {seconds} s, the snapshot {elapsed:.1f} s of them)")
    return elapsed, min(refs), notes


KAFKA_LIBS = "target/kafka/libs/*"
KAFKA_PY = "target/pyenv/bin/python"

# Waits until the Kafka topic holds at least N records (the sum of its partitions' end offsets;
# transaction markers count too, a few per thousand batches), then prints the time it took.
KAFKA_WAITER = r'''
import sys, time
from confluent_kafka import Consumer, KafkaException, TopicPartition
topic, n, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
c = Consumer({"bootstrap.servers": "127.0.0.1:9092", "group.id": "bench-waiter"})
deadline = time.time() + 900
while time.time() < deadline:
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is not None and meta.error is None and meta.partitions:
            total = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions)
            if total >= n:
                print(time.time() - start)
                sys.exit(0)
    except KafkaException:
        pass  # a topic just created has no leader yet for a moment
    time.sleep(0.05)
sys.exit("timed out")
'''


# Deletes the topics whose names hold a fragment (a case's stamp): a run writes gigabytes.
KAFKA_DROPPER = r'''
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": "127.0.0.1:9092"})
names = [t for t in admin.list_topics(timeout=10).topics if sys.argv[1] in t]
for future in (admin.delete_topics(names, operation_timeout=30).values() if names else []):
    future.result()
'''


def log_time(line):
    """The Unix time of a sluice log line (its leading RFC 3339 UTC timestamp)."""
    stamp = line.split()[0].rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds + float(f"0.{fraction or 0}")


def drop_kafka_topics(fragment):
    subprocess.run([KAFKA_PY, "-c", KAFKA_DROPPER, fragment], check=True, capture_output=True)


def case_kafka_sink(transactions=True):
    """A filled log (the 1,000,000-row snapshot) delivered into Kafka by the Kafka sink alone,
    acks=all, exactly once (transactions) or at least once, vs Kafka's ProducerPerformance sending
    as many records of the same average size with the same acks (and transactions), both to the
    broker dev/services starts. Reference time = records / ProducerPerformance's records/s,
    which it clocks from after its producer is created and its transactions initialised; ours
    is clocked the same way, from the sink's producer being ready to the last record in Kafka
    (sluice's start, the log's opening and the producer's set-up are left out on both sides)."""
    subprocess.run(["dev/services", "up", "kafka"], check=True, capture_output=True)
    reset_db()
    fill(max(1, TXNS // 10), ROWS // max(1, TXNS // 10))
    psql("VACUUM ANALYZE t")
    stamp = time.strftime("%H%M%S")
    mode = "exactly_once" if transactions else "at_least_once"
    with tempfile.TemporaryDirectory() as workdir:
        end = psql("SELECT pg_current_wal_lsn()")
        config = sluice_config(workdir, f"bench_kafka_{stamp}", "initial")
        run_timed([SLUICE, "run", "-c", config, "--stop-at", lsn_position(end)])
        records = count_records(workdir, "bench.public.t")
        if records < ROWS:
            raise SystemExit(f"kafka_sink: only {records} of {ROWS} rows reached the log")
        # The average value as stored (the log may compress its batches: not their size).
        tail = subprocess.run([SLUICE, "log", "tail", "bench.public.t", "--dir", f"{workdir}/log", "--format", "raw"],
                              check=True, capture_output=True).stdout.splitlines()
        record_size = max(1, sum(len(line) for line in tail) // max(1, len(tail)))

        def ours(i):
            name = f"k{stamp}_{i}"
            topic = f"bench_{name}.bench.public.t"
            sink = os.path.join(workdir, f"sink{i}.toml")
            with open(sink, "w") as f:
                f.write(f'[log]\ndir = "{workdir}/log"\n\n[[sinks]]\nname = "{name}"\nkind = "kafka"\n'
                        f'brokers = "127.0.0.1:9092"\ntopics = ["bench.public.t"]\ntopic = "bench_{name}.{{topic}}"\n'
                        f'delivery = "{mode}"\n')
            # Timed as ProducerPerformance times itself: from the producer being ready (it
            # creates its producer and initialises transactions before its clock starts) to
            # the last record in Kafka; the sink logs when its producer is ready.
            waiter = subprocess.Popen([KAFKA_PY, "-c", KAFKA_WAITER, topic, str(ROWS), "0"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            proc = subprocess.Popen([SLUICE, "run", "-c", sink], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            out, err = waiter.communicate()
            proc.terminate()
            _, sluice_err = proc.communicate()
            if waiter.returncode != 0:
                raise SystemExit(f"kafka_sink: {err[-2000:]}\n{sluice_err.decode()[-3000:]}")
            ready = [line for line in sluice_err.decode().splitlines()
                     if "resuming after the offsets committed in Kafka" in line or "Kafka sink connected" in line]
            if not ready:
                raise SystemExit(f"kafka_sink: the sink never said it was ready:\n{sluice_err.decode()[-3000:]}")
            return float(out.strip()) - log_time(ready[0])

        def reference(i):
            cmd = ["java", "-Xmx1g", "-cp", KAFKA_LIBS, "org.apache.kafka.tools.ProducerPerformance",
                   "--topic", f"bench_ref{stamp}_{i}", "--num-records", str(ROWS), "--record-size", str(record_size),
                   "--throughput", "-1", "--producer-props", "bootstrap.servers=127.0.0.1:9092", "acks=all",
                   # librdkafka's batches (what the sink sends) hold up to 1 MB: the Java
                   # producer gets the same, not its 16 KB default.
                   "linger.ms=5", "batch.size=1048576"]
            if transactions:
                cmd += ["--transactional-id", f"bench-ref-{stamp}-{i}", "--transaction-duration-ms", "200"]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            last = [line for line in out.splitlines() if "records sent" in line][-1]
            per_s = float(last.split("records sent,")[1].split("records/sec")[0].strip())
            return ROWS / per_s

        refs, runs = [], []
        try:
            for i in range(REPEAT):
                refs.append(reference(i))
                runs.append(ours(i))
        finally:
            drop_kafka_topics(stamp)
    LAST_RUNS["ours"] = runs
    LAST_RUNS["reference"] = refs
    notes = (f"records={ROWS} record_bytes~{record_size} delivery={mode} ours_per_s={ROWS / min(runs):.0f} "
             f"producer_performance_per_s={ROWS / min(refs):.0f}")
    return min(runs), min(refs), notes


DEBEZIUM_LIBS = "target/debezium/libs"
DEBEZIUM_CLASSES = "target/debezium/classes"


def vm_hwm_mb(pid):
    """A running process's peak RSS (VmHWM) in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def until_in_kafka(cmd, topic, records, name):
    """Starts cmd, waits until the Kafka topic holds `records` records, stops cmd; returns the
    seconds from the start and cmd's peak RSS in MB."""
    start = time.time()
    waiter = subprocess.Popen([KAFKA_PY, "-c", KAFKA_WAITER, topic, str(records), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        out, werr = waiter.communicate()
        rss = vm_hwm_mb(proc.pid) if proc.poll() is None else 0.0
        proc.kill()
        proc.wait()
        if waiter.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{name}: {werr[-2000:]}\n{err.read().decode()[-3000:]}")
    return float(out.strip()), rss


def case_pg_to_kafka():
    """TXNS transactions of ROWS/TXNS rows streamed from Postgres into Kafka end to end, from a
    backlog in a slot: sluice (Postgres source, log, Kafka sink, exactly once) vs Debezium
    3.6.1's embedded engine with the JSON converter, each record sent by a Kafka producer
    (acks=all) to the same broker (dev/debezium/DebeziumRun.java). Both are timed from their
    start to the last record in Kafka; peak RSS of each in the notes."""
    subprocess.run(["dev/services", "up", "kafka"], check=True, capture_output=True)
    subprocess.run(["dev/services", "up", "debezium"], check=True, capture_output=True)
    os.makedirs(DEBEZIUM_CLASSES, exist_ok=True)
    subprocess.run(["javac", "-cp", f"{DEBEZIUM_LIBS}/*", "-d", DEBEZIUM_CLASSES, "dev/debezium/DebeziumRun.java"],
                   check=True, capture_output=True)
    reset_db()
    for i in range(REPEAT):
        for side in ("dbz", "ours"):
            psql(f"SELECT pg_create_logical_replication_slot('bench_{side}_{i}', 'pgoutput')")
    fill(TXNS, ROWS // TXNS)
    end_marker()
    psql("CHECKPOINT")
    stamp = time.strftime("%H%M%S")
    rss = {"dbz": []}

    def reference(i):
        prefix = f"dbz{stamp}{i}"
        cmd = ["java", "-cp", f"{DEBEZIUM_CLASSES}:{DEBEZIUM_LIBS}/*", "DebeziumRun",
               "database.hostname=127.0.0.1", "database.port=5432", "database.user=postgres",
               "database.password=unused", f"database.dbname={DB}", f"topic.prefix={prefix}",
               f"slot.name=bench_dbz_{i}", "publication.name=bench", "publication.autocreate.mode=disabled",
               "table.include.list=public.t", "snapshot.mode=no_data", "harness.out=kafka:127.0.0.1:9092"]
        seconds, peak = until_in_kafka(cmd, f"{prefix}.public.t", ROWS, "pg_to_kafka (Debezium)")
        rss["dbz"].append(peak)
        return seconds

    def ours(i):
        with tempfile.TemporaryDirectory() as workdir:
            config = sluice_config(workdir, f"bench_ours_{i}", "never")
            name = f"pk{stamp}_{i}"
            with open(config, "a") as f:
                f.write(f'\n[[sinks]]\nname = "{name}"\nkind = "kafka"\nbrokers = "127.0.0.1:9092"\n'
                        f'topics = ["bench.public.t"]\ntopic = "{name}.{{topic}}"\n')
            return until_in_kafka([SLUICE, "run", "-c", config], f"{name}.bench.public.t", ROWS,
                                  "pg_to_kafka (sluice)")

    try:
        ours_s, ref_s, sluice_peak = best_of(reference, ours)
    finally:
        drop_kafka_topics(stamp)
    runs, refs = LAST_RUNS["ours"], LAST_RUNS["reference"]
    notes = (f"records={ROWS} txns={TXNS} ours_per_s={ROWS / min(runs):.0f} debezium_per_s={ROWS / min(refs):.0f} "
             f"sluice_peak_rss_mb={sluice_peak:.0f} debezium_peak_rss_mb={max(rss['dbz']):.0f} "
             f"(goal: ratio >= 5, RSS <= 1/10 of Debezium's)")
    return min(runs), min(refs), notes


LOG_BENCH = os.environ.get("LOG_BENCH_BIN", "target/release/log-bench")
ENCODE_BENCH = os.environ.get("ENCODE_BENCH_BIN", "target/release/encode-bench")
TRANSFORM_BENCH = os.environ.get("TRANSFORM_BENCH_BIN", "target/release/transform-bench")


def case_transforms():
    """Decoding plus a chain of 4 transforms vs decoding alone, one thread, the same records.
    Ratio = plain time / chained time (goal >= 0.8: the chain costs at most a fifth)."""
    events = 20_000 if TINY else 1_000_000
    runs = [json.loads(subprocess.run([TRANSFORM_BENCH, "--events", str(events)], check=True,
                                      capture_output=True, text=True).stdout) for _ in range(REPEAT)]
    c = min((run["chained"] for run in runs), key=lambda r: r["seconds"])
    p = min((run["plain"] for run in runs), key=lambda r: r["seconds"])
    LAST_RUNS["ours"] = [run["chained"]["seconds"] for run in runs]
    LAST_RUNS["reference"] = [run["plain"]["seconds"] for run in runs]
    notes = (f"events={events} chained_events_per_s={c['events_per_s']:.0f} "
             f"plain_events_per_s={p['events_per_s']:.0f} (goal: ratio >= 0.8)")
    return c["seconds"], p["seconds"], notes


def case_encode_avro():
    """Avro vs JSON encoding of the same 20-column events. Ratio = JSON's time / Avro's."""
    events = 20_000 if TINY else 1_000_000
    runs = [json.loads(subprocess.run([ENCODE_BENCH, "--events", str(events)], check=True,
                                      capture_output=True, text=True).stdout) for _ in range(REPEAT)]
    # Each encoding's best run: one binary times both, one after the other.
    a = min((run["avro"] for run in runs), key=lambda r: r["seconds"])
    j = min((run["json"] for run in runs), key=lambda r: r["seconds"])
    LAST_RUNS["ours"] = [run["avro"]["seconds"] for run in runs]
    LAST_RUNS["reference"] = [run["json"]["seconds"] for run in runs]
    notes = (f"events={events} avro_events_per_s={a['events_per_s']:.0f} json_events_per_s={j['events_per_s']:.0f} "
             f"avro_bytes_per_event={a['bytes_per_event']:.0f} json_bytes_per_event={j['bytes_per_event']:.0f}")
    return a["seconds"], j["seconds"], notes


def log_bench(*args):
    out = subprocess.run([LOG_BENCH, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def case_log_append_fsync(size):
    """4 producers, fsync=always, transactions of about 1 MiB (1,024 records of 1 KiB, 10,240 of
    100 bytes: what one of sluice's source batches or a Kafka producer request carries), vs dd
    writing the same bytes with conv=fdatasync. Ratio = dd's time / ours (> 1: the log is faster)."""
    records = (4_000 if TINY else 400_000) * (1024 // size if size < 1024 else 1)
    mb = max(1, records * size // (1024 * 1024))

    def dd():
        with tempfile.TemporaryDirectory() as workdir:
            return run_timed(["dd", "if=/dev/zero", f"of={workdir}/dd.out", "bs=1M", f"count={mb}", "conv=fdatasync"])

    runs = []

    def ours(_):
        with tempfile.TemporaryDirectory() as workdir:
            runs.append(log_bench("append", f"{workdir}/log", "--producers", "4", "--records", str(records),
                                  "--size", str(size), "--batch", str(1024 * 1024 // size), "--fsync", "always"))
        return runs[-1]["seconds"], None

    # The disk's write-back makes single runs noisy: reference, ours, ours, reference, ...; best of each.
    ours_s, ref_s, _ = best_of(lambda _: dd(), ours)
    best = min(runs, key=lambda r: r["seconds"])
    return ours_s, ref_s, f"records={best['records']} record_bytes={size} records_per_s={best['records_per_s']:.0f}"


def case_log_append_nofsync():
    """One producer, fsync=never, 100-byte records; the reference is the goal, 1M records/s."""
    records = 20_000 if TINY else 2_000_000
    with tempfile.TemporaryDirectory() as workdir:
        ours = log_bench("append", f"{workdir}/log", "--producers", "1", "--records", str(records),
                         "--size", "100", "--batch", "1000", "--fsync", "never")
    goal_seconds = ours["records"] / 1_000_000
    return ours["seconds"], goal_seconds, f"records_per_s={ours['records_per_s']:.0f} (reference = goal of 1M/s)"


def case_log_ack_latency():
    """10,000 records/s, fsync=always: p99 from append to acknowledgement vs the 5 ms goal."""
    with tempfile.TemporaryDirectory() as workdir:
        ours = log_bench("latency", f"{workdir}/log", "--rate", "10000", "--seconds", "1" if TINY else "5")
    return ours["p99_ms"] / 1000, 0.005, f"p50_ms={ours['p50_ms']:.3f} p99_ms={ours['p99_ms']:.3f} (reference = 5 ms goal)"


def case_log_read():
    """Sequential read of every record from the page cache vs cat of the same segment files."""
    records = 20_000 if TINY else 2_000_000
    with tempfile.TemporaryDirectory() as workdir:
        log_bench("append", f"{workdir}/log", "--producers", "1", "--records", str(records), "--size", "100",
                  "--batch", "1000", "--fsync", "never")
        cat = ["sh", "-c", f"cat {workdir}/log/topics/*/*/*.log > /dev/null"]
        run_timed(cat)  # warm the cache
        runs = []

        def ours(_):
            runs.append(log_bench("read", f"{workdir}/log"))
            return runs[-1]["seconds"], None

        ours_s, ref_s, _ = best_of(lambda _: run_timed(cat), ours)
    return ours_s, ref_s, f"records={runs[0]['records']}"


def main():
    results = []
    print(f"{'case':<22}{'ours_s':>10}{'reference_s':>13}{'ratio':>8}   notes", flush=True)
    plan = [
        ("log_append_fsync_1k", lambda: case_log_append_fsync(1024)),
        ("log_append_fsync_100b", lambda: case_log_append_fsync(100)),
        ("log_append_nofsync", case_log_append_nofsync),
        ("log_ack_latency", case_log_ack_latency),
        ("log_read", case_log_read),
        ("encode_avro", case_encode_avro),
        ("transforms", case_transforms),
        ("pg_stream", lambda: case_stream("pg_stream", TXNS)),
        ("pg_stream_one_txn", lambda: case_stream("pg_stream_one_txn", 1)),
        ("pg_stream_one_txn_v2", lambda: case_stream("pg_stream_one_txn_v2", 1, protocol=2)),
        ("pg_stream_tls", lambda: case_stream("pg_stream_tls", TXNS, "require")),
        ("pg_snapshot", case_snapshot),
        ("pg_snapshot_avro", lambda: case_snapshot("avro")),
        ("pg_snapshot_100m", case_snapshot_100m),
        ("pg_sink_apply", case_pg_sink_apply),
        ("mysql_stream", case_mysql_stream),
        ("mysql_snapshot", case_mysql_snapshot),
        ("pg_replication_latency", case_pg_replication_latency),
        ("incremental_snapshot", case_incremental_snapshot),
        ("mysql_incremental_snapshot", case_mysql_incremental_snapshot),
        ("kafka_sink", case_kafka_sink),
        ("kafka_sink_at_least_once", lambda: case_kafka_sink(transactions=False)),
        ("pg_to_kafka", case_pg_to_kafka),
        ("pg_stream_kafka", lambda: scaleout_cases.case_pg_stream_kafka(sys.modules[__name__])),
        ("sink_scaleout", lambda: scaleout_cases.case_sink_scaleout(sys.modules[__name__])),
        ("opensearch_sink", lambda: search_cases.case_opensearch_sink(sys.modules[__name__])),
        ("typesense_sink", lambda: search_cases.case_typesense_sink(sys.modules[__name__])),
        ("search_freshness", lambda: search_cases.case_search_freshness(sys.modules[__name__])),
        ("clickhouse_sink", lambda: warehouse_cases.case_clickhouse_sink(sys.modules[__name__])),
        ("clickhouse_sink_avro", lambda: warehouse_cases.case_clickhouse_sink(sys.modules[__name__], "avro")),
        ("iceberg_sink", lambda: warehouse_cases.case_iceberg_sink(sys.modules[__name__])),
        ("iceberg_sink_avro", lambda: warehouse_cases.case_iceberg_sink(sys.modules[__name__], "avro")),
        ("iceberg_freshness", lambda: warehouse_cases.case_iceberg_freshness(sys.modules[__name__])),
        ("pg_big_txn", lambda: case_big_txn("pg")),
        ("pg_big_txn_at_commit", lambda: case_big_txn("pg", stream=False)),
        ("mysql_big_txn", lambda: case_big_txn("mysql")),
    ]
    wm = psql("SHOW logical_decoding_work_mem", "postgres")
    by_hand = {"pg_snapshot_100m"}
    for name, run in plan:
        if (CASES and name not in CASES) or (not CASES and name in by_hand):
            continue
        if (name.startswith("log_") or name.startswith("encode_") or name in ("pg_replication_latency", "transforms")
                or "_big_txn" in name
                or name.startswith("kafka_") or name in ("pg_to_kafka", "pg_stream_kafka", "sink_scaleout")
                or name in ("opensearch_sink", "typesense_sink", "search_freshness")
                or name.startswith("clickhouse_sink") or name.startswith("iceberg_")
                or name in ("incremental_snapshot", "mysql_incremental_snapshot", "pg_snapshot_100m")):
            ours, ref, notes = run()
            rss = None
        else:
            ours, ref, rss = run()
            notes = f"rows={ROWS}"
        ratio = ref / ours
        runs = dict(LAST_RUNS)
        LAST_RUNS.clear()
        if runs and len(runs["ours"]) > 2:
            notes += f" median_ratio={statistics.median(runs['reference']) / statistics.median(runs['ours']):.2f}"
        if rss is not None:
            notes += f" sluice_peak_rss_mb={rss / 1024:.1f}"
        if EXTRA_NOTES:
            notes += " " + " ".join(EXTRA_NOTES)
            EXTRA_NOTES.clear()
        if name.startswith("pg_stream_one_txn"):
            notes += f" logical_decoding_work_mem={wm}"
        print(f"{name:<22}{ours:>10.3f}{ref:>13.3f}{ratio:>8.2f}   {notes}", flush=True)
        results.append({"case": name, "ours_s": ours, "reference_s": ref, "ratio": ratio, "rows": ROWS,
                        "peak_rss_mb": rss / 1024 if rss else None,
                        "ours_runs_s": runs.get("ours"), "reference_runs_s": runs.get("reference")})
    psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{DB}'", "postgres")
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", "postgres")
    my(f"DROP DATABASE IF EXISTS {MY_DB}")
    os.makedirs("bench/results", exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = f"bench/results/{stamp}{'-tiny' if TINY else ''}.json"
    with open(out, "w") as f:
        json.dump({"when": stamp, "tiny": TINY, "repeat": REPEAT, "results": results}, f, indent=2)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
