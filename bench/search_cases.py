"""The search sink cases of dev/bench (bench/run.py runs them; `b` is run.py's module, for its
helpers and settings).

  opensearch_sink    the 1,000,000-row snapshot in the log indexed into OpenSearch by the sink
                     alone (from its "connected" log line until every document is searchable)
                     vs curl posting the same documents as pre-built _bulk bodies of the same
                     size (5 MiB or 5,000 documents), two at a time like the sink, into an index
                     with the same mapping, relaxed the same way (refresh off, no replicas) and
                     refreshed at the end.
  typesense_sink     the same into Typesense vs curl posting the same documents as pre-built
                     JSONL (2,000 per request, two at a time) to /documents/import.
  search_freshness   source commit → searchable in OpenSearch (the index's 1 s refresh included)
                     at 1,000 changes/s, p50 and p99. Reference = a 2 s p99 goal.
"""

import json
import os
import subprocess
import tempfile
import time

OPENSEARCH = "http://127.0.0.1:9200"
TYPESENSE = "http://127.0.0.1:8108"
TYPESENSE_KEY_FILE = "target/typesense/api-key"


def curl(method, url, body=None, headers=(), data_file=None):
    cmd = ["curl", "-sS", "-m", "1800", "-X", method, url]
    for header in headers:
        cmd += ["-H", header]
    if body is not None:
        cmd += ["-H", "content-type: application/json", "--data-binary", json.dumps(body)]
    if data_file is not None:
        cmd += ["--data-binary", "@" + data_file]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def ts_headers():
    with open(TYPESENSE_KEY_FILE) as f:
        return [f"X-TYPESENSE-API-KEY: {f.read().strip()}"]


