//! Parquet files as Iceberg reads them: data files of a table's rows (each column carrying its
//! Iceberg field id, lists in the standard three-level layout) and position delete files
//! (`file_path`, `pos`), written with the parquet crate's column writer (snappy pages); and
//! the reads the sink needs back: a data file's key columns and a delete file's positions,
//! from which it rebuilds its index of where each key's row lives.

use std::sync::Arc;

use bytes::Bytes;

use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as PhysicalType};
use parquet::column::writer::ColumnWriter;
use parquet::data_type::{ByteArray, FixedLenByteArray};
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field as RecordField;
use parquet::schema::types::Type;

use super::cells::Cell;
use super::schema::{Field, IcebergType};

/// Field ids of a position delete file's columns (reserved by the Iceberg spec).
pub const DELETE_FILE_PATH_ID: i32 = 2_147_483_546;
pub const DELETE_POS_ID: i32 = 2_147_483_545;

/// What a written file holds, for its manifest entry.
#[derive(Debug, Clone, Default)]
pub struct WrittenFile {
    pub path: String,
    pub record_count: i64,
    pub file_size: i64,
    /// Per top-level field id: values (nulls included) and nulls.
    pub value_counts: Vec<(i32, i64)>,
    pub null_counts: Vec<(i32, i64)>,
}

fn io_error(uri: &str, e: impl std::fmt::Display) -> String {
    format!("{uri}: {e}")
}

fn properties() -> Arc<WriterProperties> {
    Arc::new(
        WriterProperties::builder()
            .set_writer_version(WriterVersion::PARQUET_1_0)
            .set_compression(Compression::SNAPPY)
            .set_created_by("sluice".into())
            .build(),
    )
}

/// Bytes a decimal of `precision` digits takes as a fixed-length two's complement number.
pub fn decimal_bytes(precision: u32) -> usize {
    let mut bytes = 1;
    while 10f64.powi(precision as i32) > 2f64.powi(8 * bytes as i32 - 1) {
        bytes += 1;
    }
    bytes
}

fn primitive(
    name: &str,
    id: i32,
    ty: &IcebergType,
    repetition: Repetition,
) -> Result<Type, String> {
    let (physical, logical) = match ty {
        IcebergType::Boolean => (PhysicalType::BOOLEAN, None),
        IcebergType::Int => (PhysicalType::INT32, None),
        IcebergType::Long => (PhysicalType::INT64, None),
        IcebergType::Float => (PhysicalType::FLOAT, None),
        IcebergType::Double => (PhysicalType::DOUBLE, None),
        IcebergType::Date => (PhysicalType::INT32, Some(LogicalType::Date)),
        IcebergType::Time => (
            PhysicalType::INT64,
            Some(LogicalType::Time {
                is_adjusted_to_u_t_c: false,
                unit: TimeUnit::MICROS,
            }),
        ),
        IcebergType::Timestamp | IcebergType::TimestampTz => (
            PhysicalType::INT64,
            Some(LogicalType::Timestamp {
                is_adjusted_to_u_t_c: *ty == IcebergType::TimestampTz,
                unit: TimeUnit::MICROS,
            }),
        ),
        IcebergType::String => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
        IcebergType::Binary => (PhysicalType::BYTE_ARRAY, None),
        IcebergType::Uuid => (PhysicalType::FIXED_LEN_BYTE_ARRAY, Some(LogicalType::Uuid)),
        IcebergType::Decimal { precision, scale } => (
            PhysicalType::FIXED_LEN_BYTE_ARRAY,
            Some(LogicalType::Decimal {
                scale: *scale as i32,
                precision: *precision as i32,
            }),
        ),
        IcebergType::List { .. } | IcebergType::Other(_) => {
            return Err(format!("{name}: sluice writes no {ty} column"))
        }
    };
    let mut builder = Type::primitive_type_builder(name, physical)
        .with_repetition(repetition)
        .with_logical_type(logical)
        .with_id(Some(id));
    match ty {
        IcebergType::Uuid => builder = builder.with_length(16),
        IcebergType::Decimal { precision, scale } => {
            builder = builder
                .with_length(decimal_bytes(*precision) as i32)
                .with_precision(*precision as i32)
                .with_scale(*scale as i32);
        }
        _ => {}
    }
    builder.build().map_err(|e| format!("{name}: {e}"))
}

