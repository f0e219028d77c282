"""Confluent's own Python client against sluice's schema registry and sluice's Avro records.

Run by integration-tests/tests/registry.rs with the venv dev/services creates:

    confluent_client.py REGISTRY_URL [RECORDS_FILE EXPECTED_FILE TOPIC]

With only the URL it exercises the registry API through SchemaRegistryClient. With the files it
also decodes every record of RECORDS_FILE (`sluice log tail --format base64` lines) with
AvroDeserializer and checks the after-images equal EXPECTED_FILE's rows. Exits non-zero with a
message on the first difference.
"""

import base64
import datetime
import decimal
import json
import sys
import uuid

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def record(fields):
    return json.dumps({"type": "record", "name": "Py", "namespace": "client.test", "fields": fields})


def exercise_api(client):
    subject = "python-client-value"
    v1 = Schema(record([{"name": "a", "type": "int"}]), "AVRO")
    v2 = Schema(record([{"name": "a", "type": "int"},
                        {"name": "b", "type": ["null", "string"], "default": None}]), "AVRO")
    bad = Schema(record([{"name": "a", "type": "int"}, {"name": "c", "type": "string"}]), "AVRO")

    id1 = client.register_schema(subject, v1)
    check(isinstance(id1, int) and id1 > 0, f"register returned {id1!r}")
    check(client.register_schema(subject, v1) == id1, "re-registering gives the same id")

    found = client.lookup_schema(subject, v1)
    check(found.schema_id == id1 and found.version == 1 and found.subject == subject,
          f"lookup: {found}")

    check(client.test_compatibility(subject, v2) is True, "v2 adds an optional field: compatible")
    check(client.test_compatibility(subject, bad) is False, "a field without default: incompatible")

    id2 = client.register_schema(subject, v2)
    check(id2 != id1, "a new schema gets a new id")
    latest = client.get_latest_version(subject)
    check(latest.version == 2 and latest.schema_id == id2, f"latest: {latest}")
    check(client.get_versions(subject) == [1, 2], "versions")
    check(subject in client.get_subjects(), "subjects")
    fetched = client.get_schema(id2)
    check(json.loads(fetched.schema_str) == json.loads(v2.schema_str), "schema by id")

    try:
        client.register_schema(subject, bad)
        check(False, "registering an incompatible schema must fail")
    except SchemaRegistryError as err:
        check(err.http_status_code == 409, f"incompatible: HTTP {err.http_status_code}")

    try:
        client.get_schema(987654)
        check(False, "an unknown id must fail")
    except SchemaRegistryError as err:
        check(err.error_code == 40403, f"unknown id: {err.error_code}")

    client.set_compatibility(subject_name=subject, level="NONE")
    check(client.get_compatibility(subject_name=subject) == "NONE", "subject level")
    client.register_schema(subject, bad)

    deleted = client.delete_subject(subject)
    check(deleted == [1, 2, 3], f"soft delete: {deleted}")
    check(subject not in client.get_subjects(), "soft-deleted subject is not listed")
    client.delete_subject(subject, permanent=True)
    print("registry API: ok")


def expected_value(kind, text):
    if text is None:
        return None
    return {
        "int": int,
        "text": str,
        "bool": bool,
        "float": float,
        "decimal": decimal.Decimal,
        "date": datetime.date.fromisoformat,
        "timestamptz": lambda t: datetime.datetime.fromisoformat(t),
        "timestamp": lambda t: datetime.datetime.fromisoformat(t),
        "uuid": uuid.UUID,
        "bytes": lambda t: base64.b64decode(t),
    }[kind](text)


def decoded_value(value):
    # fastavro gives uuid logical types as UUID (newer) or str (older).
    return value


def check_records(client, records_path, expected_path, topic):
    with open(expected_path) as f:
        expected = json.load(f)
    kinds = expected["types"]
    rows = {int(row["id"]): row for row in expected["rows"]}
    deserializer = AvroDeserializer(client)
    key_deserializer = AvroDeserializer(client)
    seen = {}
    with open(records_path) as f:
        for line in f:
            line = json.loads(line)
            if line["value"] is None:
                continue
            value = deserializer(base64.b64decode(line["value"]),
                                 SerializationContext(topic, MessageField.VALUE))
            key = key_deserializer(base64.b64decode(line["key"]),
                                   SerializationContext(topic, MessageField.KEY))
            after = value["after"]
            check(after is not None, f"an event without after: {value}")
            check(key == {"id": after["id"]}, f"key {key} for row {after['id']}")
            check(value["source"]["connector"] == "postgresql", "source block")
            seen[after["id"]] = after
    check(set(seen) == set(rows), f"rows decoded {sorted(seen)} != source rows {sorted(rows)}")
    for row_id, row in rows.items():
        got = seen[row_id]
        for column, kind in kinds.items():
            want = expected_value(kind, row[column])
            have = got[column]
            if kind == "uuid" and isinstance(have, str):
                have = uuid.UUID(have)
            if kind == "timestamp" and have is not None and have.tzinfo is not None:
                have = have.replace(tzinfo=None)
            check(have == want, f"row {row_id} column {column}: decoded {have!r}, source {want!r}")
    print(f"records: {len(seen)} rows decoded and equal to the source")


def main():
    client = SchemaRegistryClient({"url": sys.argv[1]})
    exercise_api(client)
    if len(sys.argv) == 5:
        check_records(client, sys.argv[2], sys.argv[3], sys.argv[4])


if __name__ == "__main__":
    main()