def filled_log(b, workdir, slot, encoding="json"):
    """The ROWS-row snapshot of table t in a log under workdir (as kafka_sink fills it), its
    records in `encoding`."""
    b.reset_db()
    b.fill(max(1, b.TXNS // 10), b.ROWS // max(1, b.TXNS // 10))
    b.psql("VACUUM ANALYZE t")
    end = b.psql("SELECT pg_current_wal_lsn()")
    config = b.sluice_config(workdir, slot, "initial", encoding=encoding)
    b.run_timed([b.SLUICE, "run", "-c", config, "--stop-at", b.lsn_position(end)])
    records = b.count_records(workdir, "bench.public.t")
    if records < b.ROWS:
        raise SystemExit(f"{slot}: only {records} of {b.ROWS} rows reached the log")


def run_sink(b, workdir, sink_toml, ready_text, done, name):
    """Runs a sluice with only `sink_toml` over the filled log until done() holds; returns the
    seconds from the sink's `ready_text` log line to then (sluice's start and the log's opening
    left out, as for kafka_sink)."""
    config = os.path.join(workdir, f"{name}.toml")
    with open(config, "w") as f:
        f.write(f'[log]\ndir = "{workdir}/log"\n\n{sink_toml}')
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([b.SLUICE, "run", "-c", config], stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + 3600
        try:
            while not done():
                if proc.poll() is not None or time.time() > deadline:
                    err.seek(0)
                    raise SystemExit(f"{name}: the sink stopped or never finished:\n{err.read().decode()[-3000:]}")
                time.sleep(0.05)
            end = time.time()
        finally:
            global LAST_PEAK_RSS_MB
            LAST_PEAK_RSS_MB = peak_rss_mb(proc.pid)
            proc.terminate()
            proc.wait()
        err.seek(0)
        lines = err.read().decode().splitlines()
    ready = [line for line in lines if ready_text in line]
    if not ready:
        raise SystemExit(f"{name}: the sink never said {ready_text!r}:\n" + "\n".join(lines[-30:]))
    return end - b.log_time(ready[0])


# The peak RSS (MB) of the last sluice run_sink ran.
LAST_PEAK_RSS_MB = 0.0


def peak_rss_mb(pid):
    """A running process's peak RSS so far (VmHWM), in MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def post_all(files, url, headers, content_type):
    """Posts every file to url, two requests at a time (as the sinks' default max_in_flight)."""
    args = ["xargs", "-P", "2", "-I{}", "curl", "-sS", "-o", "/dev/null", "-m", "600", "-X", "POST",
            "-H", f"content-type: {content_type}"]
    for header in headers:
        args += ["-H", header]
    args += ["--data-binary", "@{}", url]
    subprocess.run(args, input="\n".join(files), check=True, text=True, capture_output=True)


def os_count(index):
    try:
        return json.loads(curl("GET", f"{OPENSEARCH}/{index}/_count")).get("count", 0)
    except (subprocess.CalledProcessError, json.JSONDecodeError):
        return 0


def dump_bulk_bodies(index, outdir, max_bytes=5 << 20, max_docs=5000):
    """Every document of `index` as _bulk bodies (index actions with the document's version,
    external, as the sink sends them) of at most max_bytes or max_docs, one file each."""
    os.makedirs(outdir, exist_ok=True)
    files, body, docs = [], [], 0
    size = 0

    def flush():
        nonlocal body, docs, size
        if body:
            path = os.path.join(outdir, f"{len(files):05}.ndjson")
            with open(path, "w") as f:
                f.write("".join(body))
            files.append(path)
        body, docs, size = [], 0, 0

    page = json.loads(curl("POST", f"{OPENSEARCH}/{index}/_search?scroll=5m&version=true",
                           {"size": 10000, "sort": ["_doc"]}))
    while page["hits"]["hits"]:
        for hit in page["hits"]["hits"]:
            action = json.dumps({"index": {"_id": hit["_id"], "version": hit["_version"], "version_type": "external"}})
            line = action + "\n" + json.dumps(hit["_source"], separators=(",", ":")) + "\n"
            body.append(line)
            docs += 1
            size += len(line)
            if size >= max_bytes or docs >= max_docs:
                flush()
        page = json.loads(curl("POST", f"{OPENSEARCH}/_search/scroll", {"scroll": "5m", "scroll_id": page["_scroll_id"]}))
    flush()
    return files


def case_opensearch_sink(b):
    subprocess.run(["dev/services", "up", "opensearch"], check=True, capture_output=True)
    stamp = time.strftime("%H%M%S")
    prefix = f"bench_os{stamp}"
    with tempfile.TemporaryDirectory() as workdir:
        filled_log(b, workdir, f"bench_os_{stamp}")
        refs, runs = [], []
        files, bulk_mb = None, 0
        try:
            for i in range(b.REPEAT):
                index = f"{prefix}_{i}_t"
                sink = (f'[[sinks]]\nname = "os{stamp}{i}"\nkind = "opensearch"\nurl = "{OPENSEARCH}"\n'
                        f'topics = ["bench.public.t"]\nindex = "{prefix}_{i}_{{table}}"\n'
                        f'offsets_index = "{prefix}_offsets"\nnumber_of_replicas = 0\n')
                runs.append(run_sink(b, workdir, sink, "OpenSearch sink connected",
                                     lambda: os_count(index) >= b.ROWS, "opensearch_sink"))
                if files is None:
                    files = dump_bulk_bodies(index, os.path.join(workdir, "bulk"))
                    bulk_mb = sum(os.path.getsize(f) for f in files) / 1e6
                    mapping = json.loads(curl("GET", f"{OPENSEARCH}/{index}/_mapping"))[index]["mappings"]
                ref = f"{prefix}_ref{i}"
                curl("PUT", f"{OPENSEARCH}/{ref}", {"mappings": mapping, "settings": {"index": {
                    "number_of_replicas": 0, "refresh_interval": "-1"}}})
                start = time.time()
                post_all(files, f"{OPENSEARCH}/{ref}/_bulk", [], "application/x-ndjson")
                curl("PUT", f"{OPENSEARCH}/{ref}/_settings", {"index": {"refresh_interval": None}})
                curl("POST", f"{OPENSEARCH}/{ref}/_refresh")
                refs.append(time.time() - start)
                if os_count(ref) != b.ROWS:
                    raise SystemExit(f"opensearch_sink: the reference indexed {os_count(ref)} of {b.ROWS}")
                # Each run's indexes go before the next, so the node's disk and heap stay the same.
                curl("DELETE", f"{OPENSEARCH}/{ref}")
                if i + 1 < b.REPEAT:
                    curl("DELETE", f"{OPENSEARCH}/{index}")
        finally:
            subprocess.run(["curl", "-sS", "-X", "DELETE", f"{OPENSEARCH}/{prefix}*"], capture_output=True)
    b.LAST_RUNS["ours"] = runs
    b.LAST_RUNS["reference"] = refs
    notes = (f"documents={b.ROWS} bulk_requests={len(files or [])} bulk_mb~{bulk_mb:.0f} "
             f"ours_docs_per_s={b.ROWS / min(runs):.0f} curl_docs_per_s={b.ROWS / min(refs):.0f} (goal: ratio >= 0.8)")
    return min(runs), min(refs), notes


def ts_documents(collection):
    try:
        return json.loads(curl("GET", f"{TYPESENSE}/collections/{collection}", headers=ts_headers())).get("num_documents", 0)
    except (subprocess.CalledProcessError, json.JSONDecodeError):
        return 0


def case_typesense_sink(b):
    subprocess.run(["dev/services", "up", "typesense"], check=True, capture_output=True)
    stamp = time.strftime("%H%M%S")
    prefix = f"bench_ts{stamp}"
    headers = ts_headers()
    with open(TYPESENSE_KEY_FILE) as f:
        key = f.read().strip()
    with tempfile.TemporaryDirectory() as workdir:
        filled_log(b, workdir, f"bench_ts_{stamp}")
        refs, runs, files, fields = [], [], None, None
        made = []
        try:
            for i in range(b.REPEAT):
                collection = f"{prefix}_{i}_t"
                made.append(collection)
                sink = (f'[[sinks]]\nname = "ts{stamp}{i}"\nkind = "typesense"\nurl = "{TYPESENSE}"\n'
                        f'api_key = "{key}"\ntopics = ["bench.public.t"]\ncollection = "{prefix}_{i}_{{table}}"\n'
                        f'offsets_collection = "{prefix}_offsets"\n')
                runs.append(run_sink(b, workdir, sink, "Typesense sink connected",
                                     lambda: ts_documents(collection) >= b.ROWS, "typesense_sink"))
                if files is None:
                    exported = subprocess.run(["curl", "-sS", "-m", "1800", "-H", headers[0],
                                               f"{TYPESENSE}/collections/{collection}/documents/export"],
                                              check=True, capture_output=True, text=True).stdout.splitlines()
                    os.makedirs(os.path.join(workdir, "import"))
                    files = []
                    for n in range(0, len(exported), 2000):
                        path = os.path.join(workdir, "import", f"{n // 2000:05}.jsonl")
                        with open(path, "w") as f:
                            f.write("\n".join(exported[n:n + 2000]) + "\n")
                        files.append(path)
                    fields = [{k: v for k, v in field.items() if k in ("name", "type", "optional", "index")}
                              for field in json.loads(curl("GET", f"{TYPESENSE}/collections/{collection}",
                                                           headers=headers))["fields"]]
                ref = f"{prefix}_ref{i}"
                made.append(ref)
                curl("POST", f"{TYPESENSE}/collections", {"name": ref, "fields": fields}, headers=headers)
                start = time.time()
                post_all(files, f"{TYPESENSE}/collections/{ref}/documents/import?action=upsert", headers, "text/plain")
                refs.append(time.time() - start)
                if ts_documents(ref) != b.ROWS:
                    raise SystemExit(f"typesense_sink: the reference imported {ts_documents(ref)} of {b.ROWS}")
        finally:
            for name in made + [f"{prefix}_offsets"]:
                subprocess.run(["curl", "-sS", "-X", "DELETE", "-H", headers[0], f"{TYPESENSE}/collections/{name}"],
                               capture_output=True)
    b.LAST_RUNS["ours"] = runs
    b.LAST_RUNS["reference"] = refs
    notes = (f"documents={b.ROWS} import_requests={len(files or [])} ours_docs_per_s={b.ROWS / min(runs):.0f} "
             f"curl_docs_per_s={b.ROWS / min(refs):.0f} (goal: ratio >= 0.8)")
    return min(runs), min(refs), notes


def case_search_freshness(b):
    """Commit → searchable in OpenSearch at 1,000 changes/s, with latency-bench's markers."""
    subprocess.run(["dev/services", "up", "opensearch"], check=True, capture_output=True)
    b.reset_db()
    b.psql("CREATE TABLE load (id bigint PRIMARY KEY, payload text); "
           "CREATE TABLE markers (seq bigint PRIMARY KEY, sent_us bigint NOT NULL)")
    stamp = time.strftime("%H%M%S")
    prefix = f"bench_fresh{stamp}"
    seconds = 3 if b.TINY else 20
    with tempfile.TemporaryDirectory() as workdir:
        config = os.path.join(workdir, "fresh.toml")
        with open(config, "w") as f:
            f.write(f'[log]\ndir = "{workdir}/log"\n\n[[sources]]\nname = "bench"\nkind = "postgres"\n'
                    f'url = "postgres://postgres@127.0.0.1:5432/{b.DB}?sslmode={b.SSLMODE}"\n'
                    f'tables = ["public.load", "public.markers"]\nslot = "bench_fresh"\n\n'
                    f'[[sinks]]\nname = "fresh{stamp}"\nkind = "opensearch"\nurl = "{OPENSEARCH}"\n'
                    f'topics = ["bench.public.*"]\nindex = "{prefix}_{{table}}"\noffsets_index = "{prefix}_offsets"\n'
                    f'number_of_replicas = 0\n')
        err = open(os.path.join(workdir, "sluice.err"), "w+")
        proc = subprocess.Popen([b.SLUICE, "run", "-c", config], stdout=subprocess.DEVNULL, stderr=err)
        try:
            bench = subprocess.run([b.LATENCY_BENCH, "--source", f"postgres://postgres@127.0.0.1:5432/{b.DB}?sslmode={b.SSLMODE}",
                                    "--target", OPENSEARCH, "--index", f"{prefix}_markers",
                                    "--rate", "1000", "--seconds", str(seconds)],
                                   capture_output=True, text=True)
        finally:
            proc.terminate()
            proc.wait()
            subprocess.run(["curl", "-sS", "-X", "DELETE", f"{OPENSEARCH}/{prefix}*"], capture_output=True)
        if bench.returncode != 0:
            err.seek(0)
            raise SystemExit(f"search_freshness: {bench.stderr[:1500]}\n{err.read()[-3000:]}")
        out = bench.stdout
    b.psql("SELECT pg_drop_replication_slot('bench_fresh')")
    result = json.loads(out)
    notes = (f"p50_ms={result['p50_ms']:.0f} p99_ms={result['p99_ms']:.0f} markers={result['markers']} "
             f"achieved_tps={result['achieved_tps']:.0f} refresh_interval=1s (reference = 2 s p99 goal)")
    return result["p99_ms"] / 1000, 2.0, notes