fn repetition(required: bool) -> Repetition {
    if required {
        Repetition::REQUIRED
    } else {
        Repetition::OPTIONAL
    }
}

fn field_type(field: &Field) -> Result<Type, String> {
    match &field.ty {
        IcebergType::List {
            element_id,
            element_required,
            element,
        } => {
            let element = primitive(
                "element",
                *element_id,
                element,
                repetition(*element_required),
            )?;
            let list = Type::group_type_builder("list")
                .with_repetition(Repetition::REPEATED)
                .with_fields(vec![Arc::new(element)])
                .build()
                .map_err(|e| e.to_string())?;
            Type::group_type_builder(&field.name)
                .with_repetition(repetition(field.required))
                .with_logical_type(Some(LogicalType::List))
                .with_id(Some(field.id))
                .with_fields(vec![Arc::new(list)])
                .build()
                .map_err(|e| e.to_string())
        }
        ty => primitive(&field.name, field.id, ty, repetition(field.required)),
    }
}

fn message(fields: &[Field]) -> Result<Arc<Type>, String> {
    let fields = fields
        .iter()
        .map(|f| field_type(f).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    Type::group_type_builder("table")
        .with_fields(fields)
        .build()
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// One leaf column's values and levels.
enum Values {
    Bool(Vec<bool>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<ByteArray>),
    Fixed(Vec<FixedLenByteArray>),
}

struct Leaf {
    values: Values,
    def: Vec<i16>,
    rep: Vec<i16>,
    nulls: i64,
}

impl Leaf {
    fn new(ty: &IcebergType) -> Leaf {
        let values = match ty {
            IcebergType::Boolean => Values::Bool(Vec::new()),
            IcebergType::Int | IcebergType::Date => Values::I32(Vec::new()),
            IcebergType::Long
            | IcebergType::Time
            | IcebergType::Timestamp
            | IcebergType::TimestampTz => Values::I64(Vec::new()),
            IcebergType::Float => Values::F32(Vec::new()),
            IcebergType::Double => Values::F64(Vec::new()),
            IcebergType::String | IcebergType::Binary => Values::Bytes(Vec::new()),
            _ => Values::Fixed(Vec::new()),
        };
        Leaf {
            values,
            def: Vec::new(),
            rep: Vec::new(),
            nulls: 0,
        }
    }

    /// Adds a present value (of the leaf's type: checked when the cell was made).
    fn push(&mut self, cell: &Cell, ty: &IcebergType) {
        match (&mut self.values, cell) {
            (Values::Bool(v), Cell::Boolean(b)) => v.push(*b),
            (Values::I32(v), Cell::Int(x)) => v.push(*x),
            (Values::I64(v), Cell::Long(x)) => v.push(*x),
            (Values::I64(v), Cell::Int(x)) => v.push(i64::from(*x)),
            (Values::F32(v), Cell::Float(x)) => v.push(*x),
            (Values::F64(v), Cell::Double(x)) => v.push(*x),
            (Values::F64(v), Cell::Float(x)) => v.push(f64::from(*x)),
            (Values::Bytes(v), Cell::String(text)) => {
                v.push(ByteArray::from(text.as_bytes().to_vec()))
            }
            (Values::Bytes(v), Cell::Binary(bytes)) => v.push(ByteArray::from(bytes.clone())),
            (Values::Fixed(v), Cell::Uuid(bytes)) => {
                v.push(FixedLenByteArray::from(bytes.to_vec()))
            }
            (Values::Fixed(v), Cell::Decimal(unscaled)) => {
                let IcebergType::Decimal { precision, .. } = ty else {
                    unreachable!("decimal cells are made for decimal columns")
                };
                let len = decimal_bytes(*precision);
                v.push(FixedLenByteArray::from(
                    unscaled.to_be_bytes()[16 - len..].to_vec(),
                ))
            }
            (_, other) => unreachable!("a {other:?} cell in a {ty} column"),
        }
    }

    fn write(self, writer: &mut ColumnWriter<'_>, required: bool) -> parquet::errors::Result<()> {
        let def = (!required || !self.def.is_empty()).then_some(&self.def[..]);
        let rep = (!self.rep.is_empty()).then_some(&self.rep[..]);
        match (writer, self.values) {
            (ColumnWriter::BoolColumnWriter(w), Values::Bool(v)) => {
                w.write_batch(&v, def, rep)?;
            }
            (ColumnWriter::Int32ColumnWriter(w), Values::I32(v)) => {
                w.write_batch(&v, def, rep)?;
            }
            (ColumnWriter::Int64ColumnWriter(w), Values::I64(v)) => {
                w.write_batch(&v, def, rep)?;
            }
            (ColumnWriter::FloatColumnWriter(w), Values::F32(v)) => {
                w.write_batch(&v, def, rep)?;
            }
            (ColumnWriter::DoubleColumnWriter(w), Values::F64(v)) => {
                w.write_batch(&v, def, rep)?;
            }
            (ColumnWriter::ByteArrayColumnWriter(w), Values::Bytes(v)) => {
                w.write_batch(&v, def, rep)?;
            }
            (ColumnWriter::FixedLenByteArrayColumnWriter(w), Values::Fixed(v)) => {
                w.write_batch(&v, def, rep)?;
            }
            _ => unreachable!("leaf values match their column's physical type"),
        }
        Ok(())
    }
}

/// The leaf column of `field` for `rows` (column `index` of each row).
fn leaf(field: &Field, index: usize, rows: &[&[Cell]]) -> Leaf {
    match &field.ty {
        IcebergType::List {
            element_required,
            element,
            ..
        } => {
            // Definition levels: the list present (unless required), the repeated group
            // entered, the element present (unless required).
            let base = i16::from(!field.required);
            let present = base + 1 + i16::from(!*element_required);
            let mut out = Leaf::new(element);
            for row in rows {
                match &row[index] {
                    Cell::List(items) if !items.is_empty() => {
                        for (i, item) in items.iter().enumerate() {
                            out.rep.push(i16::from(i > 0));
                            if matches!(item, Cell::Null) {
                                out.def.push(present - 1);
                                out.nulls += 1;
                            } else {
                                out.def.push(present);
                                out.push(item, element);
                            }
                        }
                    }
                    Cell::List(_) => {
                        out.rep.push(0);
                        out.def.push(base);
                    }
                    _ => {
                        out.rep.push(0);
                        out.def.push(0);
                        out.nulls += 1;
                    }
                }
            }
            out
        }
        ty => {
            let mut out = Leaf::new(ty);
            for row in rows {
                match &row[index] {
                    Cell::Null | Cell::Unavailable => {
                        out.def.push(0);
                        out.nulls += 1;
                    }
                    cell => {
                        if !field.required {
                            out.def.push(1);
                        }
                        out.push(cell, ty);
                    }
                }
            }
            out
        }
    }
}

/// `rows` (cells in the order of `fields`) as the bytes of a data file that will be `uri`.
pub fn write_data_file(
    uri: &str,
    fields: &[Field],
    rows: &[&[Cell]],
) -> Result<(Vec<u8>, WrittenFile), String> {
    let path = uri;
    let schema = message(fields)?;
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, properties())
        .map_err(|e| io_error(path, e))?;
    let mut written = WrittenFile {
        path: uri.to_owned(),
        record_count: rows.len() as i64,
        ..WrittenFile::default()
    };
    let mut group = writer.next_row_group().map_err(|e| io_error(path, e))?;
    for (index, field) in fields.iter().enumerate() {
        let column = leaf(field, index, rows);
        if !matches!(field.ty, IcebergType::List { .. }) {
            written.value_counts.push((field.id, rows.len() as i64));
            written.null_counts.push((field.id, column.nulls));
        }
        let mut writer = group
            .next_column()
            .map_err(|e| io_error(path, e))?
            .ok_or_else(|| io_error(path, "fewer columns than fields"))?;
        column
            .write(
                writer.untyped(),
                field.required && !matches!(field.ty, IcebergType::List { .. }),
            )
            .map_err(|e| io_error(path, e))?;
        writer.close().map_err(|e| io_error(path, e))?;
    }
    group.close().map_err(|e| io_error(path, e))?;
    let bytes = finish(writer, path, &mut written)?;
    Ok((bytes, written))
}

fn finish(
    writer: SerializedFileWriter<Vec<u8>>,
    path: &str,
    written: &mut WrittenFile,
) -> Result<Vec<u8>, String> {
    let bytes = writer.into_inner().map_err(|e| io_error(path, e))?;
    written.file_size = bytes.len() as i64;
    Ok(bytes)
}

/// Position deletes (`file_path`, `pos`; sorted here as the spec asks) as the bytes of a
/// delete file that will be `uri`.
pub fn write_delete_file(
    uri: &str,
    mut deletes: Vec<(Arc<str>, i64)>,
) -> Result<(Vec<u8>, WrittenFile), String> {
    let path = uri;
    deletes.sort();
    let fields = [
        Field {
            id: DELETE_FILE_PATH_ID,
            name: "file_path".into(),
            required: true,
            ty: IcebergType::String,
        },
        Field {
            id: DELETE_POS_ID,
            name: "pos".into(),
            required: true,
            ty: IcebergType::Long,
        },
    ];
    let schema = message(&fields)?;
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, properties())
        .map_err(|e| io_error(path, e))?;
    let mut group = writer.next_row_group().map_err(|e| io_error(path, e))?;
    let paths = Leaf {
        values: Values::Bytes(
            deletes
                .iter()
                .map(|(file, _)| ByteArray::from(file.as_bytes().to_vec()))
                .collect(),
        ),
        def: Vec::new(),
        rep: Vec::new(),
        nulls: 0,
    };
    let positions = Leaf {
        values: Values::I64(deletes.iter().map(|(_, pos)| *pos).collect()),
        def: Vec::new(),
        rep: Vec::new(),
        nulls: 0,
    };
    for column in [paths, positions] {
        let mut writer = group
            .next_column()
            .map_err(|e| io_error(path, e))?
            .ok_or_else(|| io_error(path, "fewer columns than fields"))?;
        column
            .write(writer.untyped(), true)
            .map_err(|e| io_error(path, e))?;
        writer.close().map_err(|e| io_error(path, e))?;
    }
    group.close().map_err(|e| io_error(path, e))?;
    let mut written = WrittenFile {
        path: uri.to_owned(),
        record_count: deletes.len() as i64,
        value_counts: vec![
            (DELETE_FILE_PATH_ID, deletes.len() as i64),
            (DELETE_POS_ID, deletes.len() as i64),
        ],
        null_counts: vec![(DELETE_FILE_PATH_ID, 0), (DELETE_POS_ID, 0)],
        ..WrittenFile::default()
    };
    let bytes = finish(writer, path, &mut written)?;
    Ok((bytes, written))
}

