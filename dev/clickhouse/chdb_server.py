#!/usr/bin/env python3
"""A current ClickHouse (chdb, in-process) behind the part of ClickHouse's HTTP interface that
sluice's ClickHouse sink uses, so the sink is tested against today's ClickHouse as well as
Debian's 18.16. Usage: chdb_server.py PORT DATA_DIR. Loopback only.

Statements come as the POST body or the `query` parameter; an `INSERT ... FORMAT RowBinary`
with its rows as the body is run as an INSERT ... SELECT from the rows written to a file (chdb
takes no input stream). Errors answer 500 with ClickHouse's own message."""
import os
import re
import sys
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from chdb import session

INSERT = re.compile(r"^\s*INSERT INTO\s+(\S+)\s*\((.*)\)\s*FORMAT\s+RowBinary\s*$", re.S | re.I)
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("query")
        if not query:
            return self.answer(200, b"Ok.\n")
        self.run(query[0], b"")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("query")
        if query:
            self.run(query[0], body)
        else:
            self.run(body.decode(), b"")

    def run(self, sql, data):
        try:
            with lock:
                out = self.execute(sql, data)
            self.answer(200, out)
        except Exception as err:  # chdb raises its server's exception text
            self.answer(500, str(err).encode())

    def execute(self, sql, data):
        insert = INSERT.match(sql)
        if insert and data:
            table, columns = insert.group(1), insert.group(2)
            names = [c.strip().strip("`") for c in columns.split(",")]
            described = SESSION.query(f"DESCRIBE TABLE {table}", "TabSeparated").bytes().decode()
            types = dict(line.split("\t")[:2] for line in described.splitlines())
            structure = ", ".join(f"`{n}` {types[n]}" for n in names)
            with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
                f.write(data)
            try:
                SESSION.query(
                    f"INSERT INTO {table} ({columns}) SELECT * FROM "
                    f"file('{f.name}', 'RowBinary', '{structure}')"
                )
            finally:
                os.unlink(f.name)
            return b""
        return SESSION.query(sql, "TabSeparated").bytes()


if __name__ == "__main__":
    port, data_dir = int(sys.argv[1]), sys.argv[2]
    SESSION = session.Session(data_dir)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
