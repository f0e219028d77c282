//! MySQL values (as mysql_async delivers them, from snapshot queries in the binary protocol and
//! from binlog row events) into sluice's typed values. The two differ for a few types: in the
//! binlog ENUM is its index, SET a bitmask, TIMESTAMP epoch seconds and YEAR text.

use mysql_async::Value as My;
use sluice_core::value::{days_from_civil, Date, Decimal, Timestamp, Value, MICROS_PER_DAY};

use super::catalog::Kind;
use super::config::ZeroDates;

/// Where a value was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Snapshot,
    Binlog,
}

sluice_core::reason_error!(
    /// Why a column value the server sent cannot be read as its type (the value error names
    /// the table and column).
    pub(super) Unreadable
);

fn text(bytes: Vec<u8>, latin1: bool) -> Result<String, Unreadable> {
    if latin1 {
        return Ok(bytes.iter().map(|b| char::from(*b)).collect());
    }
    String::from_utf8(bytes).map_err(|_| Unreadable::from("holds bytes that are not UTF-8"))
}

fn int_of(value: &My) -> Option<i128> {
    match value {
        My::Int(i) => Some(i128::from(*i)),
        My::UInt(u) => Some(i128::from(*u)),
        My::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        My::Float(f) => Some(*f as i128),
        My::Double(f) => Some(*f as i128),
        _ => None,
    }
}

/// Converts a snapshot value the protocol sent as a string, without copying it first: text and
/// decimals (short ones stay inline in the value); `None` for the other kinds, which go
/// through [`convert`].
pub(super) fn convert_snapshot_bytes(
    bytes: &[u8],
    kind: &Kind,
) -> Option<Result<Value, Unreadable>> {
    let text = || {
        std::str::from_utf8(bytes).map_err(|_| Unreadable::from("holds bytes that are not UTF-8"))
    };
    match kind {
        // The snapshot session's character set is utf8mb4 whatever the column's.
        Kind::Text { .. } => Some(text().map(|t| Value::Text(t.into()))),
        Kind::Decimal => Some(decimal(bytes)),
        _ => None,
    }
}

/// A DECIMAL as the server prints it (the snapshot and the binlog alike).
fn decimal(bytes: &[u8]) -> Result<Value, Unreadable> {
    let text = std::str::from_utf8(bytes).map_err(|_| "holds an unreadable DECIMAL")?;
    Decimal::parse(text.trim_start_matches('+'))
        .map(Value::Decimal)
        .ok_or_else(|| Unreadable(format!("holds {text:?}, not a decimal")))
}

