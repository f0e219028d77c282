//! Iceberg schemas: the type a source column gets, a table's schema as the catalog gives it
//! (JSON), the schema sluice asks for when it creates a table, and the change that lets an
//! existing table take a new version of its source table (added columns, widened types).

use serde_json::{json, Value as Json};
use sluice_core::event::{Column, DataType, TableSchema};

/// An Iceberg type, as far as the sink writes it. Types it does not write are `Other` (a
/// column of such a type is refused by name when a row needs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IcebergType {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Decimal {
        precision: u32,
        scale: u32,
    },
    Date,
    /// Microseconds since midnight.
    Time,
    /// Microseconds since 1970, wall clock.
    Timestamp,
    /// Microseconds since 1970, UTC.
    TimestampTz,
    String,
    Uuid,
    Binary,
    List {
        element_id: i32,
        element_required: bool,
        element: Box<IcebergType>,
    },
    Other(String),
}

/// A column of an Iceberg schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub id: i32,
    pub name: String,
    pub required: bool,
    pub ty: IcebergType,
}

/// One schema of a table, as its metadata holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub id: i32,
    pub fields: Vec<Field>,
    pub identifier_field_ids: Vec<i32>,
}

/// The type a source column of `data_type` gets. Exact where Iceberg can be: unsigned
/// integers go to the next wider signed type (a `bigint unsigned` to `decimal(20, 0)`),
/// unconstrained `numeric` and types Iceberg lacks (json, intervals, enums, times with zone)
/// are kept as text, exactly as the source printed them.
pub fn iceberg_type(data_type: &DataType) -> IcebergType {
    match data_type {
        DataType::Bool => IcebergType::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::Int32 => IcebergType::Int,
        DataType::UInt8 | DataType::UInt16 => IcebergType::Int,
        DataType::Int64 | DataType::UInt32 => IcebergType::Long,
        DataType::UInt64 => IcebergType::Decimal {
            precision: 20,
            scale: 0,
        },
        DataType::Float32 => IcebergType::Float,
        DataType::Float64 => IcebergType::Double,
        DataType::Decimal {
            precision: Some(precision),
            scale,
        } if *precision <= 38 => IcebergType::Decimal {
            precision: (*precision).max(1),
            scale: scale.unwrap_or(0).min(*precision),
        },
        DataType::Uuid => IcebergType::Uuid,
        DataType::Date => IcebergType::Date,
        DataType::Time => IcebergType::Time,
        DataType::Timestamp => IcebergType::Timestamp,
        DataType::TimestampTz => IcebergType::TimestampTz,
        DataType::Bytes => IcebergType::Binary,
        DataType::Set => list_of(IcebergType::String),
        // Lists of lists (multidimensional arrays) are kept as their JSON text.
        DataType::Array(inner) if matches!(**inner, DataType::Array(_) | DataType::Set) => {
            IcebergType::String
        }
        DataType::Array(inner) => list_of(iceberg_type(inner)),
        DataType::Decimal { .. }
        | DataType::Text
        | DataType::Json
        | DataType::TimeTz
        | DataType::Interval
        | DataType::Enum => IcebergType::String,
    }
}

/// A list of optional elements; the element's id is given by the catalog.
fn list_of(element: IcebergType) -> IcebergType {
    IcebergType::List {
        element_id: 0,
        element_required: false,
        element: Box::new(element),
    }
}

