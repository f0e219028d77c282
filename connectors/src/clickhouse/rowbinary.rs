//! Values in ClickHouse's RowBinary format, written into the column type the table has (which
//! may be wider than the source's, or text), and read back far enough to cut a row into its
//! columns (`value_len`), which is how unchanged TOASTed values are filled in from the table.
//!
//! RowBinary: fixed-size numbers little-endian; strings as a LEB128 length and the bytes;
//! `Nullable` as a 0/1 byte before the value; arrays as a LEB128 count and the items; UUIDs as
//! their two 64-bit halves, each little-endian; dates as days, `DateTime` as seconds and
//! `DateTime64(p)` as ticks since 1970; decimals as their unscaled integer of 4, 8 or 16 bytes.

use sluice_core::value::{Date, Decimal, Timestamp, Value, MICROS_PER_DAY, MICROS_PER_SECOND};

use super::types::ChType;
pub use crate::convert::write_text;
use crate::convert::{integer, kind, unscaled};

/// Days of 1900-01-01 and 2299-12-31 since 1970: the range of `Date32` and `DateTime64`.
const FIRST_DAY_1900: i64 = -25_567;
const LAST_DAY_2299: i64 = 120_529;

/// Writes `value` as a value of `ty`; `Err` says why it cannot be.
pub fn write(out: &mut Vec<u8>, ty: &ChType, value: &Value) -> Result<(), String> {
    match (ty, value) {
        (ChType::Nullable(_), Value::Null) => {
            out.push(1);
            Ok(())
        }
        (ChType::Nullable(inner), _) => {
            out.push(0);
            write(out, inner, value)
        }
        (ChType::LowCardinality(inner), _) => write(out, inner, value),
        // Arrays cannot be Nullable in ClickHouse: a NULL array is an empty one.
        (ChType::Array(_), Value::Null) => {
            write_len(out, 0);
            Ok(())
        }
        (_, Value::Null) => Err(format!(
            "NULL in a column of type {ty}, which is not Nullable"
        )),
        (_, Value::Unavailable) => {
            Err("a value the source did not send (an unchanged TOASTed column)".into())
        }
        (ChType::Bool | ChType::UInt(8), Value::Bool(b)) => {
            out.push(u8::from(*b));
            Ok(())
        }
        (ChType::Int(bits), _) => match integer(value) {
            Some(v) => write_int(out, *bits, v, ty),
            None => Err(mismatch(ty, value)),
        },
        (ChType::UInt(bits), _) => match integer(value) {
            Some(v) => write_uint(out, *bits, v, ty),
            None => Err(mismatch(ty, value)),
        },
        (ChType::Bool, _) => match integer(value) {
            Some(v @ (0 | 1)) => {
                out.push(v as u8);
                Ok(())
            }
            _ => Err(mismatch(ty, value)),
        },
        (ChType::Float32, Value::Float32(v)) => {
            out.extend_from_slice(&v.to_le_bytes());
            Ok(())
        }
        (ChType::Float64, Value::Float32(v)) => {
            out.extend_from_slice(&f64::from(*v).to_le_bytes());
            Ok(())
        }
        (ChType::Float64, Value::Float64(v)) => {
            out.extend_from_slice(&v.to_le_bytes());
            Ok(())
        }
        (ChType::Float32 | ChType::Float64, _) => match integer(value) {
            Some(v) if ty == &ChType::Float32 => {
                out.extend_from_slice(&(v as f32).to_le_bytes());
                Ok(())
            }
            Some(v) => {
                out.extend_from_slice(&(v as f64).to_le_bytes());
                Ok(())
            }
            None => Err(mismatch(ty, value)),
        },
        (ChType::Decimal { precision, scale }, _) => {
            let digits = match value {
                Value::Decimal(Decimal::Finite(text)) => text.to_string(),
                Value::Decimal(special) => {
                    return Err(format!(
                        "{special} does not fit {ty} (it has no NaN or infinity)"
                    ))
                }
                _ => match integer(value) {
                    Some(v) => v.to_string(),
                    None => return Err(mismatch(ty, value)),
                },
            };
            let unscaled = unscaled(&digits, *precision, *scale)
                .ok_or_else(|| format!("{digits} does not fit {ty}"))?;
            match precision {
                0..=9 => out.extend_from_slice(&(unscaled as i32).to_le_bytes()),
                10..=18 => out.extend_from_slice(&(unscaled as i64).to_le_bytes()),
                _ => out.extend_from_slice(&unscaled.to_le_bytes()),
            }
            Ok(())
        }
        (ChType::String, Value::Text(text)) => {
            write_bytes(out, text.as_bytes());
            Ok(())
        }
        (ChType::String, Value::Enum(label)) => {
            write_bytes(out, label.as_bytes());
            Ok(())
        }
        (ChType::String, Value::Bytes(bytes)) => {
            write_bytes(out, bytes);
            Ok(())
        }
        (ChType::String, Value::Json(text)) => {
            write_bytes(out, text.as_bytes());
            Ok(())
        }
        (ChType::String, _) => {
            let mut text = String::new();
            write_text(&mut text, value);
            write_bytes(out, text.as_bytes());
            Ok(())
        }
        (ChType::FixedString(len), _) => {
            let bytes: &[u8] = match value {
                Value::Text(text) => text.as_bytes(),
                Value::Enum(label) => label.as_bytes(),
                Value::Bytes(bytes) => bytes,
                _ => return Err(mismatch(ty, value)),
            };
            if bytes.len() > *len {
                return Err(format!("{} bytes do not fit {ty}", bytes.len()));
            }
            out.extend_from_slice(bytes);
            out.resize(out.len() + len - bytes.len(), 0);
            Ok(())
        }
        (ChType::Uuid, Value::Uuid(bytes)) => {
            out.extend(bytes[..8].iter().rev());
            out.extend(bytes[8..].iter().rev());
            Ok(())
        }
        (ChType::Date, Value::Date(Date::Days(days))) => match u16::try_from(*days) {
            Ok(days) => {
                out.extend_from_slice(&days.to_le_bytes());
                Ok(())
            }
            Err(_) => Err(out_of_range(value, ty, "1970-01-01 to 2149-06-06")),
        },
        (ChType::Date32, Value::Date(Date::Days(days))) => {
            if (FIRST_DAY_1900..=LAST_DAY_2299).contains(&i64::from(*days)) {
                out.extend_from_slice(&days.to_le_bytes());
                Ok(())
            } else {
                Err(out_of_range(value, ty, "1900-01-01 to 2299-12-31"))
            }
        }
        (ChType::DateTime { .. }, _) => {
            let micros = instant(value).ok_or_else(|| mismatch(ty, value))?;
            match u32::try_from(micros.div_euclid(MICROS_PER_SECOND)) {
                Ok(seconds) => {
                    out.extend_from_slice(&seconds.to_le_bytes());
                    Ok(())
                }
                Err(_) => Err(out_of_range(value, ty, "1970-01-01 to 2106-02-07")),
            }
        }
        (ChType::DateTime64 { precision, .. }, _) => {
            let micros = instant(value).ok_or_else(|| mismatch(ty, value))?;
            let days = micros.div_euclid(MICROS_PER_DAY);
            if !(FIRST_DAY_1900..=LAST_DAY_2299).contains(&days) {
                return Err(out_of_range(value, ty, "1900-01-01 to 2299-12-31"));
            }
            let ticks = match precision {
                0..=6 => micros.div_euclid(10i64.pow(6 - precision)),
                7..=9 => micros * 10i64.pow(precision - 6),
                _ => return Err(format!("{ty} has a precision sluice does not write")),
            };
            out.extend_from_slice(&ticks.to_le_bytes());
            Ok(())
        }
        (ChType::Array(inner), Value::Array(items)) => {
            write_len(out, items.len());
            items.iter().try_for_each(|item| write(out, inner, item))
        }
        (ChType::Array(inner), Value::Set(labels)) => {
            write_len(out, labels.len());
            labels
                .iter()
                .try_for_each(|label| write(out, inner, &Value::Text(label.into())))
        }
        (ChType::Other(name), _) => Err(format!(
            "the column has type {name}, which sluice does not write; change the column's type \
             (docs/warehouses.md lists the types) or drop the table to have it recreated"
        )),
        _ => Err(mismatch(ty, value)),
    }
}