/// The values of the top-level columns `ids` (by field id) of every row of the Parquet file
/// `bytes` (read from `path`), in row order, as cells (`Cell::Null` for a column the file
/// lacks).
pub fn read_columns(bytes: Bytes, path: &str, ids: &[i32]) -> Result<Vec<Vec<Cell>>, String> {
    let reader = SerializedFileReader::new(bytes).map_err(|e| io_error(path, e))?;
    let root = reader.metadata().file_metadata().schema();
    let mut chosen = Vec::new();
    let mut slots = Vec::new();
    for (slot, id) in ids.iter().enumerate() {
        if let Some(field) = root.get_fields().iter().find(|f| {
            let info = f.get_basic_info();
            info.has_id() && info.id() == *id
        }) {
            chosen.push(Arc::clone(field));
            slots.push(slot);
        }
    }
    let rows = reader.metadata().file_metadata().num_rows() as usize;
    if chosen.is_empty() {
        return Ok(vec![vec![Cell::Null; ids.len()]; rows]);
    }
    let projection = Type::group_type_builder(root.name())
        .with_fields(chosen)
        .build()
        .map_err(|e| io_error(path, e))?;
    let mut out = Vec::with_capacity(rows);
    for row in reader
        .get_row_iter(Some(projection))
        .map_err(|e| io_error(path, e))?
    {
        let row = row.map_err(|e| io_error(path, e))?;
        let mut cells = vec![Cell::Null; ids.len()];
        for ((_, value), slot) in row.get_column_iter().zip(&slots) {
            cells[*slot] = record_cell(value);
        }
        out.push(cells);
    }
    Ok(out)
}

