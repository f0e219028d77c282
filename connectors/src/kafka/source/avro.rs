//! Avro records in Confluent's wire format (a zero byte, the schema id, the datum), as Debezium
//! writes them with Confluent's AvroConverter: the writer's schema comes from the registry at
//! `registry_url` (`GET /schemas/ids/{id}`, kept once fetched), the datum is read as JSON, and
//! the Avro schema is turned into the Kafka Connect schema shape (`connect.name`,
//! `connect.parameters`) that `decode.rs` reads for JSON with schemas.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value as Json};
use sluice_schema_registry::avro::decode::ForeignSchema;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why an Avro record could not be read.
#[derive(Debug)]
pub(crate) enum AvroError {
    /// The registry did not answer as it should (retried).
    Registry(String),
    /// The record or its schema is not readable (definite).
    Record(String),
}

/// One writer schema: to read datums, and its Connect shape.
pub(crate) struct WriterSchema {
    avro: ForeignSchema,
    connect: Json,
}

/// Schemas fetched from a Confluent-compatible registry, by id.
pub(crate) struct Registry {
    url: String,
    schemas: HashMap<u32, Arc<WriterSchema>>,
}

impl Registry {
    pub(crate) fn new(url: &str) -> Registry {
        Registry {
            url: url.trim_end_matches('/').to_owned(),
            schemas: HashMap::new(),
        }
    }

    /// A framed record as `{"schema": <Connect shape>, "payload": <datum as JSON>}`.
    pub(crate) async fn decode(&mut self, framed: &[u8]) -> Result<Json, AvroError> {
        if framed.len() < 5 || framed[0] != 0 {
            return Err(AvroError::Record(
                "not Confluent's wire format (a zero byte, then the schema id)".into(),
            ));
        }
        let id = u32::from_be_bytes(framed[1..5].try_into().expect("4 bytes"));
        let schema = match self.schemas.get(&id) {
            Some(schema) => Arc::clone(schema),
            None => {
                let text = self.fetch(id).await.map_err(AvroError::Registry)?;
                let bad = |e: String| AvroError::Record(format!("schema id {id}: {e}"));
                let avro = ForeignSchema::parse(&text).map_err(bad)?;
                let parsed: Json = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
                let connect = connect_schema(&parsed, &mut HashMap::new());
                let schema = Arc::new(WriterSchema { avro, connect });
                self.schemas.insert(id, Arc::clone(&schema));
                schema
            }
        };
        let payload = schema
            .avro
            .to_json(&framed[5..])
            .map_err(|e| AvroError::Record(format!("schema id {id}: {}", e.0)))?;
        Ok(json!({"schema": schema.connect, "payload": payload}))
    }

