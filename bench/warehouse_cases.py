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
    runs, refs, rss_ours, rss_ref = [], [], [], []
    with tempfile.TemporaryDirectory() as workdir:
        search_cases.filled_log(b, workdir, f"bench_ice_{stamp}", encoding)
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
    b.LAST_RUNS["ours"] = runs
    b.LAST_RUNS["reference"] = refs
    notes = (f"rows={b.ROWS} log={encoding} ours_rows_per_s={b.ROWS / min(runs):.0f} "
             f"pyiceberg_rows_per_s={b.ROWS / min(refs):.0f} peak_rss_mb sluice={max(rss_ours):.0f} "
             f"pyiceberg={max(rss_ref):.0f} (goal: ratio >= 2; pyiceberg's time is its append alone, "
             f"its rows already in Arrow)")
    return min(runs), min(refs), notes
