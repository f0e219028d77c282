"""Reads an Iceberg table the way a user would, without sluice: `pyiceberg` (a REST catalog
scan into Arrow) or `duckdb` (its iceberg extension attached to the same catalog). Prints one
JSON array per row of the columns asked for; `md5:col` prints the MD5 of a text column.

usage: iceberg_read.py pyiceberg|duckdb CATALOG_URL NAMESPACE TABLE col,col,...
"""
import decimal
import glob
import hashlib
import json
import os
import sys

reader, uri, namespace, table, spec = sys.argv[1:6]
columns = spec.split(",")
names = [c.split(":", 1)[-1] for c in columns]


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


def cells(values):
    out = []
    for column, value in zip(columns, values):
        if column.startswith("md5:") and value is not None:
            value = hashlib.md5(value.encode()).hexdigest()
        out.append(norm(value))
    return out


if reader == "pyiceberg":
    from pyiceberg.catalog.rest import RestCatalog

    scan = RestCatalog("sluice", uri=uri).load_table((namespace, table)).scan(
        selected_fields=tuple(dict.fromkeys(names))
    )
    for row in scan.to_arrow().to_pylist():
        print(json.dumps(cells([row[n] for n in names])))
else:
    import duckdb

    con = duckdb.connect()
    site = os.path.join(os.path.dirname(duckdb.__file__), "..")
    for ext in ["avro", "httpfs", "iceberg"]:
        path = glob.glob(f"{site}/duckdb_extension_{ext}/extensions/*/{ext}.duckdb_extension")[0]
        con.execute(f"INSTALL '{path}'")
        con.execute(f"LOAD {ext}")
    con.execute(
        f"ATTACH '' AS ice (TYPE iceberg, ENDPOINT '{uri}', AUTHORIZATION_TYPE 'none')"
    )
    selected = ", ".join(f'"{n}"' for n in names)
    for row in con.execute(f'SELECT {selected} FROM ice."{namespace}"."{table}"').fetchall():
        print(json.dumps(cells(row)))
