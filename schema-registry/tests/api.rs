//! Confluent's REST API, route by route and error by error, over real HTTP against a registry
//! stored in a real log (reopened to prove ids survive a restart).

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use sluice_log::{Log, LogOptions};
use sluice_schema_registry::registry::store::LogStore;
use sluice_schema_registry::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Server {
    address: SocketAddr,
    cancel: CancellationToken,
    _log: Arc<Log>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn start(dir: &std::path::Path) -> Server {
    let log = Arc::new(Log::open(dir, LogOptions::default()).unwrap());
    let store = LogStore::open(sluice_log::EmbeddedLog::new(Arc::clone(&log), 1)).unwrap();
    let registry = Arc::new(Registry::open(store).unwrap());
    let listener = sluice_schema_registry::http::bind("127.0.0.1:0")
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    sluice_core::task::spawn_in_span(sluice_schema_registry::http::serve(
        listener,
        registry,
        cancel.clone(),
    ));
    Server {
        address,
        cancel,
        _log: log,
    }
}

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    /// Asserts a Confluent error body with `code`.
    fn error(&self, code: u64) -> String {
        let body = self.json();
        assert_eq!(body["error_code"], code, "{}", self.body);
        let status = code.to_string()[..3].parse::<u16>().unwrap();
        assert_eq!(self.status, status, "{}", self.body);
        body["message"].as_str().unwrap().to_owned()
    }
}

async fn call(server: &Server, method: &str, path: &str, body: Option<Value>) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    Reply {
        status,
        content_type,
        body: body.to_owned(),
    }
}

fn schema(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"R","fields":[{fields}]}}"#)
}

