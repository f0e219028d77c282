"""The warehouse sink cases of dev/bench (bench/run.py runs them; `b` is run.py's module, for its
helpers and settings).

  clickhouse_sink    the 1,000,000-row snapshot in the log inserted into ClickHouse 18.16 by the
                     sink alone (from its "ClickHouse sink open" log line until the table holds
                     every row) vs clickhouse-client inserting the same rows from a pre-built
                     RowBinary file (the sink's format) into a table of the same definition.
                     Peak RSS of sluice and of clickhouse-client in the notes.
  clickhouse_sink_avro  the same with the log's records in Avro (the sink decodes less).
  iceberg_sink       the same 1,000,000-row snapshot committed into an Iceberg table (REST catalog,
                     local warehouse) by the sink alone (from "Iceberg sink open" until the
                     table's current snapshot counts every row) vs pyiceberg appending the same
                     rows, already in memory as one Arrow table, to a table of the same schema
                     (only the append timed). Peak RSS of sluice and of the pyiceberg process.
  iceberg_sink_avro  the same with the log's records in Avro.
  iceberg_freshness  source commit → counted in the table's current snapshot at 1,000
                     changes/s with commit_interval_ms = 1000 (p50, p99).
"""

import json
import os
import subprocess
import tempfile
import time
import urllib.request

import search_cases

CLICKHOUSE = "http://127.0.0.1:8123"


def ch(sql, data_file=None, out=None):
    """Runs sql over ClickHouse's HTTP interface; returns the answer (or writes it to out)."""
    cmd = ["curl", "-sS", "-m", "1800", "--fail-with-body", "--data-binary", sql if data_file is None
           else "@" + data_file]
    url = CLICKHOUSE + "/"
    if data_file is not None:
        import urllib.parse
        url += "?query=" + urllib.parse.quote(sql)
    cmd.append(url)
    if out is not None:
        cmd += ["-o", out]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def count(table):
    try:
        return int(ch(f"SELECT count() FROM {table}").strip() or 0)
    except (subprocess.CalledProcessError, ValueError):
        return 0