impl IcebergType {
    /// Parses a type as table metadata writes it (`"long"`, `"decimal(10, 2)"`, a list object).
    pub fn parse(json: &Json) -> IcebergType {
        if let Some(text) = json.as_str() {
            let text = text.trim();
            return match text {
                "boolean" => IcebergType::Boolean,
                "int" => IcebergType::Int,
                "long" => IcebergType::Long,
                "float" => IcebergType::Float,
                "double" => IcebergType::Double,
                "date" => IcebergType::Date,
                "time" => IcebergType::Time,
                "timestamp" => IcebergType::Timestamp,
                "timestamptz" => IcebergType::TimestampTz,
                "string" => IcebergType::String,
                "uuid" => IcebergType::Uuid,
                "binary" => IcebergType::Binary,
                _ => text
                    .strip_prefix("decimal(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .and_then(|args| {
                        let (p, s) = args.split_once(',')?;
                        Some(IcebergType::Decimal {
                            precision: p.trim().parse().ok()?,
                            scale: s.trim().parse().ok()?,
                        })
                    })
                    .unwrap_or_else(|| IcebergType::Other(text.to_owned())),
            };
        }
        if json.get("type").and_then(Json::as_str) == Some("list") {
            if let (Some(id), Some(element)) = (
                json.get("element-id").and_then(Json::as_i64),
                json.get("element"),
            ) {
                return IcebergType::List {
                    element_id: id as i32,
                    element_required: json
                        .get("element-required")
                        .and_then(Json::as_bool)
                        .unwrap_or(false),
                    element: Box::new(IcebergType::parse(element)),
                };
            }
        }
        IcebergType::Other(json.to_string())
    }

    /// The type as table metadata writes it.
    pub fn to_json(&self) -> Json {
        match self {
            IcebergType::List {
                element_id,
                element_required,
                element,
            } => json!({
                "type": "list",
                "element-id": element_id,
                "element-required": element_required,
                "element": element.to_json(),
            }),
            IcebergType::Other(text) => {
                serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.clone()))
            }
            primitive => Json::String(primitive.to_string()),
        }
    }

    /// Whether a column of type `self` may become `wider` (Iceberg's promotions).
    pub fn promotes_to(&self, wider: &IcebergType) -> bool {
        match (self, wider) {
            (a, b) if a.same_shape(b) => true,
            (IcebergType::Int, IcebergType::Long) | (IcebergType::Float, IcebergType::Double) => {
                true
            }
            (
                IcebergType::Decimal {
                    precision: p1,
                    scale: s1,
                },
                IcebergType::Decimal {
                    precision: p2,
                    scale: s2,
                },
            ) => s1 == s2 && p1 <= p2,
            _ => false,
        }
    }

    /// Equal, ignoring list element ids (which the catalog assigns).
    pub fn same_shape(&self, other: &IcebergType) -> bool {
        match (self, other) {
            (
                IcebergType::List {
                    element: a,
                    element_required: ra,
                    ..
                },
                IcebergType::List {
                    element: b,
                    element_required: rb,
                    ..
                },
            ) => ra == rb && a.same_shape(b),
            (a, b) => a == b,
        }
    }
}

impl std::fmt::Display for IcebergType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IcebergType::Boolean => f.write_str("boolean"),
            IcebergType::Int => f.write_str("int"),
            IcebergType::Long => f.write_str("long"),
            IcebergType::Float => f.write_str("float"),
            IcebergType::Double => f.write_str("double"),
            IcebergType::Decimal { precision, scale } => write!(f, "decimal({precision}, {scale})"),
            IcebergType::Date => f.write_str("date"),
            IcebergType::Time => f.write_str("time"),
            IcebergType::Timestamp => f.write_str("timestamp"),
            IcebergType::TimestampTz => f.write_str("timestamptz"),
            IcebergType::String => f.write_str("string"),
            IcebergType::Uuid => f.write_str("uuid"),
            IcebergType::Binary => f.write_str("binary"),
            IcebergType::List { element, .. } => write!(f, "list<{element}>"),
            IcebergType::Other(text) => f.write_str(text),
        }
    }
}