fn v1() -> String {
    schema(r#"{"name":"a","type":"int"}"#)
}

fn v2() -> String {
    schema(r#"{"name":"a","type":"int"},{"name":"b","type":["null","string"],"default":null}"#)
}

#[tokio::test]
async fn subjects_versions_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;

    let reply = call(&server, "GET", "/", None).await;
    assert_eq!((reply.status, reply.json()), (200, json!({})));
    assert_eq!(reply.content_type, "application/vnd.schemaregistry.v1+json");
    let types = call(&server, "GET", "/schemas/types", None).await.json();
    assert_eq!(types, json!(["AVRO", "JSON"]));
    assert_eq!(
        call(&server, "GET", "/subjects", None).await.json(),
        json!([])
    );

    let reply = call(
        &server,
        "POST",
        "/subjects/orders-value/versions",
        Some(json!({"schema": v1()})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), json!({"id": 1}));
    // Re-registering returns the same id and no new version.
    let again = call(
        &server,
        "POST",
        "/subjects/orders-value/versions",
        Some(json!({"schema": v1()})),
    )
    .await;
    assert_eq!(again.json(), json!({"id": 1}));
    // The same schema under another subject shares the global id.
    let other = call(
        &server,
        "POST",
        "/subjects/other-value/versions",
        Some(json!({"schema": v1()})),
    )
    .await;
    assert_eq!(other.json(), json!({"id": 1}));
    let second = call(
        &server,
        "POST",
        "/subjects/orders-value/versions",
        Some(json!({"schema": v2(), "schemaType": "AVRO", "references": []})),
    )
    .await;
    assert_eq!(second.json(), json!({"id": 2}));

    assert_eq!(
        call(&server, "GET", "/subjects", None).await.json(),
        json!(["orders-value", "other-value"])
    );
    assert_eq!(
        call(&server, "GET", "/subjects/orders-value/versions", None)
            .await
            .json(),
        json!([1, 2])
    );
    let latest = call(
        &server,
        "GET",
        "/subjects/orders-value/versions/latest",
        None,
    )
    .await
    .json();
    assert_eq!(
        latest,
        json!({"subject": "orders-value", "version": 2, "id": 2, "schema": v2()})
    );
    let minus_one = call(&server, "GET", "/subjects/orders-value/versions/-1", None)
        .await
        .json();
    assert_eq!(minus_one, latest);
    let first = call(&server, "GET", "/subjects/orders-value/versions/1", None)
        .await
        .json();
    assert_eq!(first["schema"], v1());
    let raw = call(
        &server,
        "GET",
        "/subjects/orders-value/versions/1/schema",
        None,
    )
    .await;
    assert_eq!(raw.body, v1());
    let referenced = call(
        &server,
        "GET",
        "/subjects/orders-value/versions/1/referencedby",
        None,
    )
    .await;
    assert_eq!(referenced.json(), json!([]));

    assert_eq!(
        call(&server, "GET", "/schemas/ids/2", None).await.json(),
        json!({"schema": v2()})
    );
    assert_eq!(
        call(&server, "GET", "/schemas/ids/1/schema", None)
            .await
            .body,
        v1()
    );
    assert_eq!(
        call(&server, "GET", "/schemas/ids/1/subjects", None)
            .await
            .json(),
        json!(["orders-value", "other-value"])
    );
    assert_eq!(
        call(&server, "GET", "/schemas/ids/1/versions", None)
            .await
            .json(),
        json!([{"subject": "orders-value", "version": 1}, {"subject": "other-value", "version": 1}])
    );

    // Lookup.
    let found = call(
        &server,
        "POST",
        "/subjects/orders-value",
        Some(json!({"schema": v1()})),
    )
    .await
    .json();
    assert_eq!(
        found,
        json!({"subject": "orders-value", "version": 1, "id": 1, "schema": v1()})
    );
    let msg = call(
        &server,
        "POST",
        "/subjects/orders-value",
        Some(json!({"schema": schema(r#"{"name":"zz","type":"int"}"#)})),
    )
    .await
    .error(40403);
    assert!(msg.contains("orders-value"), "{msg}");
    call(
        &server,
        "POST",
        "/subjects/nobody",
        Some(json!({"schema": v1()})),
    )
    .await
    .error(40401);

    // JSON Schema: schemaType comes back.
    let json_schema = r#"{"type":"object","properties":{"a":{"type":"integer"}}}"#;
    let reply = call(
        &server,
        "POST",
        "/subjects/js/versions",
        Some(json!({"schema": json_schema, "schemaType": "JSON"})),
    )
    .await;
    let id = reply.json()["id"].as_u64().unwrap();
    let fetched = call(&server, "GET", &format!("/schemas/ids/{id}"), None)
        .await
        .json();
    assert_eq!(
        fetched,
        json!({"schema": json_schema, "schemaType": "JSON"})
    );
    let version = call(&server, "GET", "/subjects/js/versions/1", None)
        .await
        .json();
    assert_eq!(version["schemaType"], "JSON");

    // Subjects are URL-decoded.
    let reply = call(
        &server,
        "POST",
        "/subjects/with%20space/versions",
        Some(json!({"schema": v1()})),
    )
    .await;
    assert_eq!(reply.json(), json!({"id": 1}));
    assert!(call(&server, "GET", "/subjects", None)
        .await
        .json()
        .as_array()
        .unwrap()
        .contains(&json!("with space")));

    // Ids and versions survive a restart (the registry replays _schemas).
    drop(server);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let server = start(dir.path()).await;
    assert_eq!(
        call(&server, "GET", "/schemas/ids/2", None).await.json(),
        json!({"schema": v2()})
    );
    assert_eq!(
        call(&server, "GET", "/subjects/orders-value/versions", None)
            .await
            .json(),
        json!([1, 2])
    );
    let next = call(
        &server,
        "POST",
        "/subjects/new-value/versions",
        Some(json!({"schema": schema(r#"{"name":"n","type":"long"}"#)})),
    )
    .await;
    assert_eq!(
        next.json()["id"],
        json!(id + 1),
        "ids keep increasing after a restart"
    );
}

#[tokio::test]
async fn errors_have_confluent_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    call(
        &server,
        "POST",
        "/subjects/s/versions",
        Some(json!({"schema": v1()})),
    )
    .await;

    call(&server, "GET", "/subjects/none/versions", None)
        .await
        .error(40401);
    call(&server, "GET", "/subjects/none/versions/1", None)
        .await
        .error(40401);
    call(&server, "GET", "/subjects/s/versions/7", None)
        .await
        .error(40402);
    call(&server, "GET", "/schemas/ids/99", None)
        .await
        .error(40403);
    call(&server, "GET", "/schemas/ids/abc", None)
        .await
        .error(40403);
    for bad in ["0", "-2", "x", "2147483648"] {
        let msg = call(&server, "GET", &format!("/subjects/s/versions/{bad}"), None)
            .await
            .error(42202);
        assert!(msg.contains(bad), "{msg}");
    }
    let msg = call(
        &server,
        "POST",
        "/subjects/s/versions",
        Some(json!({"schema": "{\"type\":\"nope\"}"})),
    )
    .await
    .error(42201);
    assert!(msg.starts_with("Invalid schema"), "{msg}");
    call(
        &server,
        "POST",
        "/subjects/s/versions",
        Some(json!({"schema": "not json"})),
    )
    .await
    .error(42201);
    call(
        &server,
        "POST",
        "/subjects/s/versions",
        Some(json!({"schema": ""})),
    )
    .await
    .error(42201);
    call(
        &server,
        "POST",
        "/subjects/s/versions",
        Some(json!({"schema": v1(), "schemaType": "PROTOBUF"})),
    )
    .await
    .error(42201);
    call(
        &server,
        "POST",
        "/subjects/s/versions",
        Some(json!({"schema": v1(), "references": [{"name": "x", "subject": "y", "version": 1}]})),
    )
    .await
    .error(42201);
    let reply = call(&server, "POST", "/subjects/s/versions", None).await;
    assert_eq!(reply.status, 400, "{}", reply.body);

    // Incompatible: a new field without a default under BACKWARD.
    let incompatible = schema(r#"{"name":"a","type":"int"},{"name":"c","type":"string"}"#);
    let msg = call(
        &server,
        "POST",
        "/subjects/s/versions",
        Some(json!({"schema": incompatible})),
    )
    .await
    .error(409);
    assert!(msg.contains("field 'c' is only in the reader"), "{msg}");

    call(
        &server,
        "PUT",
        "/config",
        Some(json!({"compatibility": "SIDEWAYS"})),
    )
    .await
    .error(42203);
    call(&server, "PUT", "/mode", Some(json!({"mode": "SOMETIMES"})))
        .await
        .error(42204);
    call(&server, "GET", "/config/s", None).await.error(40408);

    // Read-only subjects refuse changes.
    call(&server, "PUT", "/mode/s", Some(json!({"mode": "READONLY"}))).await;
    let msg = call(
        &server,
        "POST",
        "/subjects/s/versions",
        Some(json!({"schema": v2()})),
    )
    .await
    .error(42205);
    assert!(msg.contains("read-only"), "{msg}");
    call(&server, "DELETE", "/subjects/s", None)
        .await
        .error(42205);
    // An id outside IMPORT mode.
    call(&server, "DELETE", "/mode/s", None).await;
    call(
        &server,
        "POST",
        "/subjects/s/versions",
        Some(json!({"schema": v2(), "id": 50})),
    )
    .await
    .error(42205);

    let reply = call(&server, "GET", "/nothing/here", None).await;
    assert_eq!(reply.error(404), "HTTP 404 Not Found");
    let reply = call(&server, "PATCH", "/subjects", None).await;
    reply.error(405);
}

#[tokio::test]
async fn soft_and_permanent_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    call(
        &server,
        "POST",
        "/subjects/s/versions",
        Some(json!({"schema": v1()})),
    )
    .await;
    call(
        &server,
        "POST",
        "/subjects/s/versions",
        Some(json!({"schema": v2()})),
    )
    .await;

    // Permanent before soft: refused.
    call(
        &server,
        "DELETE",
        "/subjects/s/versions/1?permanent=true",
        None,
    )
    .await
    .error(40407);
    call(&server, "DELETE", "/subjects/s?permanent=true", None)
        .await
        .error(40405);

    assert_eq!(
        call(&server, "DELETE", "/subjects/s/versions/1", None)
            .await
            .json(),
        json!(1)
    );
    call(&server, "DELETE", "/subjects/s/versions/1", None)
        .await
        .error(40406);
    assert_eq!(
        call(&server, "GET", "/subjects/s/versions", None)
            .await
            .json(),
        json!([2])
    );
    assert_eq!(
        call(&server, "GET", "/subjects/s/versions?deleted=true", None)
            .await
            .json(),
        json!([1, 2])
    );
    call(&server, "GET", "/subjects/s/versions/1", None)
        .await
        .error(40402);
    let deleted = call(&server, "GET", "/subjects/s/versions/1?deleted=true", None)
        .await
        .json();
    assert_eq!(deleted["id"], 1);
    // A soft-deleted schema still resolves by id (old records still point at it).
    assert_eq!(
        call(&server, "GET", "/schemas/ids/1", None).await.status,
        200
    );
    // Soft-deleted versions are not checked against: v1-incompatible changes now pass BACKWARD
    // against v2 only.
    assert_eq!(
        call(
            &server,
            "DELETE",
            "/subjects/s/versions/1?permanent=true",
            None
        )
        .await
        .json(),
        json!(1)
    );
    call(&server, "GET", "/schemas/ids/1", None)
        .await
        .error(40403);

    assert_eq!(
        call(&server, "DELETE", "/subjects/s", None).await.json(),
        json!([2])
    );
    call(&server, "DELETE", "/subjects/s", None)
        .await
        .error(40404);
    assert_eq!(
        call(&server, "GET", "/subjects", None).await.json(),
        json!([])
    );
    assert_eq!(
        call(&server, "GET", "/subjects?deleted=true", None)
            .await
            .json(),
        json!(["s"])
    );
    call(&server, "GET", "/subjects/s/versions", None)
        .await
        .error(40401);
    // Registering again after a soft delete continues the version numbers.
    call(
        &server,
        "POST",
        "/subjects/t/versions",
        Some(json!({"schema": v1()})),
    )
    .await;
    let reply = call(
        &server,
        "POST",
        "/subjects/s/versions",
        Some(json!({"schema": v1()})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        call(&server, "GET", "/subjects/s/versions", None)
            .await
            .json(),
        json!([3])
    );
    call(&server, "DELETE", "/subjects/s", None).await;
    assert_eq!(
        call(&server, "DELETE", "/subjects/s?permanent=true", None)
            .await
            .json(),
        json!([2, 3])
    );
    assert_eq!(
        call(&server, "GET", "/subjects?deleted=true", None)
            .await
            .json(),
        json!(["t"])
    );
    call(&server, "GET", "/subjects/s/versions?deleted=true", None)
        .await
        .error(40401);
}

#[tokio::test]
async fn compatibility_config_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    call(
        &server,
        "POST",
        "/subjects/s/versions",
        Some(json!({"schema": v1()})),
    )
    .await;
    let incompatible = schema(r#"{"name":"a","type":"int"},{"name":"c","type":"string"}"#);

    let reply = call(
        &server,
        "POST",
        "/compatibility/subjects/s/versions/latest",
        Some(json!({"schema": v2()})),
    )
    .await;
    assert_eq!(reply.json(), json!({"is_compatible": true}));
    let reply = call(
        &server,
        "POST",
        "/compatibility/subjects/s/versions/1",
        Some(json!({"schema": incompatible})),
    )
    .await;
    assert_eq!(reply.json(), json!({"is_compatible": false}));
    let reply = call(
        &server,
        "POST",
        "/compatibility/subjects/s/versions/1?verbose=true",
        Some(json!({"schema": incompatible})),
    )
    .await
    .json();
    assert_eq!(reply["is_compatible"], false);
    assert!(
        reply["messages"][0].as_str().unwrap().contains("field 'c'"),
        "{reply}"
    );
    let reply = call(
        &server,
        "POST",
        "/compatibility/subjects/s/versions",
        Some(json!({"schema": incompatible})),
    )
    .await;
    assert_eq!(reply.json(), json!({"is_compatible": false}));
    call(
        &server,
        "POST",
        "/compatibility/subjects/s/versions/9",
        Some(json!({"schema": v2()})),
    )
    .await
    .error(40402);
    call(
        &server,
        "POST",
        "/compatibility/subjects/none/versions/latest",
        Some(json!({"schema": v2()})),
    )
    .await
    .error(40401);

    assert_eq!(
        call(&server, "GET", "/config", None).await.json(),
        json!({"compatibilityLevel": "BACKWARD"})
    );
    let reply = call(
        &server,
        "PUT",
        "/config/s",
        Some(json!({"compatibility": "none"})),
    )
    .await;
    assert_eq!(reply.json(), json!({"compatibility": "NONE"}));
    assert_eq!(
        call(&server, "GET", "/config/s", None).await.json(),
        json!({"compatibilityLevel": "NONE"})
    );
    // NONE lets the incompatible schema in.
    let reply = call(
        &server,
        "POST",
        "/subjects/s/versions",
        Some(json!({"schema": incompatible})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        call(&server, "DELETE", "/config/s", None).await.json(),
        json!({"compatibilityLevel": "NONE"})
    );
    call(&server, "GET", "/config/s", None).await.error(40408);
    assert_eq!(
        call(&server, "GET", "/config/s?defaultToGlobal=true", None)
            .await
            .json(),
        json!({"compatibilityLevel": "BACKWARD"})
    );
    call(
        &server,
        "PUT",
        "/config",
        Some(json!({"compatibility": "FULL_TRANSITIVE"})),
    )
    .await;
    assert_eq!(
        call(&server, "GET", "/config", None).await.json(),
        json!({"compatibilityLevel": "FULL_TRANSITIVE"})
    );
    assert_eq!(
        call(&server, "DELETE", "/config", None).await.json(),
        json!({"compatibilityLevel": "FULL_TRANSITIVE"})
    );
    assert_eq!(
        call(&server, "GET", "/config", None).await.json(),
        json!({"compatibilityLevel": "BACKWARD"})
    );

    assert_eq!(
        call(&server, "GET", "/mode", None).await.json(),
        json!({"mode": "READWRITE"})
    );
    // IMPORT globally is refused while schemas exist, unless forced.
    call(&server, "PUT", "/mode", Some(json!({"mode": "IMPORT"})))
        .await
        .error(42205);
    assert_eq!(
        call(
            &server,
            "PUT",
            "/mode?force=true",
            Some(json!({"mode": "IMPORT"}))
        )
        .await
        .json(),
        json!({"mode": "IMPORT"})
    );
    // IMPORT keeps the given id and version.
    let reply = call(
        &server,
        "POST",
        "/subjects/imported/versions",
        Some(json!({"schema": schema(r#"{"name":"q","type":"int"}"#), "id": 100, "version": 7})),
    )
    .await;
    assert_eq!(reply.json(), json!({"id": 100}), "{}", reply.body);
    let imported = call(&server, "GET", "/subjects/imported/versions/7", None)
        .await
        .json();
    assert_eq!(imported["id"], 100);
    let clash = call(
        &server,
        "POST",
        "/subjects/imported/versions",
        Some(json!({"schema": schema(r#"{"name":"other","type":"int"}"#), "id": 100})),
    )
    .await;
    clash.error(42205);
    call(&server, "PUT", "/mode", Some(json!({"mode": "READWRITE"}))).await;
    let reply = call(
        &server,
        "POST",
        "/subjects/after-import/versions",
        Some(json!({"schema": schema(r#"{"name":"w","type":"int"}"#)})),
    )
    .await;
    assert_eq!(
        reply.json(),
        json!({"id": 101}),
        "ids continue past imported ones"
    );
    call(&server, "GET", "/mode/s", None).await.error(40409);
    call(&server, "PUT", "/mode/s", Some(json!({"mode": "READONLY"}))).await;
    assert_eq!(
        call(&server, "GET", "/mode/s", None).await.json(),
        json!({"mode": "READONLY"})
    );
    assert_eq!(
        call(&server, "DELETE", "/mode/s", None).await.json(),
        json!({"mode": "READONLY"})
    );
    assert_eq!(
        call(&server, "GET", "/mode/s?defaultToGlobal=true", None)
            .await
            .json(),
        json!({"mode": "READWRITE"})
    );
}