/// Converts one value of a column of `kind`.
pub(super) fn convert(
    value: My,
    kind: &Kind,
    origin: Origin,
    zero_dates: ZeroDates,
) -> Result<Value, Unreadable> {
    if let My::NULL = value {
        return Ok(Value::Null);
    }
    let zero = || {
        match zero_dates {
        ZeroDates::Null => Ok(Value::Null),
        ZeroDates::Error => Err(Unreadable::from("holds a zero date (0000-00-00); set zero_dates = \"null\" on the source to read it as NULL")),
    }
    };
    let unexpected = |value: &My| Unreadable(format!("holds {value:?}, unexpected for its type"));
    Ok(match kind {
        Kind::Int { unsigned, bits } => {
            let n = int_of(&value).ok_or_else(|| unexpected(&value))?;
            if *unsigned {
                // Without signedness metadata a binlog value of an unsigned column can arrive
                // negative: it is the same bits.
                let mask: u128 = if *bits >= 64 {
                    u128::from(u64::MAX)
                } else {
                    (1u128 << bits) - 1
                };
                let u = (n as u128 & mask) as u64;
                match bits {
                    8 => Value::UInt8(u as u8),
                    16 => Value::UInt16(u as u16),
                    24 | 32 => Value::UInt32(u as u32),
                    _ => Value::UInt64(u),
                }
            } else {
                // A signed MEDIUMINT can arrive from the binlog without its sign extended.
                let n = if *bits == 24 && (1 << 23..1 << 24).contains(&n) {
                    n - (1 << 24)
                } else {
                    n
                };
                let fit = |_| unexpected(&value);
                match bits {
                    8 => Value::Int8(i8::try_from(n).map_err(fit)?),
                    16 => Value::Int16(i16::try_from(n).map_err(fit)?),
                    24 | 32 => Value::Int32(i32::try_from(n).map_err(fit)?),
                    _ => Value::Int64(i64::try_from(n).map_err(fit)?),
                }
            }
        }
        Kind::Float => match value {
            My::Float(f) => Value::Float32(f),
            My::Double(f) => Value::Float32(f as f32),
            My::Bytes(b) => Value::Float32(
                std::str::from_utf8(&b)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or("holds an unreadable FLOAT")?,
            ),
            other => return Err(unexpected(&other)),
        },
        Kind::Double => match value {
            My::Double(f) => Value::Float64(f),
            My::Float(f) => Value::Float64(f64::from(f)),
            My::Bytes(b) => Value::Float64(
                std::str::from_utf8(&b)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or("holds an unreadable DOUBLE")?,
            ),
            other => return Err(unexpected(&other)),
        },
        Kind::Decimal => match value {
            My::Bytes(b) => decimal(&b)?,
            My::Int(i) => Value::Decimal(Decimal::Finite(i.to_string().into())),
            My::UInt(u) => Value::Decimal(Decimal::Finite(u.to_string().into())),
            other => return Err(unexpected(&other)),
        },
        Kind::Text { latin1 } => match value {
            // Snapshot queries get text converted to the session's utf8mb4; the binlog has the
            // column's own bytes.
            My::Bytes(b) => Value::Text(text(b, *latin1 && origin == Origin::Binlog)?.into()),
            other => return Err(unexpected(&other)),
        },
        Kind::Binary { pad } => match value {
            My::Bytes(mut b) => {
                if let Some(n) = pad {
                    if b.len() < *n {
                        b.resize(*n, 0);
                    }
                }
                Value::Bytes(b.into())
            }
            other => return Err(unexpected(&other)),
        },
        Kind::Bit { bits } => {
            let bytes = match value {
                My::Bytes(b) => b,
                My::Int(i) => i.to_be_bytes().to_vec(),
                My::UInt(u) => u.to_be_bytes().to_vec(),
                other => return Err(unexpected(&other)),
            };
            if *bits == 1 {
                Value::Bool(bytes.iter().any(|b| *b != 0))
            } else {
                let keep = (*bits as usize).div_ceil(8);
                let start = bytes.len().saturating_sub(keep);
                Value::Bytes(bytes[start..].to_vec().into())
            }
        }
        Kind::Json => match value {
            My::Bytes(b) => Value::Json(text(b, false)?),
            other => return Err(unexpected(&other)),
        },
        Kind::Enum(labels) => match (value, origin) {
            (My::Bytes(b), Origin::Snapshot) => Value::Enum(text(b, false)?),
            (value, _) => {
                let index = int_of(&value).ok_or_else(|| unexpected(&value))?;
                match usize::try_from(index)
                    .ok()
                    .filter(|i| *i >= 1)
                    .and_then(|i| labels.get(i - 1))
                {
                    Some(label) => Value::Enum(label.clone()),
                    // Index 0 is MySQL's invalid-value '' entry.
                    None if index == 0 => Value::Enum(String::new()),
                    None => {
                        return Err(format!(
                            "holds enum index {index}, beyond its {} labels",
                            labels.len()
                        )
                        .into())
                    }
                }
            }
        },
        Kind::Set(labels) => match (value, origin) {
            (My::Bytes(b), Origin::Snapshot) => {
                let t = text(b, false)?;
                Value::Set(if t.is_empty() {
                    Vec::new()
                } else {
                    t.split(',').map(str::to_owned).collect()
                })
            }
            (value, _) => {
                let bits: u64 = match &value {
                    My::Bytes(b) => b
                        .iter()
                        .rev()
                        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte)),
                    other => int_of(other).ok_or_else(|| unexpected(other))? as u64,
                };
                Value::Set(
                    labels
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i < 64 && bits & (1 << i) != 0)
                        .map(|(_, l)| l.clone())
                        .collect(),
                )
            }
        },
        Kind::Date => match value {
            My::Date(0, 0, 0, ..) => return zero(),
            My::Date(y, m, d, ..) if m == 0 || d == 0 => {
                return Err(format!("holds the partial date {y:04}-{m:02}-{d:02}").into())
            }
            My::Date(y, m, d, ..) => Value::Date(Date::Days(
                i32::try_from(days_from_civil(i64::from(y), u32::from(m), u32::from(d)))
                    .map_err(|_| "date out of range")?,
            )),
            other => return Err(unexpected(&other)),
        },
        Kind::DateTime => match value {
            My::Date(0, 0, 0, ..) => return zero(),
            My::Date(y, mo, d, h, mi, s, us) => {
                Value::Timestamp(Timestamp::Micros(micros(y, mo, d, h, mi, s, us)))
            }
            other => return Err(unexpected(&other)),
        },
        Kind::Timestamp => match value {
            My::Date(0, 0, 0, ..) => return zero(),
            My::Date(y, mo, d, h, mi, s, us) => {
                Value::TimestampTz(Timestamp::Micros(micros(y, mo, d, h, mi, s, us)))
            }
            // Binlog: epoch seconds, as text "sec[.usec]" (TIMESTAMP2) or an integer.
            My::Bytes(b) => {
                let t = std::str::from_utf8(&b).map_err(|_| "holds an unreadable TIMESTAMP")?;
                let (sec, frac) = t.split_once('.').unwrap_or((t, "0"));
                let sec: i64 = sec
                    .parse()
                    .map_err(|_| format!("holds {t:?}, not a TIMESTAMP"))?;
                let mut usec: i64 = frac
                    .parse()
                    .map_err(|_| format!("holds {t:?}, not a TIMESTAMP"))?;
                for _ in frac.len()..6 {
                    usec *= 10;
                }
                if sec == 0 && usec == 0 {
                    return zero();
                }
                Value::TimestampTz(Timestamp::Micros(sec * 1_000_000 + usec))
            }
            My::Int(0) => return zero(),
            My::Int(sec) => Value::TimestampTz(Timestamp::Micros(sec * 1_000_000)),
            other => return Err(unexpected(&other)),
        },
        Kind::Time => match value {
            My::Time(negative, days, h, m, s, us) => {
                let micros = i64::from(days) * MICROS_PER_DAY
                    + ((i64::from(h) * 60 + i64::from(m)) * 60 + i64::from(s)) * 1_000_000
                    + i64::from(us);
                Value::Time(if negative { -micros } else { micros })
            }
            other => return Err(unexpected(&other)),
        },
        Kind::Year => Value::Int16(
            int_of(&value)
                .and_then(|y| i16::try_from(y).ok())
                .ok_or_else(|| unexpected(&value))?,
        ),
        Kind::Unknown(type_name) => {
            return Err(format!("has type {type_name}, which sluice cannot map").into())
        }
    })
}

