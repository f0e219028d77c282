//! Values as an Iceberg column of a given type holds them ([`Cell`]), converted once when a
//! change arrives (so a value the table cannot hold is refused with its row, not at commit),
//! and the bytes that identify a row's key in the sink's index.

use sluice_core::value::{self, Date, Decimal, Text, Timestamp, Value};

use super::schema::IcebergType;
use crate::convert::{integer, kind, unscaled, write_text};

/// A value of an Iceberg column.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Boolean(bool),
    /// int and date (days).
    Int(i32),
    /// long, time, timestamp and timestamptz (microseconds).
    Long(i64),
    Float(f32),
    Double(f64),
    /// A decimal's unscaled value.
    Decimal(i128),
    String(Text),
    Binary(Vec<u8>),
    Uuid([u8; 16]),
    List(Vec<Cell>),
    /// The source did not send the value (an unchanged TOASTed column): it is the row's
    /// previous one.
    Unavailable,
}

/// Converts `value` to a cell of type `ty`; `Err` says why it cannot be.
pub fn cell(ty: &IcebergType, value: &Value) -> Result<Cell, String> {
    if matches!(value, Value::Null) {
        return Ok(Cell::Null);
    }
    if matches!(value, Value::Unavailable) {
        return Ok(Cell::Unavailable);
    }
    let mismatch = || {
        format!(
            "a {} value does not fit an Iceberg {ty} column",
            kind(value)
        )
    };
    Ok(match ty {
        IcebergType::Boolean => match value {
            Value::Bool(b) => Cell::Boolean(*b),
            _ => return Err(mismatch()),
        },
        IcebergType::Int => {
            let v = integer(value).ok_or_else(mismatch)?;
            Cell::Int(i32::try_from(v).map_err(|_| format!("{v} does not fit an int column"))?)
        }
        IcebergType::Long => {
            let v = integer(value).ok_or_else(mismatch)?;
            Cell::Long(i64::try_from(v).map_err(|_| format!("{v} does not fit a long column"))?)
        }
        IcebergType::Float => match value {
            Value::Float32(v) => Cell::Float(*v),
            _ => return Err(mismatch()),
        },
        IcebergType::Double => match value {
            Value::Float32(v) => Cell::Double(f64::from(*v)),
            Value::Float64(v) => Cell::Double(*v),
            _ => return Err(mismatch()),
        },
        IcebergType::Decimal { precision, scale } => {
            let unscaled_value = match value {
                Value::Decimal(Decimal::Finite(digits)) => unscaled(digits, *precision, *scale),
                other => integer(other).and_then(|v| {
                    let v = v.checked_mul(10i128.checked_pow(*scale)?)?;
                    (v.unsigned_abs() < 10u128.pow(*precision)).then_some(v)
                }),
            };
            match (unscaled_value, value) {
                (Some(v), _) => Cell::Decimal(v),
                (None, Value::Decimal(Decimal::Finite(_)) | Value::UInt64(_) | Value::Int64(_)) => {
                    let mut text = String::new();
                    write_text(&mut text, value);
                    return Err(format!("{text} does not fit {ty}"));
                }
                (None, Value::Decimal(_)) => {
                    return Err(format!(
                        "{ty} has no NaN or infinity (the source's numeric does)"
                    ))
                }
                _ => return Err(mismatch()),
            }
        }
        IcebergType::Date => match value {
            Value::Date(Date::Days(days)) => Cell::Int(*days),
            Value::Date(_) => return Err("an Iceberg date has no infinity".into()),
            _ => return Err(mismatch()),
        },
        IcebergType::Time => match value {
            Value::Time(micros) => Cell::Long(*micros),
            _ => return Err(mismatch()),
        },
        IcebergType::Timestamp | IcebergType::TimestampTz => match value {
            Value::Timestamp(Timestamp::Micros(micros))
            | Value::TimestampTz(Timestamp::Micros(micros)) => Cell::Long(*micros),
            Value::Date(Date::Days(days)) => Cell::Long(i64::from(*days) * value::MICROS_PER_DAY),
            Value::Timestamp(_) | Value::TimestampTz(_) => {
                return Err("an Iceberg timestamp has no infinity".into())
            }
            _ => return Err(mismatch()),
        },
        IcebergType::String => match value {
            Value::Text(text) => Cell::String(text.clone()),
            Value::Json(text) | Value::Enum(text) => Cell::String(text.as_str().into()),
            other => {
                let mut text = String::new();
                write_text(&mut text, other);
                Cell::String(text.into())
            }
        },
        IcebergType::Uuid => match value {
            Value::Uuid(bytes) => Cell::Uuid(*bytes),
            _ => return Err(mismatch()),
        },
        IcebergType::Binary => match value {
            Value::Bytes(bytes) => Cell::Binary(bytes.to_vec()),
            Value::Text(text) => Cell::Binary(text.as_bytes().to_vec()),
            _ => return Err(mismatch()),
        },
        IcebergType::List { element, .. } => match value {
            Value::Array(items) => Cell::List(
                items
                    .iter()
                    .map(|item| cell(element, item))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Set(labels) => Cell::List(
                labels
                    .iter()
                    .map(|label| Cell::String(label.as_str().into()))
                    .collect(),
            ),
            _ => return Err(mismatch()),
        },
        IcebergType::Other(name) => {
            return Err(format!(
                "the table's column type {name} is not one sluice writes"
            ))
        }
    })
}

/// Appends the bytes that identify `cell` as part of a key: the same for a value whatever
/// width its column had when the row was written (an int key read from an old file equals
/// the long it was widened to).
pub fn push_key(out: &mut Vec<u8>, cell: &Cell) {
    match cell {
        Cell::Null | Cell::Unavailable => out.push(0),
        Cell::Boolean(b) => out.extend_from_slice(&[1, u8::from(*b)]),
        Cell::Int(v) => {
            out.push(2);
            out.extend_from_slice(&i64::from(*v).to_le_bytes());
        }
        Cell::Long(v) => {
            out.push(2);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Cell::Float(v) => {
            out.push(3);
            out.extend_from_slice(&f64::from(*v).to_bits().to_le_bytes());
        }
        Cell::Double(v) => {
            out.push(3);
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        Cell::Decimal(v) => {
            out.push(4);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Cell::String(text) => push_bytes(out, 5, text.as_bytes()),
        Cell::Binary(bytes) => push_bytes(out, 6, bytes),
        Cell::Uuid(bytes) => push_bytes(out, 6, bytes),
        Cell::List(items) => {
            out.push(7);
            out.extend_from_slice(&(items.len() as u32).to_le_bytes());
            for item in items {
                push_key(out, item);
            }
        }
    }
}

fn push_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A row's key as the sink's maps hold it (the bytes [`push_key`] writes): inline up to
/// [`INLINE_KEY`] bytes, as every number, UUID and short text key is, so a map of a million
/// keys holds no allocation per key and a lookup reads no memory outside the map.
#[derive(Clone)]
pub enum RowKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

/// The longest key a [`RowKey`] holds inline (the key of one or two numbers, or a UUID, fits).
pub const INLINE_KEY: usize = 22;

impl RowKey {
    /// The key of `cells` (in key order); `scratch` is reused between calls.
    pub fn of<'a>(scratch: &mut Vec<u8>, cells: impl IntoIterator<Item = &'a Cell>) -> RowKey {
        scratch.clear();
        for cell in cells {
            push_key(scratch, cell);
        }
        RowKey::from(&scratch[..])
    }
}

impl From<&[u8]> for RowKey {
    fn from(key: &[u8]) -> RowKey {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE_KEY => {
                let mut bytes = [0; INLINE_KEY];
                bytes[..key.len()].copy_from_slice(key);
                RowKey::Inline { len, bytes }
            }
            _ => RowKey::Heap(key.into()),
        }
    }
}

impl std::ops::Deref for RowKey {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            RowKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            RowKey::Heap(bytes) => bytes,
        }
    }
}

