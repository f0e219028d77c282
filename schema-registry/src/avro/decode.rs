//! Reading Confluent-framed Avro records back as JSON: what the JSONL sink writes for Avro
//! topics, what `sluice log tail` shows, and what the tests compare against source rows.
//!
//! The datum is read by walking the writer's schema (from the registry by the id in the
//! header). Logical types come out as Debezium's JSON does: decimals as exact strings, dates as
//! days, times and timestamps as microseconds, bytes as base64.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::schema::{InnerDecimalSchema, Name, Schema, UuidSchema};
use base64::Engine;
use serde_json::{json, Map, Value as Json};

use super::encode::MAGIC;
use super::wire::{Cursor, DatumError};
use crate::registry::{Parsed, Registry, StoredSchema};

/// Decodes Confluent-framed Avro; keeps the schemas it has looked up.
pub struct AvroDecoder {
    registry: Arc<Registry>,
    schemas: HashMap<u32, Arc<StoredSchema>>,
}

/// Whether `bytes` start like Confluent's wire format (JSON never starts with a zero byte).
pub fn is_framed(bytes: &[u8]) -> bool {
    bytes.len() >= 5 && bytes[0] == MAGIC
}

impl AvroDecoder {
    pub fn new(registry: Arc<Registry>) -> AvroDecoder {
        AvroDecoder {
            registry,
            schemas: HashMap::new(),
        }
    }

    /// The JSON form of one framed key or value.
    pub fn to_json(&mut self, bytes: &[u8]) -> Result<Json, DatumError> {
        if !is_framed(bytes) {
            return Err("not Confluent wire format (no magic byte 0 and schema id)".into());
        }
        let id = u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes"));
        let stored = match self.schemas.get(&id) {
            Some(stored) => Arc::clone(stored),
            None => {
                let stored = self
                    .registry
                    .schema_anywhere(id)
                    .map_err(|e| format!("schema id {id}: {}", e.message))?;
                self.schemas.insert(id, Arc::clone(&stored));
                stored
            }
        };
        let Parsed::Avro(schema) = &stored.parsed else {
            return Err(format!("schema id {id} is not an Avro schema").into());
        };
        let mut names = HashMap::new();
        collect_names(schema, &mut names);
        let mut reader = Reader {
            cursor: Cursor::new(&bytes[5..]),
            names: &names,
        };
        let value = reader.read(schema)?;
        if !reader.bytes.is_empty() {
            return Err(format!(
                "{} bytes left after the datum of schema id {id}",
                reader.bytes.len()
            )
            .into());
        }
        Ok(value)
    }
}

/// An Avro schema from another registry (a Kafka source's `registry_url`), to read datums
/// written with it as JSON (decimals as exact text, bytes as base64, as [`AvroDecoder`]).
pub struct ForeignSchema(Schema);

impl ForeignSchema {
    pub fn parse(text: &str) -> Result<ForeignSchema, String> {
        Schema::parse_str(text)
            .map(ForeignSchema)
            .map_err(|e| format!("not an Avro schema: {e}"))
    }

    /// The JSON form of one datum (without the wire header).
    pub fn to_json(&self, datum: &[u8]) -> Result<Json, DatumError> {
        let mut names = HashMap::new();
        collect_names(&self.0, &mut names);
        let mut reader = Reader {
            cursor: Cursor::new(datum),
            names: &names,
        };
        let value = reader.read(&self.0)?;
        if !reader.bytes.is_empty() {
            return Err(format!("{} bytes left after the datum", reader.bytes.len()).into());
        }
        Ok(value)
    }
}

fn collect_names<'a>(schema: &'a Schema, names: &mut HashMap<Name, &'a Schema>) {
    match schema {
        Schema::Record(record) => {
            names.insert(record.name.clone(), schema);
            for field in &record.fields {
                collect_names(&field.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.clone(), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.clone(), schema);
        }
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        _ => {}
    }
}

struct Reader<'a> {
    cursor: Cursor<'a>,
    names: &'a HashMap<Name, &'a Schema>,
}

impl<'a> std::ops::Deref for Reader<'a> {
    type Target = Cursor<'a>;
    fn deref(&self) -> &Cursor<'a> {
        &self.cursor
    }
}

impl<'a> std::ops::DerefMut for Reader<'a> {
    fn deref_mut(&mut self) -> &mut Cursor<'a> {
        &mut self.cursor
    }
}

