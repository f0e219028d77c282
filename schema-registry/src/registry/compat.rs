//! Compatibility levels and the checks behind them.
//!
//! Avro uses apache-avro's resolution checker; a partial result (some values written with one
//! schema could not be read with the other, e.g. an enum symbol only the writer has) counts as
//! incompatible. JSON Schema gets a structural check of the rules that matter for evolving
//! records: types may only widen for readers, a reader may not require what a writer may omit,
//! closed content models may not lose or gain properties, enums may not lose values.

use apache_avro::error::CompatibilityError;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema as AvroSchema;
use serde_json::Value as Json;

use super::error::RegistryError;
use super::Parsed;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub const DEFAULT: Level = Level::Backward;

    pub fn parse(text: &str) -> Result<Level, RegistryError> {
        Ok(match text.to_ascii_uppercase().as_str() {
            "NONE" => Level::None,
            "BACKWARD" => Level::Backward,
            "BACKWARD_TRANSITIVE" => Level::BackwardTransitive,
            "FORWARD" => Level::Forward,
            "FORWARD_TRANSITIVE" => Level::ForwardTransitive,
            "FULL" => Level::Full,
            "FULL_TRANSITIVE" => Level::FullTransitive,
            _ => return Err(RegistryError::invalid_compatibility(text)),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Checked against every live version, not only the latest.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

/// Why `new` is not compatible with `old` (registered as `version`) under `level`; empty when
/// it is.
pub fn check(level: Level, new: &Parsed, old: &Parsed, version: u32) -> Vec<String> {
    let mut problems = Vec::new();
    if level.backward() {
        if let Err(why) = can_read(old, new) {
            problems.push(format!(
                "the new schema cannot read data written with version {version}: {why}"
            ));
        }
    }
    if level.forward() {
        if let Err(why) = can_read(new, old) {
            problems.push(format!(
                "version {version} cannot read data written with the new schema: {why}"
            ));
        }
    }
    problems
}

sluice_core::reason_error!(
    /// Why data written with one schema cannot be read with another.
    pub Incompatible
);

/// Whether data written with `writer` can be read with `reader`.
pub fn can_read(writer: &Parsed, reader: &Parsed) -> Result<(), Incompatible> {
    match (writer, reader) {
        (Parsed::Avro(writer), Parsed::Avro(reader)) => {
            match SchemaCompatibility::can_read(writer, reader) {
                Ok(Compatibility::Full) => Ok(()),
                Ok(Compatibility::Partial) | Err(_) => Err(Incompatible(
                    explain(writer, reader, "").unwrap_or_else(|| {
                        "only some values could be read (a union branch or enum symbol of the \
                         writer is missing from the reader)"
                            .into()
                    }),
                )),
            }
        }
        (Parsed::Json(writer), Parsed::Json(reader)) => json_can_read(writer, reader, "#"),
        _ => Err("the schema type changed".into()),
    }
}

/// The first place where `reader` cannot read what `writer` wrote, as `field 'a.b': why`.
/// apache-avro's checker answers a whole-schema verdict; when a union absorbs a nested failure
/// (a nullable record whose field lost its default) the verdict is only "partial", so this
/// descends in step through records and unions to name the field.
fn explain(writer: &AvroSchema, reader: &AvroSchema, path: &str) -> Option<String> {
    let at = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    match (writer, reader) {
        (AvroSchema::Record(w), AvroSchema::Record(r)) => {
            if w.name.name() != r.name.name() {
                return leaf(writer, reader, path);
            }
            for r_field in &r.fields {
                let w_field = std::iter::once(&r_field.name)
                    .chain(r_field.aliases.iter())
                    .find_map(|name| w.fields.iter().find(|f| &f.name == name));
                match w_field {
                    Some(w_field) => {
                        if let Some(why) =
                            explain(&w_field.schema, &r_field.schema, &at(&r_field.name))
                        {
                            return Some(why);
                        }
                    }
                    None if r_field.default.is_none() => {
                        return Some(format!(
                            "field '{}' is only in the reader and has no default (a field \
                             added without a default, or a NOT NULL column added)",
                            at(&r_field.name)
                        ))
                    }
                    None => {}
                }
            }
            None
        }
        (AvroSchema::Union(w), _) => w
            .variants()
            .iter()
            .find_map(|branch| explain(branch, reader, path)),
        (_, AvroSchema::Union(r)) => {
            let same_kind = r.variants().iter().find(|branch| {
                std::mem::discriminant(*branch) == std::mem::discriminant(writer)
                    && branch.name().map(|n| n.name()) == writer.name().map(|n| n.name())
            });
            // No branch of the same kind: compare with the first non-null branch, so a nullable
            // column whose type changed says from what to what.
            let other = r.variants().iter().find(|b| !matches!(b, AvroSchema::Null));
            match (same_kind, other) {
                (Some(branch), _) => explain(writer, branch, path),
                (None, Some(branch)) if leaf(writer, reader, path).is_some() => {
                    leaf(writer, branch, path)
                }
                _ => leaf(writer, reader, path),
            }
        }
        _ => leaf(writer, reader, path),
    }
}

fn leaf(writer: &AvroSchema, reader: &AvroSchema, path: &str) -> Option<String> {
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("field '{path}': ")
    };
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        Ok(Compatibility::Partial) => Some(format!(
            "{prefix}only some values could be read (a union branch or enum symbol of the \
             writer is missing from the reader)"
        )),
        Err(err) => Some(format!("{prefix}{}", describe_avro(&err))),
    }
}

/// apache-avro's errors, shortened to the field path and what differs (its type mismatch
/// message prints both schemas whole).
fn describe_avro(err: &CompatibilityError) -> String {
    match err {
        CompatibilityError::FieldTypeMismatch(field, inner) => {
            format!("field '{field}': {}", describe_avro(inner))
        }
        CompatibilityError::MissingDefaultValue(field) => format!(
            "field '{field}' is only in the reader and has no default (a field added without \
             a default, or a NOT NULL column added)"
        ),
        CompatibilityError::WrongType {
            writer_schema_type,
            reader_schema_type,
        } => format!(
            "type changed from {} to {}, which Avro cannot resolve",
            kind_of(writer_schema_type),
            kind_of(reader_schema_type)
        ),
        CompatibilityError::MissingSymbols => {
            "the reader's enum has none of the writer's symbols".into()
        }
        CompatibilityError::MissingUnionElements
        | CompatibilityError::SchemaMismatchAllUnionElements => {
            "no branch of the reader's type matches the writer's (union branches changed)".into()
        }
        CompatibilityError::DecimalMismatch {
            r_precision,
            r_scale,
            w_precision,
            w_scale,
        } => format!(
            "decimal changed from ({w_precision},{w_scale}) to ({r_precision},{r_scale}); \
             decimals resolve only with equal precision and scale"
        ),
        CompatibilityError::NameMismatch {
            writer_name,
            reader_name,
        } => format!("named type {writer_name} was renamed to {reader_name}"),
        other => other.to_string(),
    }
}

/// The schema kind at the start of apache-avro's debug print (`Record(RecordSchema {…`).
fn kind_of(debug: &str) -> String {
    let kind: String = debug
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    kind.to_ascii_lowercase()
}

fn json_types(schema: &Json) -> Option<Vec<&str>> {
    match schema.get("type")? {
        Json::String(t) => Some(vec![t.as_str()]),
        Json::Array(types) => Some(types.iter().filter_map(Json::as_str).collect()),
        _ => None,
    }
}

fn json_can_read(writer: &Json, reader: &Json, path: &str) -> Result<(), Incompatible> {
    let (writer, reader) = match (writer, reader) {
        (_, Json::Bool(true)) => return Ok(()),
        (Json::Bool(false), _) => return Ok(()),
        (_, Json::Bool(false)) => return Err(format!("{path}: the reader accepts nothing").into()),
        (Json::Bool(true), _) => {
            return Err(format!(
                "{path}: the writer allowed anything and the reader is constrained"
            )
            .into())
        }
        (Json::Object(w), Json::Object(r)) => (w, r),
        _ => return Err(format!("{path}: a schema must be an object or a boolean").into()),
    };
    if let (Some(w), Some(r)) = (
        json_types(&Json::Object(writer.clone())),
        json_types(&Json::Object(reader.clone())),
    ) {
        for t in &w {
            let covered = r.contains(t) || (*t == "integer" && r.contains(&"number"));
            if !covered {
                return Err(format!(
                    "{path}: type {t} written by the writer is not accepted by the reader ({})",
                    r.join(", ")
                )
                .into());
            }
        }
    } else if reader.contains_key("type") && !writer.contains_key("type") {
        return Err(format!("{path}: the reader added a type constraint").into());
    }
    if let Some(Json::Array(r_enum)) = reader.get("enum") {
        match writer.get("enum") {
            Some(Json::Array(w_enum)) => {
                if let Some(missing) = w_enum.iter().find(|v| !r_enum.contains(v)) {
                    return Err(format!("{path}: enum value {missing} was removed").into());
                }
            }
            _ => return Err(format!("{path}: the reader added an enum constraint").into()),
        }
    }
    let empty = serde_json::Map::new();
    let w_props = writer
        .get("properties")
        .and_then(Json::as_object)
        .unwrap_or(&empty);
    let r_props = reader
        .get("properties")
        .and_then(Json::as_object)
        .unwrap_or(&empty);
    let required = |schema: &serde_json::Map<String, Json>| -> Vec<String> {
        schema
            .get("required")
            .and_then(Json::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (w_required, r_required) = (required(writer), required(reader));
    if let Some(name) = r_required.iter().find(|n| !w_required.contains(n)) {
        return Err(format!(
            "{path}: property '{name}' is required by the reader but optional for the writer"
        )
        .into());
    }
    let closed = |schema: &serde_json::Map<String, Json>| {
        schema.get("additionalProperties") == Some(&Json::Bool(false))
    };
    for (name, w_prop) in w_props {
        match r_props.get(name) {
            Some(r_prop) => json_can_read(w_prop, r_prop, &format!("{path}/properties/{name}"))?,
            None if closed(reader) => {
                return Err(format!(
                    "{path}: property '{name}' was removed from a closed content model"
                )
                .into())
            }
            None => {}
        }
    }
    for name in r_props.keys() {
        // The writer's open model may have written anything under a name it does not declare:
        // a new property is safe only if the reader accepts anything there.
        let unconstrained = r_props.get(name) == Some(&Json::Bool(true));
        if !w_props.contains_key(name) && !closed(writer) && !unconstrained {
            return Err(format!(
                "{path}: property '{name}' was added to an open content model (old data may \
                 hold any value under it)"
            )
            .into());
        }
    }
    if let (Some(w_items), Some(r_items)) = (writer.get("items"), reader.get("items")) {
        json_can_read(w_items, r_items, &format!("{path}/items"))?;
    }
    Ok(())
}