def case_clickhouse_sink(b, encoding="json"):
    subprocess.run(["dev/services", "up", "clickhouse"], check=True, capture_output=True)
    stamp = time.strftime("%H%M%S")
    database = f"bench_ch{stamp}"
    ch(f"CREATE DATABASE {database}")
    refs, runs, rss_ours, rss_ref = [], [], [], []
    rowbinary, definition = None, None
    try:
        with tempfile.TemporaryDirectory() as workdir:
            search_cases.filled_log(b, workdir, f"bench_ch_{stamp}", encoding)
            for i in range(b.REPEAT):
                table = f"{database}.t{i}"
                sink = (f'[[sinks]]\nname = "ch{stamp}{i}"\nkind = "clickhouse"\nurl = "{CLICKHOUSE}"\n'
                        f'database = "{database}"\ntopics = ["bench.public.t"]\ntable = "t{i}"\n')
                runs.append(search_cases.run_sink(b, workdir, sink, "ClickHouse sink open",
                                                  lambda: count(table) >= b.ROWS, "clickhouse_sink"))
                rss_ours.append(search_cases.LAST_PEAK_RSS_MB)
                if rowbinary is None:
                    rowbinary = os.path.join(workdir, "rows.bin")
                    ch(f"SELECT * FROM {table} FORMAT RowBinary", out=rowbinary)
                    definition = ch(f"SHOW CREATE TABLE {table} FORMAT TSVRaw").strip()
                    dumped = table
                ref = f"{database}.ref{i}"
                ch(definition.replace(f"{dumped} ", f"{ref} ", 1))
                with open(rowbinary, "rb") as rows:
                    start = time.perf_counter()
                    proc = subprocess.Popen(
                        ["clickhouse-client", "--port", "9000", "--query", f"INSERT INTO {ref} FORMAT RowBinary"],
                        stdin=rows, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                    _, status, usage = os.wait4(proc.pid, 0)
                    refs.append(time.perf_counter() - start)
                    if os.waitstatus_to_exitcode(status) != 0:
                        raise SystemExit(f"clickhouse_sink: clickhouse-client failed: {proc.stderr.read().decode()}")
                rss_ref.append(usage.ru_maxrss / 1024)
                if count(ref) != b.ROWS:
                    raise SystemExit(f"clickhouse_sink: the reference inserted {count(ref)} of {b.ROWS}")
                ch(f"DROP TABLE {ref}")
                if i + 1 < b.REPEAT:
                    ch(f"DROP TABLE {table}")
            mb = os.path.getsize(rowbinary) / 1e6
    finally:
        subprocess.run(["curl", "-sS", "--data-binary", f"DROP DATABASE IF EXISTS {database}", CLICKHOUSE + "/"],
                       capture_output=True)
    b.LAST_RUNS["ours"] = runs
    b.LAST_RUNS["reference"] = refs
    notes = (f"rows={b.ROWS} log={encoding} rowbinary_mb~{mb:.0f} ours_rows_per_s={b.ROWS / min(runs):.0f} "
             f"client_rows_per_s={b.ROWS / min(refs):.0f} peak_rss_mb sluice={max(rss_ours):.0f} "
             f"clickhouse-client={max(rss_ref):.0f} (goal: ratio >= 0.8)")
    return min(runs), min(refs), notes


ICEBERG = "http://127.0.0.1:8181"

# Reads the table sluice wrote into Arrow (not timed), then times pyiceberg appending it to a
# new table of the same schema; prints the seconds.
PYICEBERG_APPEND = """
import sys, time
from pyiceberg.catalog.rest import RestCatalog
catalog = RestCatalog("bench", uri=sys.argv[1])
rows = catalog.load_table((sys.argv[2], sys.argv[3])).scan().to_arrow()
table = catalog.create_table((sys.argv[2], sys.argv[4]), schema=rows.schema)
start = time.perf_counter()
table.append(rows)
print(time.perf_counter() - start)
"""


# The same job with pyiceberg: from the same change events (the log's Debezium JSON envelopes,
# one per line) to the same table: the envelopes decoded by Arrow's JSON reader (C++, on every
# core), the last change per key kept, the columns cast to the table's types, then appended.
# Timed from reading the file to the commit; prints the seconds. (The reference above
# starts from rows already in Arrow.)
PYICEBERG_SAME_JOB = """
import sys, time
import pyarrow as pa, pyarrow.compute as pc, pyarrow.json as pj
from pyiceberg.catalog.rest import RestCatalog
uri, namespace, model, new, path = sys.argv[1:6]
catalog = RestCatalog("bench", uri=uri)
schema = catalog.load_table((namespace, model)).schema()
table = catalog.create_table((namespace, new), schema=schema)
key = [schema.find_field(i).name for i in schema.identifier_field_ids]
arrow = schema.as_arrow()
start = time.perf_counter()
changes = pj.read_json(path)
deleted = pc.equal(changes["op"], "d")
# Each change's key (a delete's from its old row), then the last change of each key.
def key_of(row, k, like=None):
    if pa.types.is_struct(row.type):
        return pc.struct_field(row, k)
    return pa.nulls(len(row), like.type if like is not None else pa.int64())  # (no such rows)
keyed = {}
for k in key:
    after_key = key_of(changes["after"], k)
    keyed[k] = pc.if_else(deleted, key_of(changes["before"], k, after_key), after_key)
keyed = pa.table(keyed)
keyed = keyed.append_column("at", pa.array(range(changes.num_rows), pa.int64()))
last = keyed.group_by(key).aggregate([("at", "max")])["at_max"]
last = pc.filter(last, pc.invert(pc.take(deleted, last)))
after = pc.take(changes["after"], last)
columns = [pc.cast(pc.struct_field(after, name), arrow.field(name).type) for name in arrow.names]
table.append(pa.Table.from_arrays(columns, schema=arrow))
print(time.perf_counter() - start)
"""


def iceberg_total(namespace, table):
    """The record count of the table's current snapshot (0 while it has none)."""
    try:
        with urllib.request.urlopen(f"{ICEBERG}/v1/namespaces/{namespace}/tables/{table}", timeout=10) as r:
            meta = json.load(r)["metadata"]
    except OSError:
        return 0
    current = meta.get("current-snapshot-id")
    for snapshot in meta.get("snapshots", []):
        if snapshot["snapshot-id"] == current:
            return int(snapshot["summary"].get("total-records", 0))
    return 0


def case_iceberg_sink(b, encoding="json"):
    subprocess.run(["dev/services", "up", "iceberg"], check=True, capture_output=True)
    stamp = time.strftime("%H%M%S")
    namespace = f"bench{stamp}"
    runs, refs, rss_ours, rss_ref, same_job = [], [], [], [], []
    with tempfile.TemporaryDirectory() as workdir:
        search_cases.filled_log(b, workdir, f"bench_ice_{stamp}", encoding)
        events = os.path.join(workdir, "events.jsonl")
        if encoding == "json":
            with open(events, "wb") as out:
                subprocess.run([b.SLUICE, "log", "tail", "--dir", f"{workdir}/log", "--format", "raw",
                                "bench.public.t"], check=True, stdout=out)
        for i in range(b.REPEAT):
            sink = (f'[[sinks]]\nname = "ice{stamp}{i}"\nkind = "iceberg"\ncatalog_url = "{ICEBERG}"\n'
                    f'namespace = "{namespace}"\ntopics = ["bench.public.t"]\ntable = "t{i}"\n'
                    f'commit_interval_ms = 1000\n')
            runs.append(search_cases.run_sink(b, workdir, sink, "Iceberg sink open",
                                              lambda: iceberg_total(namespace, f"t{i}") >= b.ROWS,
                                              "iceberg_sink"))
            rss_ours.append(search_cases.LAST_PEAK_RSS_MB)
            proc = subprocess.Popen([b.KAFKA_PY, "-c", PYICEBERG_APPEND, ICEBERG, namespace, f"t{i}", f"ref{i}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"iceberg_sink: pyiceberg failed: {proc.stderr.read().decode()[-2000:]}")
            refs.append(float(proc.stdout.read().decode().split()[-1]))
            rss_ref.append(usage.ru_maxrss / 1024)
            if iceberg_total(namespace, f"ref{i}") != b.ROWS:
                raise SystemExit(f"iceberg_sink: pyiceberg appended {iceberg_total(namespace, f'ref{i}')} "
                                 f"of {b.ROWS}")
            if encoding == "json":
                done = subprocess.run([b.KAFKA_PY, "-c", PYICEBERG_SAME_JOB, ICEBERG, namespace, f"t{i}",
                                       f"job{i}", events], capture_output=True, text=True)
                if done.returncode != 0 or iceberg_total(namespace, f"job{i}") != b.ROWS:
                    raise SystemExit(f"iceberg_sink: pyiceberg's same job failed: {done.stderr[-2000:]}")
                same_job.append(float(done.stdout.split()[-1]))
    b.LAST_RUNS["ours"] = runs
    b.LAST_RUNS["reference"] = refs
    notes = (f"rows={b.ROWS} log={encoding} ours_rows_per_s={b.ROWS / min(runs):.0f} "
             f"pyiceberg_rows_per_s={b.ROWS / min(refs):.0f} peak_rss_mb sluice={max(rss_ours):.0f} "
             f"pyiceberg={max(rss_ref):.0f} (goal: ratio >= 2; pyiceberg's time is its append alone, "
             f"its rows already in Arrow)")
    if same_job:
        notes += (f"; pyiceberg doing the same job (the same change events decoded, the last row per key, "
                  f"appended): {b.ROWS / min(same_job):.0f} rows/s, sluice {min(same_job) / min(runs):.2f}x its speed")
    return min(runs), min(refs), notes


def case_iceberg_freshness(b):
    """Commit at the source → counted in the Iceberg table's current snapshot, at 1,000
    changes/s (batches of 100 rows and one marker row every 100 ms), with commit_interval_ms
    = 1000; the lag of each marker is from its insert to the first poll (every 50 ms, the
    catalog's table metadata) whose snapshot counts it."""
    import threading
    subprocess.run(["dev/services", "up", "iceberg"], check=True, capture_output=True)
    b.reset_db()
    b.psql("CREATE TABLE load (id bigint PRIMARY KEY, payload text); "
           "CREATE TABLE markers (seq bigint PRIMARY KEY, sent_us bigint NOT NULL)")
    stamp = time.strftime("%H%M%S")
    namespace = f"fresh{stamp}"
    seconds = 3 if b.TINY else 20
    sent, seen = {}, {}
    with tempfile.TemporaryDirectory() as workdir:
        config = os.path.join(workdir, "fresh.toml")
        with open(config, "w") as f:
            f.write(f'[log]\ndir = "{workdir}/log"\n\n[[sources]]\nname = "bench"\nkind = "postgres"\n'
                    f'url = "postgres://postgres@127.0.0.1:5432/{b.DB}?sslmode={b.SSLMODE}"\n'
                    f'tables = ["public.load", "public.markers"]\nslot = "bench_ice_fresh"\n\n'
                    f'[[sinks]]\nname = "fresh{stamp}"\nkind = "iceberg"\ncatalog_url = "{ICEBERG}"\n'
                    f'namespace = "{namespace}"\ntopics = ["bench.public.*"]\ncommit_interval_ms = 1000\n')
        err = open(os.path.join(workdir, "sluice.err"), "w+")
        proc = subprocess.Popen([b.SLUICE, "run", "-c", config], stdout=subprocess.DEVNULL, stderr=err)
        writer = subprocess.Popen(["psql", "-h", "127.0.0.1", "-U", "postgres", "-X", "-q", "-d", b.DB],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        done = threading.Event()

        def poll():
            while not done.is_set():
                total = iceberg_total(namespace, "markers")
                now = time.time()
                for seq in range(1, total + 1):
                    seen.setdefault(seq, now)
                time.sleep(0.05)

        try:
            time.sleep(3)  # the slot and the first (empty) snapshot
            poller = threading.Thread(target=poll)
            poller.start()
            start = time.time()
            seq = 0
            while time.time() - start < seconds:
                seq += 1
                sent[seq] = time.time()
                first = seq * 100
                writer.stdin.write(
                    f"BEGIN; INSERT INTO load SELECT g, md5(g::text) FROM generate_series({first}, {first + 99}) g; "
                    f"INSERT INTO markers VALUES ({seq}, {int(sent[seq] * 1e6)}); COMMIT;\n")
                writer.stdin.flush()
                time.sleep(max(0.0, start + seq * 0.1 - time.time()))
            deadline = time.time() + 30
            while len(seen) < seq and time.time() < deadline:
                time.sleep(0.1)
        finally:
            done.set()
            writer.stdin.close()
            writer.wait()
            proc.terminate()
            proc.wait()
        if len(seen) < len(sent):
            err.seek(0)
            raise SystemExit(f"iceberg_freshness: {len(seen)} of {len(sent)} markers reached Iceberg:\n"
                             f"{err.read()[-3000:]}")
    b.psql("SELECT pg_drop_replication_slot('bench_ice_fresh')")
    lags = sorted(seen[s] - sent[s] for s in sent)
    p50, p99 = lags[len(lags) // 2], lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    notes = (f"p50_ms={p50 * 1000:.0f} p99_ms={p99 * 1000:.0f} markers={len(lags)} changes_per_s=1000 "
             f"commit_interval_ms=1000 (reference = 2 s p99 goal; lag is bounded below by the interval)")
    return p99, 2.0, notes