/// Writes the type's default (zero, empty, NULL): columns of a deleted row the source did
/// not send.
pub fn write_default(out: &mut Vec<u8>, ty: &ChType) {
    let zeros = |out: &mut Vec<u8>, n: usize| out.resize(out.len() + n, 0);
    match ty {
        ChType::Nullable(_) => out.push(1),
        ChType::LowCardinality(inner) => write_default(out, inner),
        ChType::Bool | ChType::Int(8) | ChType::UInt(8) => zeros(out, 1),
        ChType::Int(bits) | ChType::UInt(bits) => zeros(out, usize::from(*bits / 8)),
        ChType::Float32 | ChType::Date32 | ChType::DateTime { .. } => zeros(out, 4),
        ChType::Float64 | ChType::DateTime64 { .. } => zeros(out, 8),
        ChType::Decimal { precision, .. } => zeros(out, decimal_size(*precision)),
        ChType::String | ChType::Array(_) | ChType::Other(_) => out.push(0),
        ChType::FixedString(len) => zeros(out, *len),
        ChType::Uuid => zeros(out, 16),
        ChType::Date => zeros(out, 2),
    }
}

/// The length of the value of type `ty` at the start of `input` (None: the input ends
/// first, or the type is one sluice does not read).
pub fn value_len(input: &[u8], ty: &ChType) -> Option<usize> {
    let fixed = |n: usize| (input.len() >= n).then_some(n);
    match ty {
        ChType::Nullable(inner) => match input.first()? {
            1 => Some(1),
            _ => Some(1 + value_len(&input[1..], inner)?),
        },
        ChType::LowCardinality(inner) => value_len(input, inner),
        ChType::Bool => fixed(1),
        ChType::Int(bits) | ChType::UInt(bits) => fixed(usize::from(*bits / 8)),
        ChType::Float32 | ChType::Date32 | ChType::DateTime { .. } => fixed(4),
        ChType::Float64 | ChType::DateTime64 { .. } => fixed(8),
        ChType::Decimal { precision, .. } => fixed(decimal_size(*precision)),
        ChType::FixedString(len) => fixed(*len),
        ChType::Uuid => fixed(16),
        ChType::Date => fixed(2),
        ChType::String => {
            let (len, header) = read_len(input)?;
            fixed(header + len)
        }
        ChType::Array(inner) => {
            let (count, mut at) = read_len(input)?;
            for _ in 0..count {
                at += value_len(input.get(at..)?, inner)?;
            }
            Some(at)
        }
        ChType::Other(_) => None,
    }
}

