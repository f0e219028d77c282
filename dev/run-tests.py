#!/usr/bin/env python3
"""dev/run-tests.py [JOBS]: builds every test binary of the workspace, then runs them JOBS at a
time (default 2), longest first, each with its tests 4 at a time, and the doc tests after.

`cargo test` runs one test binary after another; most of sluice's tests wait on servers (a
snapshot, a restart, a broker) rather than compute, so two binaries side by side take about
half the time on the 2-core machines CI runs on. Each binary's output is printed whole when it
ends; the last line counts the whole suite. Exit status 1 if any test failed."""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

# The slowest binaries first, so the two lanes end together (seconds on an idle 2-core box).
SLOW_FIRST = ["pg_sink", "clickhouse_sink", "kafka_sink", "kafka_source", "pg_production", "cli",
              "search_sinks", "mysql_source", "model", "pg_snapshot", "pg_standby", "mysql_incremental",
              "sink_compliance", "postgres_source", "kafka_debezium", "pg_incremental", "mysql_sink",
              "pg_streamed_transactions"]


def test_binaries():
    """(name, executable, package dir) of every test target, built now."""
    build = subprocess.Popen(
        ["cargo", "test", "--workspace", "--locked", "--no-run", "--message-format=json-render-diagnostics"],
        stdout=subprocess.PIPE, text=True)
    binaries = []
    for line in build.stdout:
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable") and message["profile"]["test"]:
            binaries.append((message["target"]["name"], message["executable"],
                             os.path.dirname(message["manifest_path"])))
    if build.wait() != 0:
        sys.exit("the tests do not build")
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    binaries.sort(key=lambda b: rank.get(b[0], len(SLOW_FIRST)))
    return binaries


def run(binary):
    name, executable, cwd = binary
    start = time.time()
    with tempfile.TemporaryFile(mode="w+") as out:
        code = subprocess.run([executable, "--test-threads=4"], cwd=cwd, stdout=out,
                              stderr=subprocess.STDOUT).returncode
        out.seek(0)
        text = out.read()
    return name, executable, code, text, time.time() - start


def main():
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    binaries = test_binaries()
    passed = failed = 0
    failing = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for name, executable, code, text, seconds in pool.map(run, binaries):
            print(f"\n     Running {name} ({os.path.relpath(executable)}), {seconds:.0f} s", flush=True)
            print(text, end="", flush=True)
            counts = re.findall(r"test result: \w+\. (\d+) passed; (\d+) failed", text)
            passed += sum(int(p) for p, _ in counts)
            failed += sum(int(f) for _, f in counts)
            if code != 0:
                failing.append(name)
    doc = subprocess.run(["cargo", "test", "--workspace", "--locked", "--doc"], capture_output=True, text=True)
    print(doc.stdout[-3000:], doc.stderr[-3000:] if doc.returncode else "", flush=True)
    for p, f in re.findall(r"test result: \w+\. (\d+) passed; (\d+) failed", doc.stdout):
        passed, failed = passed + int(p), failed + int(f)
    if doc.returncode != 0:
        failing.append("doc tests")
    print(f"\ntests: {passed} passed, {failed} failed" + (f" (in {', '.join(failing)})" if failing else ""))
    sys.exit(1 if failing or failed else 0)


if __name__ == "__main__":
    main()