impl Reader<'_> {
    fn read(&mut self, schema: &Schema) -> Result<Json, DatumError> {
        Ok(match schema {
            Schema::Null => Json::Null,
            Schema::Boolean => json!(self.take(1)?[0] != 0),
            Schema::Int
            | Schema::Long
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => json!(self.long()?),
            Schema::Float => float(f64::from(f32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            ))),
            Schema::Double => float(f64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            Schema::Bytes | Schema::BigDecimal => {
                json!(base64::engine::general_purpose::STANDARD.encode(self.bytes()?))
            }
            Schema::String | Schema::Uuid(UuidSchema::String) => json!(self.string()?.to_owned()),
            Schema::Uuid(UuidSchema::Bytes) => {
                json!(base64::engine::general_purpose::STANDARD.encode(self.bytes()?))
            }
            Schema::Uuid(UuidSchema::Fixed(f)) | Schema::Fixed(f) | Schema::Duration(f) => {
                json!(base64::engine::general_purpose::STANDARD.encode(self.take(f.size)?))
            }
            Schema::Decimal(d) => {
                let unscaled = match &d.inner {
                    InnerDecimalSchema::Bytes => self.bytes()?,
                    InnerDecimalSchema::Fixed(f) => self.take(f.size)?,
                };
                json!(decimal_text(unscaled, d.scale))
            }
            Schema::Array(a) => {
                let mut items = Vec::new();
                self.blocks(|r| {
                    items.push(r.read(&a.items)?);
                    Ok(())
                })?;
                Json::Array(items)
            }
            Schema::Map(m) => {
                let mut map = Map::new();
                self.blocks(|r| {
                    let key = r.string()?.to_owned();
                    map.insert(key, r.read(&m.types)?);
                    Ok(())
                })?;
                Json::Object(map)
            }
            Schema::Union(u) => {
                let index = usize::try_from(self.long()?).map_err(|_| "a negative union index")?;
                let branch = u
                    .variants()
                    .get(index)
                    .ok_or_else(|| format!("union index {index} out of range"))?;
                self.read(branch)?
            }
            Schema::Record(record) => {
                let mut object = Map::new();
                for field in &record.fields {
                    // A column whose name Avro cannot carry (日本語, "a b") keeps its own in
                    // `sluice.name`: JSON shows the table's names.
                    let name = field
                        .custom_attributes
                        .get("sluice.name")
                        .and_then(|name| name.as_str())
                        .unwrap_or(&field.name);
                    object.insert(name.to_owned(), self.read(&field.schema)?);
                }
                Json::Object(object)
            }
            Schema::Enum(e) => {
                let index = usize::try_from(self.long()?).map_err(|_| "a negative enum index")?;
                json!(e
                    .symbols
                    .get(index)
                    .ok_or_else(|| format!("enum index {index} out of range"))?)
            }
            Schema::Ref { name } => {
                let target = *self
                    .names
                    .get(name)
                    .ok_or_else(|| format!("unknown named type {}", name.fullname(None)))?;
                self.read(target)?
            }
        })
    }

    /// Avro's blocked encoding of arrays and maps.
    fn blocks(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), DatumError>,
    ) -> Result<(), DatumError> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                self.long()?; // block size in bytes
            }
            for _ in 0..count.unsigned_abs() {
                item(self)?;
            }
        }
    }
}

fn float(value: f64) -> Json {
    if value.is_finite() {
        json!(value)
    } else if value.is_nan() {
        json!("NaN")
    } else if value > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    }
}

/// A big-endian two's complement unscaled integer at `scale`, as exact decimal text.
pub fn decimal_text(unscaled: &[u8], scale: usize) -> String {
    let negative = unscaled.first().is_some_and(|b| b & 0x80 != 0);
    // Magnitude, big-endian.
    let mut magnitude: Vec<u8> = unscaled.to_vec();
    if negative {
        let mut carry = 1u16;
        for byte in magnitude.iter_mut().rev() {
            let v = u16::from(!*byte) + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
    }
    // Base-256 to base-10 by repeated division.
    let mut digits = Vec::new();
    while magnitude.iter().any(|b| *b != 0) {
        let mut remainder = 0u32;
        for byte in magnitude.iter_mut() {
            let v = (remainder << 8) | u32::from(*byte);
            *byte = (v / 10) as u8;
            remainder = v % 10;
        }
        digits.push(b'0' + remainder as u8);
    }
    while digits.len() <= scale {
        digits.push(b'0');
    }
    digits.reverse();
    let mut text = String::with_capacity(digits.len() + 2);
    if negative {
        text.push('-');
    }
    let (int, frac) = digits.split_at(digits.len() - scale);
    text.push_str(std::str::from_utf8(int).expect("ASCII digits"));
    if scale > 0 {
        text.push('.');
        text.push_str(std::str::from_utf8(frac).expect("ASCII digits"));
    }
    text
}