fn decimal_size(precision: u32) -> usize {
    match precision {
        0..=9 => 4,
        10..=18 => 8,
        _ => 16,
    }
}

pub fn write_len(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_len(input: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for (i, byte) in input.iter().enumerate().take(10) {
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((len, i + 1));
        }
    }
    None
}

pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn write_int(out: &mut Vec<u8>, bits: u8, v: i128, ty: &ChType) -> Result<(), String> {
    let fits = |min: i128, max: i128| (min..=max).contains(&v);
    match bits {
        8 if fits(i8::MIN.into(), i8::MAX.into()) => out.push(v as i8 as u8),
        16 if fits(i16::MIN.into(), i16::MAX.into()) => {
            out.extend_from_slice(&(v as i16).to_le_bytes())
        }
        32 if fits(i32::MIN.into(), i32::MAX.into()) => {
            out.extend_from_slice(&(v as i32).to_le_bytes())
        }
        64 if fits(i64::MIN.into(), i64::MAX.into()) => {
            out.extend_from_slice(&(v as i64).to_le_bytes())
        }
        _ => return Err(format!("{v} does not fit {ty}")),
    }
    Ok(())
}

fn write_uint(out: &mut Vec<u8>, bits: u8, v: i128, ty: &ChType) -> Result<(), String> {
    let fits = |max: u64| v >= 0 && v <= i128::from(max);
    match bits {
        8 if fits(u8::MAX.into()) => out.push(v as u8),
        16 if fits(u16::MAX.into()) => out.extend_from_slice(&(v as u16).to_le_bytes()),
        32 if fits(u32::MAX.into()) => out.extend_from_slice(&(v as u32).to_le_bytes()),
        64 if fits(u64::MAX) => out.extend_from_slice(&(v as u64).to_le_bytes()),
        _ => return Err(format!("{v} does not fit {ty}")),
    }
    Ok(())
}

/// Microseconds since 1970 of a timestamp (a wall clock read as UTC) or a date's midnight.
fn instant(value: &Value) -> Option<i64> {
    match value {
        Value::Timestamp(Timestamp::Micros(micros))
        | Value::TimestampTz(Timestamp::Micros(micros)) => Some(*micros),
        Value::Date(Date::Days(days)) => Some(i64::from(*days) * MICROS_PER_DAY),
        _ => None,
    }
}