fn micros(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> i64 {
    let days = days_from_civil(i64::from(y), u32::from(mo.max(1)), u32::from(d.max(1)));
    days * MICROS_PER_DAY
        + ((i64::from(h) * 60 + i64::from(mi)) * 60 + i64::from(s)) * 1_000_000
        + i64::from(us)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(value: My, kind: Kind, origin: Origin) -> Value {
        convert(value, &kind, origin, ZeroDates::Null).unwrap()
    }

    #[test]
    fn binlog_and_snapshot_forms_agree() {
        let labels = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(
            c(My::Int(2), Kind::Enum(labels.clone()), Origin::Binlog),
            Value::Enum("b".into())
        );
        assert_eq!(
            c(
                My::Bytes(b"b".to_vec()),
                Kind::Enum(labels.clone()),
                Origin::Snapshot
            ),
            Value::Enum("b".into())
        );
        assert_eq!(
            c(
                My::Bytes(vec![0b101]),
                Kind::Set(labels.clone()),
                Origin::Binlog
            ),
            Value::Set(vec!["a".into(), "c".into()])
        );
        assert_eq!(
            c(
                My::Bytes(b"a,c".to_vec()),
                Kind::Set(labels),
                Origin::Snapshot
            ),
            Value::Set(vec!["a".into(), "c".into()])
        );
        assert_eq!(
            c(
                My::Bytes(b"1700000000.5".to_vec()),
                Kind::Timestamp,
                Origin::Binlog
            ),
            Value::TimestampTz(Timestamp::Micros(1_700_000_000_500_000))
        );
        assert_eq!(
            c(
                My::Date(2023, 11, 14, 22, 13, 20, 500_000),
                Kind::Timestamp,
                Origin::Snapshot
            ),
            Value::TimestampTz(Timestamp::Micros(1_700_000_000_500_000))
        );
        assert_eq!(
            c(
                My::Int(-1),
                Kind::Int {
                    unsigned: true,
                    bits: 64
                },
                Origin::Binlog
            ),
            Value::UInt64(u64::MAX)
        );
        assert_eq!(
            c(
                My::Int(-1),
                Kind::Int {
                    unsigned: true,
                    bits: 24
                },
                Origin::Binlog
            ),
            Value::UInt32(0xff_ffff)
        );
        assert_eq!(
            c(
                My::Date(0, 0, 0, 0, 0, 0, 0),
                Kind::DateTime,
                Origin::Binlog
            ),
            Value::Null
        );
        assert!(convert(
            My::Date(0, 0, 0, 0, 0, 0, 0),
            &Kind::Date,
            Origin::Binlog,
            ZeroDates::Error
        )
        .is_err());
        assert_eq!(
            c(My::Time(true, 1, 2, 3, 4, 5), Kind::Time, Origin::Binlog),
            Value::Time(-(MICROS_PER_DAY + 7_384_000_005))
        );
        assert_eq!(
            c(My::Bytes(vec![1]), Kind::Bit { bits: 1 }, Origin::Binlog),
            Value::Bool(true)
        );
        assert_eq!(
            c(
                My::Bytes(vec![0xe9]),
                Kind::Text { latin1: true },
                Origin::Binlog
            ),
            Value::Text("é".into())
        );
        assert_eq!(
            c(My::Bytes(b"2024".to_vec()), Kind::Year, Origin::Binlog),
            Value::Int16(2024)
        );
        assert_eq!(
            c(
                My::Int(8_388_608),
                Kind::Int {
                    unsigned: false,
                    bits: 24
                },
                Origin::Binlog
            ),
            Value::Int32(-8_388_608)
        );
        assert_eq!(
            c(
                My::Bytes(vec![1]),
                Kind::Binary { pad: Some(3) },
                Origin::Binlog
            ),
            Value::Bytes(vec![1, 0, 0].into())
        );
        assert!(convert(
            My::Bytes(b"x".to_vec()),
            &Kind::Unknown("geometry".into()),
            Origin::Binlog,
            ZeroDates::Null
        )
        .unwrap_err()
        .0
        .contains("geometry"));
    }
}
