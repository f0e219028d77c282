"""Reads what the lakehouse sinks wrote the way a user would, without sluice:

  iceberg_read.py pyiceberg|duckdb CATALOG_URL NAMESPACE TABLE col,col,...
      an Iceberg table through its REST catalog: pyiceberg's scan into Arrow, or DuckDB's
      iceberg extension attached to the catalog; one JSON array per row of the columns asked
      for (`md5:col` prints the MD5 of a text column).
  iceberg_read.py sql QUERY
      a DuckDB query (Parquet files); one JSON array per row.
  iceberg_read.py pyarrow PATH
      the number of rows pyarrow reads from a directory of Parquet files.

With S3_ENDPOINT (and S3_KEY, S3_SECRET) set, files on s3:// are read from that store.
"""
import decimal
import glob
import hashlib
import json
import os
import sys

S3 = os.environ.get("S3_ENDPOINT")


def norm(value):
    if value is None:
        return None
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [norm(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def duckdb_connection():
    import duckdb

    con = duckdb.connect()
    site = os.path.join(os.path.dirname(duckdb.__file__), "..")
    for ext in ["avro", "httpfs", "iceberg"]:
        path = glob.glob(f"{site}/duckdb_extension_{ext}/extensions/*/{ext}.duckdb_extension")[0]
        con.execute(f"INSTALL '{path}'")
        con.execute(f"LOAD {ext}")
    if S3:
        host = S3.split("://", 1)[1]
        con.execute(
            f"CREATE SECRET (TYPE S3, KEY_ID '{os.environ['S3_KEY']}', "
            f"SECRET '{os.environ['S3_SECRET']}', ENDPOINT '{host}', URL_STYLE 'path', "
            f"USE_SSL false, REGION 'us-east-1')"
        )
    return con


reader = sys.argv[1]
if reader == "sql":
    for row in duckdb_connection().execute(sys.argv[2]).fetchall():
        print(json.dumps(row, default=str))
    sys.exit(0)
if reader == "pyarrow":
    import pyarrow.parquet as pq

    path, filesystem = sys.argv[2], None
    if S3 and path.startswith("s3://"):
        from pyarrow import fs

        filesystem = fs.S3FileSystem(
            access_key=os.environ["S3_KEY"], secret_key=os.environ["S3_SECRET"],
            endpoint_override=S3, region="us-east-1",
        )
        path = path[len("s3://"):]
    print(pq.read_table(path, filesystem=filesystem).num_rows)
    sys.exit(0)

uri, namespace, table, spec = sys.argv[2:6]
columns = spec.split(",")
names = [c.split(":", 1)[-1] for c in columns]


def cells(values):
    out = []
    for column, value in zip(columns, values):
        if column.startswith("md5:") and value is not None:
            value = hashlib.md5(value.encode()).hexdigest()
        out.append(norm(value))
    return out


if reader == "pyiceberg":
    from pyiceberg.catalog.rest import RestCatalog

    properties = {}
    if S3:
        properties = {
            "s3.endpoint": S3, "s3.access-key-id": os.environ["S3_KEY"],
            "s3.secret-access-key": os.environ["S3_SECRET"], "s3.region": "us-east-1",
        }
    scan = RestCatalog("sluice", uri=uri, **properties).load_table((namespace, table)).scan(
        selected_fields=tuple(dict.fromkeys(names))
    )
    for row in scan.to_arrow().to_pylist():
        print(json.dumps(cells([row[n] for n in names])))
else:
    con = duckdb_connection()
    con.execute(
        f"ATTACH '' AS ice (TYPE iceberg, ENDPOINT '{uri}', AUTHORIZATION_TYPE 'none')"
    )
    selected = ", ".join(f'"{n}"' for n in names)
    for row in con.execute(f'SELECT {selected} FROM ice."{namespace}"."{table}"').fetchall():
        print(json.dumps(cells(row)))