/// A value the record reader gives, as the cell of the same value (keys compare equal).
fn record_cell(field: &RecordField) -> Cell {
    match field {
        RecordField::Null => Cell::Null,
        RecordField::Bool(b) => Cell::Boolean(*b),
        RecordField::Byte(v) => Cell::Int((*v).into()),
        RecordField::Short(v) => Cell::Int((*v).into()),
        RecordField::Int(v) | RecordField::Date(v) | RecordField::TimeMillis(v) => Cell::Int(*v),
        RecordField::UByte(v) => Cell::Int((*v).into()),
        RecordField::UShort(v) => Cell::Int((*v).into()),
        RecordField::UInt(v) => Cell::Long((*v).into()),
        RecordField::ULong(v) => Cell::Decimal((*v).into()),
        RecordField::Long(v)
        | RecordField::TimeMicros(v)
        | RecordField::TimestampMillis(v)
        | RecordField::TimestampMicros(v) => Cell::Long(*v),
        RecordField::Float16(v) => Cell::Float(f32::from(*v)),
        RecordField::Float(v) => Cell::Float(*v),
        RecordField::Double(v) => Cell::Double(*v),
        RecordField::Decimal(d) => {
            let bytes = d.data();
            let mut value: i128 = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
                -1
            } else {
                0
            };
            for b in bytes {
                value = (value << 8) | i128::from(*b);
            }
            Cell::Decimal(value)
        }
        RecordField::Str(text) => Cell::String(text.as_str().into()),
        RecordField::Bytes(bytes) => Cell::Binary(bytes.data().to_vec()),
        RecordField::ListInternal(list) => {
            Cell::List(list.elements().iter().map(record_cell).collect())
        }
        RecordField::Group(_) | RecordField::MapInternal(_) => Cell::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_take_the_bytes_their_precision_needs() {
        assert_eq!(decimal_bytes(1), 1);
        assert_eq!(decimal_bytes(2), 1);
        assert_eq!(decimal_bytes(3), 2);
        assert_eq!(decimal_bytes(9), 4);
        assert_eq!(decimal_bytes(18), 8);
        assert_eq!(decimal_bytes(20), 9);
        assert_eq!(decimal_bytes(38), 16);
    }

    #[test]
    fn rows_written_read_back_by_field_id() {
        let fields = vec![
            Field {
                id: 1,
                name: "id".into(),
                required: true,
                ty: IcebergType::Long,
            },
            Field {
                id: 2,
                name: "name".into(),
                required: false,
                ty: IcebergType::String,
            },
            Field {
                id: 3,
                name: "tags".into(),
                required: false,
                ty: IcebergType::List {
                    element_id: 5,
                    element_required: false,
                    element: Box::new(IcebergType::Int),
                },
            },
            Field {
                id: 4,
                name: "price".into(),
                required: false,
                ty: IcebergType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            },
        ];
        let rows = [
            vec![
                Cell::Long(1),
                Cell::String("a".into()),
                Cell::List(vec![Cell::Int(1), Cell::Null]),
                Cell::Decimal(-1234),
            ],
            vec![Cell::Long(2), Cell::Null, Cell::List(vec![]), Cell::Null],
            vec![
                Cell::Long(3),
                Cell::String("c".into()),
                Cell::Null,
                Cell::Decimal(5),
            ],
        ];
        let refs: Vec<&[Cell]> = rows.iter().map(|r| &r[..]).collect();
        let (bytes, written) = write_data_file("file:///d.parquet", &fields, &refs).unwrap();
        assert_eq!(written.file_size, bytes.len() as i64);
        assert_eq!(written.record_count, 3);
        assert_eq!(written.null_counts, vec![(1, 0), (2, 1), (4, 1)]);
        let read = read_columns(bytes.into(), "d", &[4, 1, 9]).unwrap();
        assert_eq!(
            read,
            vec![
                vec![Cell::Decimal(-1234), Cell::Long(1), Cell::Null],
                vec![Cell::Null, Cell::Long(2), Cell::Null],
                vec![Cell::Decimal(5), Cell::Long(3), Cell::Null],
            ]
        );
        let (deletes, _) =
            write_delete_file("file:///x", vec![("b".into(), 2), ("a".into(), 7)]).unwrap();
        let read =
            read_columns(deletes.into(), "x", &[DELETE_FILE_PATH_ID, DELETE_POS_ID]).unwrap();
        assert_eq!(read[0], vec![Cell::String("a".into()), Cell::Long(7)]);
    }
}