    /// The schema text the registry holds under `id` (HTTP/1.0 GET, loopback or LAN).
    async fn fetch(&self, id: u32) -> Result<String, String> {
        let fail =
            |reason: String| format!("schema registry {}: schema id {id}: {reason}", self.url);
        let rest = self
            .url
            .strip_prefix("http://")
            .ok_or_else(|| fail("only http:// URLs are supported".into()))?;
        let (authority, base) = match rest.split_once('/') {
            Some((authority, base)) => (authority, format!("/{base}")),
            None => (rest, String::new()),
        };
        let address = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let request = format!(
            "GET {base}/schemas/ids/{id} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/vnd.schemaregistry.v1+json, application/json\r\n\r\n"
        );
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(&address).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<Vec<u8>, std::io::Error>(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .map_err(|_| fail("no answer within 30 s".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| fail("not an HTTP response".into()))?;
        let status = head.split(' ').nth(1).unwrap_or("");
        if status != "200" {
            return Err(fail(format!("HTTP {status}: {}", body.trim())));
        }
        let body: Json =
            serde_json::from_str(body).map_err(|e| fail(format!("the answer is not JSON: {e}")))?;
        body.get("schema")
            .and_then(Json::as_str)
            .map(str::to_owned)
            .ok_or_else(|| fail("the answer has no \"schema\"".into()))
    }
}

/// An Avro schema (as JSON) in Kafka Connect's schema shape: `type` (int32, int64, …, struct,
/// array), `optional`, `name` (`connect.name`), `parameters` (`connect.parameters`), `fields`
/// (each with `field`), `items`. `named` holds the records defined so far, by full and short
/// name, for later references to them.
fn connect_schema(avro: &Json, named: &mut HashMap<String, Json>) -> Json {
    match avro {
        Json::Array(branches) => {
            // A union with null: an optional field.
            let branch = branches
                .iter()
                .find(|b| b.as_str() != Some("null"))
                .unwrap_or(&Json::Null);
            let mut schema = connect_schema(branch, named);
            if let Some(object) = schema.as_object_mut() {
                object.insert(
                    "optional".into(),
                    Json::Bool(branches.iter().any(|b| b.as_str() == Some("null"))),
                );
            }
            schema
        }
        Json::String(name) => match primitive(name) {
            Some(ty) => json!({"type": ty, "optional": false}),
            None => named
                .get(name)
                .or_else(|| named.get(name.rsplit('.').next().unwrap_or(name)))
                .cloned()
                .unwrap_or_else(|| json!({"type": "string", "optional": false})),
        },
        Json::Object(object) => {
            let ty = object.get("type").unwrap_or(&Json::Null);
            let mut out = Map::new();
            match ty.as_str() {
                Some("record") => {
                    let fields: Vec<Json> = object
                        .get("fields")
                        .and_then(Json::as_array)
                        .map(|fields| {
                            fields
                                .iter()
                                .map(|f| {
                                    let mut schema =
                                        connect_schema(f.get("type").unwrap_or(&Json::Null), named);
                                    if let Some(o) = schema.as_object_mut() {
                                        o.insert(
                                            "field".into(),
                                            f.get("name").cloned().unwrap_or(Json::Null),
                                        );
                                    }
                                    schema
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.insert("type".into(), json!("struct"));
                    out.insert("fields".into(), Json::Array(fields));
                    if let Some(name) = object.get("connect.name").or_else(|| object.get("name")) {
                        out.insert("name".into(), name.clone());
                    }
                    out.insert("optional".into(), json!(false));
                    let defined = Json::Object(out.clone());
                    if let Some(name) = object.get("name").and_then(Json::as_str) {
                        let full = match object.get("namespace").and_then(Json::as_str) {
                            Some(namespace) if !name.contains('.') => format!("{namespace}.{name}"),
                            _ => name.to_owned(),
                        };
                        named.insert(
                            name.rsplit('.').next().unwrap_or(name).to_owned(),
                            defined.clone(),
                        );
                        named.insert(full, defined);
                    }
                    return Json::Object(out);
                }
                Some("array") => {
                    out.insert("type".into(), json!("array"));
                    out.insert(
                        "items".into(),
                        connect_schema(object.get("items").unwrap_or(&Json::Null), named),
                    );
                }
                Some("map") => {
                    out.insert("type".into(), json!("map"));
                }
                Some("enum") => {
                    out.insert("type".into(), json!("string"));
                }
                Some("fixed") => {
                    out.insert("type".into(), json!("bytes"));
                }
                Some(name) => {
                    let ty = object
                        .get("connect.type")
                        .and_then(Json::as_str)
                        .map(str::to_owned)
                        .or_else(|| primitive(name).map(str::to_owned))
                        .unwrap_or_else(|| "string".into());
                    out.insert("type".into(), Json::String(ty));
                }
                None => return connect_schema(ty, named),
            }
            if let Some(name) = object.get("connect.name") {
                out.insert("name".into(), name.clone());
            }
            if let Some(parameters) = object.get("connect.parameters") {
                out.insert("parameters".into(), parameters.clone());
            }
            if object.get("logicalType").and_then(Json::as_str) == Some("decimal") {
                out.insert(
                    "name".into(),
                    json!("org.apache.kafka.connect.data.Decimal"),
                );
                if !out.contains_key("parameters") {
                    let text = |key: &str| object.get(key).map(|v| Json::String(v.to_string()));
                    let mut parameters = Map::new();
                    if let Some(scale) = text("scale") {
                        parameters.insert("scale".into(), scale);
                    }
                    if let Some(precision) = text("precision") {
                        parameters.insert("connect.decimal.precision".into(), precision);
                    }
                    out.insert("parameters".into(), Json::Object(parameters));
                }
            }
            out.insert("optional".into(), json!(false));
            Json::Object(out)
        }
        _ => json!({"type": "string", "optional": true}),
    }
}

/// Connect's name for an Avro primitive type.
fn primitive(avro: &str) -> Option<&'static str> {
    Some(match avro {
        "null" => "null",
        "boolean" => "boolean",
        "int" => "int32",
        "long" => "int64",
        "float" => "float32",
        "double" => "float64",
        "bytes" => "bytes",
        "string" => "string",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debeziums_avro_envelope_takes_connects_shape() {
        let avro = json!({"type": "record", "name": "Envelope", "namespace": "dbserver1.public.t",
            "fields": [
                {"name": "before", "type": ["null", {"type": "record", "name": "Value", "fields": [
                    {"name": "id", "type": "int"},
                    {"name": "small", "type": ["null", {"type": "int", "connect.type": "int16"}]},
                    {"name": "amount", "type": ["null", {"type": "bytes", "scale": 2, "precision": 10,
                        "connect.name": "org.apache.kafka.connect.data.Decimal",
                        "connect.parameters": {"scale": "2", "connect.decimal.precision": "10"},
                        "logicalType": "decimal"}]}]}]},
                {"name": "after", "type": ["null", "Value"]},
                {"name": "op", "type": "string"}]});
        let connect = connect_schema(&avro, &mut HashMap::new());
        let after = &connect["fields"][1];
        assert_eq!(after["field"], "after");
        assert_eq!(after["optional"], true);
        assert_eq!(
            after["fields"][0],
            json!({"type": "int32", "optional": false, "field": "id"})
        );
        assert_eq!(after["fields"][1]["type"], "int16");
        assert_eq!(
            after["fields"][2]["name"],
            "org.apache.kafka.connect.data.Decimal"
        );
        assert_eq!(after["fields"][2]["parameters"]["scale"], "2");
    }
}