impl std::borrow::Borrow<[u8]> for RowKey {
    fn borrow(&self) -> &[u8] {
        self
    }
}

// Hashed and compared as the bytes (as `Borrow<[u8]>` requires), whichever way they are held.
impl std::hash::Hash for RowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl PartialEq for RowKey {
    fn eq(&self, other: &RowKey) -> bool {
        **self == **other
    }
}

impl Eq for RowKey {}

impl std::fmt::Debug for RowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RowKey({:02x?})", &**self)
    }
}

/// The memory `cell` takes, its heap included: what commits are sized by.
pub fn size(cell: &Cell) -> usize {
    std::mem::size_of::<Cell>()
        + match cell {
            // Inline up to 24 bytes.
            Cell::String(text) if text.len() > 24 => text.len(),
            Cell::Binary(bytes) => bytes.len(),
            Cell::List(items) => items.iter().map(size).sum::<usize>(),
            _ => 0,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_cells_of_their_column_or_say_why_not() {
        let decimal = IcebergType::Decimal {
            precision: 6,
            scale: 2,
        };
        let d = |text: &str| Value::Decimal(Decimal::parse(text).unwrap());
        assert_eq!(cell(&decimal, &d("-12.3")).unwrap(), Cell::Decimal(-1230));
        assert_eq!(
            cell(&decimal, &Value::Int32(7)).unwrap(),
            Cell::Decimal(700)
        );
        assert!(cell(&decimal, &d("12345.6"))
            .unwrap_err()
            .contains("does not fit"));
        assert!(cell(&decimal, &Value::Decimal(Decimal::NaN))
            .unwrap_err()
            .contains("NaN"));
        assert_eq!(
            cell(&IcebergType::Long, &Value::UInt32(7)).unwrap(),
            Cell::Long(7)
        );
        assert!(cell(&IcebergType::Int, &Value::Int64(1 << 40)).is_err());
        assert_eq!(
            cell(&IcebergType::String, &Value::Json("{\"a\":1}".into())).unwrap(),
            Cell::String("{\"a\":1}".into())
        );
        assert!(
            cell(&IcebergType::Date, &Value::Date(Date::PositiveInfinity))
                .unwrap_err()
                .contains("infinity")
        );
        let mut int_key = Vec::new();
        push_key(&mut int_key, &Cell::Int(5));
        let mut long_key = Vec::new();
        push_key(&mut long_key, &Cell::Long(5));
        assert_eq!(int_key, long_key);
    }

    #[test]
    fn row_keys_are_their_bytes_inline_or_not() {
        use std::collections::HashSet;
        assert_eq!(std::mem::size_of::<RowKey>(), 24);
        let mut scratch = Vec::new();
        let int = RowKey::of(&mut scratch, [&Cell::Int(5)]);
        assert!(matches!(int, RowKey::Inline { len: 9, .. }));
        let long_text = Cell::String("a key longer than twenty-two bytes".into());
        let long = RowKey::of(&mut scratch, [&Cell::Int(5), &long_text]);
        assert!(matches!(long, RowKey::Heap(_)));
        let mut bytes = Vec::new();
        push_key(&mut bytes, &Cell::Int(5));
        push_key(&mut bytes, &long_text);
        assert_eq!(&*long, &bytes[..]);
        // A set finds either kind by its bytes.
        let keys: HashSet<RowKey> = [int.clone(), long.clone()].into_iter().collect();
        assert!(keys.contains(&bytes[..]));
        assert!(keys.contains(&*RowKey::of(&mut scratch, [&Cell::Long(5)])));
        assert!(!keys.contains(&*RowKey::of(&mut scratch, [&Cell::Long(6)])));
    }
}