impl Schema {
    /// Parses a schema of table metadata.
    pub fn parse(json: &Json) -> Result<Schema, String> {
        let fields = json
            .get("fields")
            .and_then(Json::as_array)
            .ok_or("a schema without fields")?
            .iter()
            .map(|field| {
                Ok(Field {
                    id: field
                        .get("id")
                        .and_then(Json::as_i64)
                        .ok_or("a field without id")? as i32,
                    name: field
                        .get("name")
                        .and_then(Json::as_str)
                        .ok_or("a field without name")?
                        .to_owned(),
                    required: field
                        .get("required")
                        .and_then(Json::as_bool)
                        .unwrap_or(false),
                    ty: IcebergType::parse(field.get("type").unwrap_or(&Json::Null)),
                })
            })
            .collect::<Result<Vec<_>, &str>>()?;
        Ok(Schema {
            id: json.get("schema-id").and_then(Json::as_i64).unwrap_or(0) as i32,
            fields,
            identifier_field_ids: json
                .get("identifier-field-ids")
                .and_then(Json::as_array)
                .map(|ids| {
                    ids.iter()
                        .filter_map(Json::as_i64)
                        .map(|id| id as i32)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    pub fn to_json(&self) -> Json {
        json!({
            "type": "struct",
            "schema-id": self.id,
            "identifier-field-ids": self.identifier_field_ids,
            "fields": self.fields.iter().map(|f| json!({
                "id": f.id,
                "name": f.name,
                "required": f.required,
                "type": f.ty.to_json(),
            })).collect::<Vec<_>>(),
        })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The highest field id the schema uses, list elements included.
    pub fn highest_id(&self) -> i32 {
        fn of(ty: &IcebergType) -> i32 {
            match ty {
                IcebergType::List {
                    element_id,
                    element,
                    ..
                } => (*element_id).max(of(element)),
                _ => 0,
            }
        }
        self.fields
            .iter()
            .map(|f| f.id.max(of(&f.ty)))
            .max()
            .unwrap_or(0)
    }
}

/// Extra columns of a changelog table, before the source's: the change's op (`c`, `u`, `d`,
/// `r`), its place in the log, and when the source committed it.
pub const CHANGELOG_COLUMNS: [(&str, IcebergType); 4] = [
    ("_sluice_op", IcebergType::String),
    ("_sluice_partition", IcebergType::Int),
    ("_sluice_offset", IcebergType::Long),
    ("_sluice_ts", IcebergType::TimestampTz),
];

/// The schema sluice asks for when it creates a table for `table` (ids from 1, in order; the
/// catalog may assign its own). Key columns are required and the table's identifier fields;
/// a changelog table has none and starts with [`CHANGELOG_COLUMNS`].
pub fn new_schema(table: &TableSchema, changelog: bool) -> Schema {
    let mut next_id = 0;
    let mut id = || {
        next_id += 1;
        next_id
    };
    let mut fields = Vec::new();
    if changelog {
        for (name, ty) in CHANGELOG_COLUMNS {
            fields.push(Field {
                id: id(),
                name: name.into(),
                required: name != "_sluice_ts",
                ty,
            });
        }
    }
    for column in &table.columns {
        let field_id = id();
        let ty = with_element_ids(iceberg_type(&column.data_type), &mut id);
        fields.push(Field {
            id: field_id,
            name: column.name.clone(),
            required: !changelog && column.key,
            ty,
        });
    }
    let identifier_field_ids = if changelog {
        Vec::new()
    } else {
        fields.iter().filter(|f| f.required).map(|f| f.id).collect()
    };
    Schema {
        id: 0,
        fields,
        identifier_field_ids,
    }
}

fn with_element_ids(ty: IcebergType, id: &mut impl FnMut() -> i32) -> IcebergType {
    match ty {
        IcebergType::List {
            element_required,
            element,
            ..
        } => IcebergType::List {
            element_id: id(),
            element_required,
            element: Box::new(with_element_ids(*element, id)),
        },
        other => other,
    }
}

/// What a table needs to take rows of a source table version.
#[derive(Debug, PartialEq, Eq)]
pub enum Evolution {
    /// The table fits as it is.
    None,
    /// The table's next schema: added columns (optional, fresh ids) and widened types.
    Change(Schema),
}

/// Plans the schema change that lets `current` take rows of `table`: a source column the
/// table lacks is added, a type Iceberg can promote is widened; anything else (a narrower or
/// different type, a key that differs) is an error that says what to do.
pub fn evolve(current: &Schema, table: &TableSchema, shown: &str) -> Result<Evolution, String> {
    let mut next = current.clone();
    let mut next_id = current.highest_id();
    let mut id = || {
        next_id += 1;
        next_id
    };
    let mut changed = false;
    for column in &table.columns {
        let wanted = iceberg_type(&column.data_type);
        match next.fields.iter_mut().find(|f| f.name == column.name) {
            None => {
                let field_id = id();
                next.fields.push(Field {
                    id: field_id,
                    name: column.name.clone(),
                    required: false,
                    ty: with_element_ids(wanted, &mut id),
                });
                changed = true;
            }
            Some(field) if field.ty.same_shape(&wanted) => {}
            Some(field) if field.ty.promotes_to(&wanted) => {
                field.ty = wanted;
                changed = true;
            }
            Some(field) => {
                return Err(type_conflict(shown, column, &field.ty, &wanted));
            }
        }
    }
    if !changed {
        return Ok(Evolution::None);
    }
    next.id = current.id + 1;
    Ok(Evolution::Change(next))
}

fn type_conflict(shown: &str, column: &Column, has: &IcebergType, wanted: &IcebergType) -> String {
    format!(
        "{shown} column {:?} is {has}, and the source's {} ({}) needs {wanted}, which Iceberg \
         cannot promote {has} to (it widens int to long, float to double and a decimal's \
         precision); rename or drop the column in the table, or write this source table to a \
         new table (the sink's `table` template)",
        column.name, column.name, column.type_name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::event::TableId;

    fn column(name: &str, data_type: DataType, key: bool) -> Column {
        Column {
            name: name.into(),
            type_name: String::new(),
            data_type,
            key,
            nullable: !key,
        }
    }

    fn table(columns: Vec<Column>) -> TableSchema {
        TableSchema {
            table: TableId {
                namespace: "public".into(),
                name: "t".into(),
            },
            columns,
            version: 0,
        }
    }

    #[test]
    fn a_new_table_keys_its_rows_and_numbers_list_elements() {
        let schema = new_schema(
            &table(vec![
                column("id", DataType::Int64, true),
                column("tags", DataType::Array(Box::new(DataType::Text)), false),
                column(
                    "price",
                    DataType::Decimal {
                        precision: Some(10),
                        scale: Some(2),
                    },
                    false,
                ),
            ]),
            false,
        );
        assert_eq!(schema.identifier_field_ids, vec![1]);
        assert_eq!(schema.highest_id(), 4);
        let json = schema.to_json();
        assert_eq!(json["fields"][1]["type"]["element-id"], 3);
        assert_eq!(json["fields"][2]["type"], "decimal(10, 2)");
        assert_eq!(Schema::parse(&json).unwrap(), schema);
        let changelog = new_schema(&table(vec![column("id", DataType::Int64, true)]), true);
        assert!(changelog.identifier_field_ids.is_empty());
        assert_eq!(changelog.fields[0].name, "_sluice_op");
        assert!(!changelog.fields[4].required);
    }

    #[test]
    fn new_columns_are_added_and_types_widened_as_iceberg_allows() {
        let current = new_schema(
            &table(vec![
                column("id", DataType::Int32, true),
                column("n", DataType::Float32, false),
            ]),
            false,
        );
        let wider = table(vec![
            column("id", DataType::Int64, true),
            column("n", DataType::Float64, false),
            column("note", DataType::Text, false),
        ]);
        let Evolution::Change(next) = evolve(&current, &wider, "t").unwrap() else {
            panic!("expected a change");
        };
        assert_eq!(next.id, 1);
        assert_eq!(next.fields[0].ty, IcebergType::Long);
        assert_eq!(next.fields[1].ty, IcebergType::Double);
        assert_eq!((next.fields[2].id, next.fields[2].required), (3, false));
        assert_eq!(evolve(&next, &wider, "t").unwrap(), Evolution::None);
        let narrower = table(vec![column("id", DataType::Text, true)]);
        let err = evolve(&current, &narrower, "sluice.t").unwrap_err();
        assert!(
            err.contains("\"id\" is int") && err.contains("needs string"),
            "{err}"
        );
    }
}