fn mismatch(ty: &ChType, value: &Value) -> String {
    format!("a {} value does not fit a column of type {ty}", kind(value))
}

fn out_of_range(value: &Value, ty: &ChType, range: &str) -> String {
    let mut text = String::new();
    write_text(&mut text, value);
    format!("{text} is outside what {ty} holds ({range})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::value::Interval;

    fn bytes(ty: &str, value: Value) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        write(&mut out, &ChType::parse(ty), &value).map(|()| out)
    }

    #[test]
    fn values_encode_as_clickhouse_reads_them() {
        assert_eq!(
            bytes("Int64", Value::Int32(-2)).unwrap(),
            (-2i64).to_le_bytes()
        );
        assert_eq!(bytes("Nullable(String)", Value::Null).unwrap(), [1]);
        assert_eq!(
            bytes("Nullable(String)", Value::Text("ab".into())).unwrap(),
            [0, 2, b'a', b'b']
        );
        // What ClickHouse 18.16 printed for toUUID('00112233-4455-6677-8899-aabbccddeeff').
        let uuid = sluice_core::value::parse_uuid("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        assert_eq!(
            bytes("UUID", Value::Uuid(uuid)).unwrap(),
            [
                0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa,
                0x99, 0x88
            ]
        );
        // toDecimal32('-1.5', 2) and toDecimal128('1', 3), as 18.16 printed them.
        let dec = |t: &str| Value::Decimal(Decimal::Finite(t.into()));
        assert_eq!(
            bytes("Decimal(9, 2)", dec("-1.5")).unwrap(),
            (-150i32).to_le_bytes()
        );
        assert_eq!(
            bytes("Decimal(38, 3)", dec("1")).unwrap(),
            1000i128.to_le_bytes()
        );
        assert!(bytes("Decimal(5, 2)", dec("1234.5"))
            .unwrap_err()
            .contains("does not fit Decimal(5, 2)"));
        assert!(bytes("Decimal(5, 2)", dec("1.234")).is_err());
        assert!(bytes("Decimal(5, 2)", Value::Decimal(Decimal::NaN))
            .unwrap_err()
            .contains("NaN"));
        assert_eq!(
            bytes(
                "DateTime64(6, 'UTC')",
                Value::Timestamp(Timestamp::Micros(1_500_000))
            )
            .unwrap(),
            1_500_000i64.to_le_bytes()
        );
        assert_eq!(
            bytes(
                "DateTime('UTC')",
                Value::TimestampTz(Timestamp::Micros(1_500_000))
            )
            .unwrap(),
            1u32.to_le_bytes()
        );
        assert!(bytes("Date", Value::Date(Date::Days(-1)))
            .unwrap_err()
            .contains("1969-12-31 is outside what Date holds"));
        assert!(bytes("UInt8", Value::Int32(300)).is_err());
        assert!(bytes("Int32", Value::Null)
            .unwrap_err()
            .contains("not Nullable"));
        assert_eq!(
            bytes(
                "String",
                Value::Interval(Interval {
                    months: 14,
                    days: 0,
                    micros: 0
                })
            )
            .unwrap(),
            b"\x05P1Y2M"
        );
    }

    #[test]
    fn value_lengths_cut_rows_into_columns() {
        let ty = ChType::parse("Array(Nullable(String))");
        let value = Value::Array(vec![Value::Text("xyz".into()), Value::Null]);
        let mut out = Vec::new();
        write(&mut out, &ty, &value).unwrap();
        out.extend_from_slice(b"rest");
        assert_eq!(value_len(&out, &ty), Some(out.len() - 4));
        assert_eq!(value_len(&out[..3], &ty), None);
        let mut long = Vec::new();
        write_bytes(&mut long, &[b'a'; 300]);
        assert_eq!(value_len(&long, &ChType::String), Some(302));
        for ty in [
            "Int64",
            "Nullable(Decimal(20, 2))",
            "UUID",
            "Date",
            "String",
        ] {
            let ty = ChType::parse(ty);
            let mut out = Vec::new();
            write_default(&mut out, &ty);
            assert_eq!(value_len(&out, &ty), Some(out.len()), "{ty}");
        }
    }
}
