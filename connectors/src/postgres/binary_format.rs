//! Postgres' binary COPY format (the types' `send` functions) into typed values.
//!
//! The snapshot reads tables in binary when every column has a built-in type listed here: the
//! server skips its text output functions (timestamps and numerics are costly to print) and
//! sluice skips parsing them, about a third less work on each side. A table with any other
//! column (arrays, enums, domains, inet, …) is read as text by `text_format`, whose output is
//! the same `Value`s. Binary integers, floats, dates and times are the server's own bits, so
//! the two paths agree exactly; the snapshot tests compare them for every type listed here.

use bytes::Bytes;
use sluice_core::value::{Date, Decimal, Interval, Text, Timestamp, Value};

use super::text_format::InvalidText;

/// Days from 1970-01-01 to 2000-01-01, Postgres' epoch for dates and timestamps.
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A built-in type whose binary form sluice reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinaryType {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    /// text, varchar, bpchar and name: their binary form is their text.
    Text,
    Bytea,
    Uuid,
    Json,
    /// jsonb: a version byte (1), then the document's text.
    Jsonb,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
}

impl BinaryType {
    /// The binary reading of a column's type OID, if sluice has one. Domains and arrays have
    /// their own OIDs and so are read as text.
    pub(super) fn of(type_oid: u32) -> Option<BinaryType> {
        Some(match type_oid {
            16 => BinaryType::Bool,
            21 => BinaryType::Int2,
            23 => BinaryType::Int4,
            20 => BinaryType::Int8,
            26 | 28 | 29 => BinaryType::Oid,
            700 => BinaryType::Float4,
            701 => BinaryType::Float8,
            1700 => BinaryType::Numeric,
            25 | 1043 | 1042 | 19 => BinaryType::Text,
            17 => BinaryType::Bytea,
            2950 => BinaryType::Uuid,
            114 => BinaryType::Json,
            3802 => BinaryType::Jsonb,
            1082 => BinaryType::Date,
            1083 => BinaryType::Time,
            1266 => BinaryType::TimeTz,
            1114 => BinaryType::Timestamp,
            1184 => BinaryType::TimestampTz,
            1186 => BinaryType::Interval,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            BinaryType::Bool => "boolean",
            BinaryType::Int2 => "smallint",
            BinaryType::Int4 => "integer",
            BinaryType::Int8 => "bigint",
            BinaryType::Oid => "oid",
            BinaryType::Float4 => "real",
            BinaryType::Float8 => "double precision",
            BinaryType::Numeric => "numeric",
            BinaryType::Text => "text",
            BinaryType::Bytea => "bytea",
            BinaryType::Uuid => "uuid",
            BinaryType::Json => "json",
            BinaryType::Jsonb => "jsonb",
            BinaryType::Date => "date",
            BinaryType::Time => "time",
            BinaryType::TimeTz => "timetz",
            BinaryType::Timestamp => "timestamp",
            BinaryType::TimestampTz => "timestamptz",
            BinaryType::Interval => "interval",
        }
    }
}

/// Parses one non-null value.
#[inline]
pub(super) fn parse(ty: BinaryType, data: &[u8]) -> Result<Value, InvalidText> {
    let bad = || InvalidText {
        type_name: ty.name(),
    };
    let fixed = |n: usize| -> Result<&[u8], InvalidText> {
        if data.len() == n {
            Ok(data)
        } else {
            Err(bad())
        }
    };
    let be64 = |d: &[u8]| i64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    let be32 = |d: &[u8]| i32::from_be_bytes(d[..4].try_into().expect("4 bytes"));
    let text = |d: &[u8]| String::from_utf8(d.to_vec()).map_err(|_| bad());
    Ok(match ty {
        BinaryType::Bool => match fixed(1)?[0] {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            _ => return Err(bad()),
        },
        BinaryType::Int2 => Value::Int16(i16::from_be_bytes([fixed(2)?[0], data[1]])),
        BinaryType::Int4 => Value::Int32(be32(fixed(4)?)),
        BinaryType::Int8 => Value::Int64(be64(fixed(8)?)),
        BinaryType::Oid => Value::UInt32(be32(fixed(4)?) as u32),
        BinaryType::Float4 => Value::Float32(f32::from_bits(be32(fixed(4)?) as u32)),
        BinaryType::Float8 => Value::Float64(f64::from_bits(be64(fixed(8)?) as u64)),
        BinaryType::Numeric => Value::Decimal(numeric(data).ok_or_else(bad)?),
        BinaryType::Text => Value::Text(std::str::from_utf8(data).map_err(|_| bad())?.into()),
        BinaryType::Json => Value::Json(text(data)?),
        BinaryType::Jsonb => match data.split_first() {
            Some((1, document)) => Value::Json(text(document)?),
            _ => return Err(bad()),
        },
        BinaryType::Bytea => Value::Bytes(Bytes::copy_from_slice(data)),
        BinaryType::Uuid => Value::Uuid(fixed(16)?.try_into().expect("16 bytes")),
        BinaryType::Date => Value::Date(match be32(fixed(4)?) {
            i32::MAX => Date::PositiveInfinity,
            i32::MIN => Date::NegativeInfinity,
            days => Date::Days(days.checked_add(PG_EPOCH_DAYS).ok_or_else(bad)?),
        }),
        BinaryType::Time => Value::Time(be64(fixed(8)?)),
        BinaryType::TimeTz => {
            let data = fixed(12)?;
            Value::TimeTz {
                micros: be64(data),
                // The server sends the zone in seconds west of UTC.
                offset_seconds: be32(&data[8..]).checked_neg().ok_or_else(bad)?,
            }
        }
        BinaryType::Timestamp => Value::Timestamp(timestamp(be64(fixed(8)?)).ok_or_else(bad)?),
        BinaryType::TimestampTz => Value::TimestampTz(timestamp(be64(fixed(8)?)).ok_or_else(bad)?),
        BinaryType::Interval => {
            let data = fixed(16)?;
            Value::Interval(Interval {
                micros: be64(data),
                days: be32(&data[8..]),
                months: be32(&data[12..]),
            })
        }
    })
}

fn timestamp(pg_micros: i64) -> Option<Timestamp> {
    Some(match pg_micros {
        i64::MAX => Timestamp::PositiveInfinity,
        i64::MIN => Timestamp::NegativeInfinity,
        micros => Timestamp::Micros(micros.checked_add(PG_EPOCH_MICROS)?),
    })
}

/// A binary numeric (digit count, weight, sign, display scale, then base-10000 digits) as the
/// same text `numeric_out` prints.
fn numeric(data: &[u8]) -> Option<Decimal> {
    let word = |i: usize| u16::from_be_bytes([data[i], data[i + 1]]);
    if data.len() < 8 {
        return None;
    }
    let ndigits = usize::from(word(0));
    let weight = i64::from(word(2) as i16);
    let (sign, dscale) = (word(4), usize::from(word(6)));
    if data.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0xC000 => return Some(Decimal::NaN),
        0xD000 => return Some(Decimal::PositiveInfinity),
        0xF000 => return Some(Decimal::NegativeInfinity),
        0x0000 | 0x4000 => {}
        _ => return None,
    }
    let digit = |i: i64| -> Option<u16> {
        match usize::try_from(i) {
            Ok(i) if i < ndigits => Some(word(8 + 2 * i)).filter(|d| *d < 10_000),
            _ => Some(0),
        }
    };
    // The digits are gathered in a byte buffer (on the stack unless the number is long) and
    // made text once: pushing characters into a `Text` one by one took twice the instructions.
    let most = 4 * (weight.max(0) as usize + 1) + dscale + 2;
    let mut stack = [0u8; 64];
    let mut heap = Vec::new();
    let buf = if most <= stack.len() {
        &mut stack[..]
    } else {
        heap.resize(most, 0);
        &mut heap[..]
    };
    let mut len = 0;
    if sign == 0x4000 {
        buf[len] = b'-';
        len += 1;
    }
    if weight < 0 {
        buf[len] = b'0';
        len += 1;
    } else {
        for i in 0..=weight {
            let group = digit(i)?;
            // The first group without its leading zeros.
            let take = match (i, group) {
                (0, 0..=9) => 1,
                (0, 10..=99) => 2,
                (0, 100..=999) => 3,
                _ => 4,
            };
            buf[len..len + take].copy_from_slice(&group_digits(group)[4 - take..]);
            len += take;
        }
    }
    if dscale > 0 {
        buf[len] = b'.';
        len += 1;
        let mut left = dscale;
        let mut i = weight + 1;
        while left > 0 {
            let take = left.min(4);
            buf[len..len + take].copy_from_slice(&group_digits(digit(i)?)[..take]);
            len += take;
            left -= take;
            i += 1;
        }
    }
    let text = std::str::from_utf8(&buf[..len]).ok()?;
    Some(Decimal::Finite(Text::from(text)))
}

/// A base-10000 digit as its four decimal digits, zero-padded.
fn group_digits(group: u16) -> [u8; 4] {
    [
        b'0' + (group / 1000) as u8,
        b'0' + (group / 100 % 10) as u8,
        b'0' + (group / 10 % 10) as u8,
        b'0' + (group % 10) as u8,
    ]
}

/// The binary COPY signature, then flags and a header extension whose length follows.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// What comes next in a binary COPY stream.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// The header: skip this many bytes.
    Header(usize),
    /// A row of this many bytes (its field count first).
    Row(usize),
    /// The trailer: the stream ends here.
    End,
    /// Not enough bytes yet.
    Incomplete,
}

/// Frames the next item at the start of `buf`; `header_seen` says whether the header is past.
pub(super) fn next(buf: &[u8], header_seen: bool) -> Result<Next, InvalidText> {
    let bad = || InvalidText {
        type_name: "binary COPY row",
    };
    if !header_seen {
        if buf.len() < SIGNATURE.len() + 8 {
            return Ok(Next::Incomplete);
        }
        if &buf[..SIGNATURE.len()] != SIGNATURE {
            return Err(bad());
        }
        let at = SIGNATURE.len() + 4;
        let extension = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
        let len = at + 4 + usize::try_from(extension).map_err(|_| bad())?;
        return Ok(if buf.len() < len {
            Next::Incomplete
        } else {
            Next::Header(len)
        });
    }
    if buf.len() < 2 {
        return Ok(Next::Incomplete);
    }
    let fields = i16::from_be_bytes([buf[0], buf[1]]);
    if fields == -1 {
        return Ok(Next::End);
    }
    if fields < 0 {
        return Err(bad());
    }
    let mut at = 2;
    for _ in 0..fields {
        let Some(len) = buf.get(at..at + 4) else {
            return Ok(Next::Incomplete);
        };
        let len = i32::from_be_bytes(len.try_into().expect("4 bytes"));
        at += 4;
        if len >= 0 {
            at += len as usize;
        } else if len != -1 {
            return Err(bad());
        }
    }
    Ok(if buf.len() < at {
        Next::Incomplete
    } else {
        Next::Row(at)
    })
}

/// The fields of one framed row: `None` for NULL.
pub(super) fn fields(row: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    let count = i16::from_be_bytes([row[0], row[1]]).max(0) as usize;
    let mut at = 2;
    (0..count).map(move |_| {
        let len = i32::from_be_bytes(row[at..at + 4].try_into().expect("framed"));
        at += 4;
        if len < 0 {
            return None;
        }
        let field = &row[at..at + len as usize];
        at += len as usize;
        Some(field)
    })
}

pub(super) fn field_count(row: &[u8]) -> usize {
    i16::from_be_bytes([row[0], row[1]]).max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(digits.len() as u16).to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_print_as_numeric_out_does() {
        let cases: &[(i16, u16, u16, &[u16], &str)] = &[
            (0, 0, 0, &[], "0"),
            (0, 0, 2, &[], "0.00"),
            (0, 0, 2, &[12, 3400], "12.34"),
            (0, 0x4000, 2, &[12, 3400], "-12.34"),
            (1, 0, 0, &[1, 0], "10000"),
            (1, 0, 3, &[1, 2, 5000], "10002.500"),
            (-1, 0, 4, &[5], "0.0005"),
            (-2, 0, 10, &[12, 3456], "0.0000001234"),
            (0, 0, 6, &[7, 1234, 5600], "7.123456"),
            (2, 0, 0, &[9999, 9999, 9999], "999999999999"),
            (0, 0, 1, &[3, 9999], "3.9"),
            (0, 0, 3, &[987, 6543], "987.654"),
            (0, 0x4000, 0, &[1234], "-1234"),
        ];
        for (weight, sign, dscale, digits, expected) in cases {
            let decimal = numeric(&numeric_bytes(*weight, *sign, *dscale, digits)).unwrap();
            assert_eq!(decimal, Decimal::Finite((*expected).into()));
        }
        // Past the stack buffer: 84 integer digits and 60 fractional ones.
        let long = numeric(&numeric_bytes(20, 0x4000, 60, &[9999; 36])).unwrap();
        let expected = format!("-{}.{}", "9".repeat(84), "9".repeat(60));
        assert_eq!(long, Decimal::Finite(expected.as_str().into()));
        assert_eq!(
            numeric(&numeric_bytes(0, 0xC000, 0, &[])),
            Some(Decimal::NaN)
        );
        assert_eq!(
            numeric(&numeric_bytes(0, 0xF000, 0, &[])),
            Some(Decimal::NegativeInfinity)
        );
        assert_eq!(numeric(&numeric_bytes(0, 0x1234, 0, &[])), None);
        assert_eq!(numeric(&numeric_bytes(0, 0, 0, &[10_000])), None);
        assert_eq!(numeric(&[0, 1, 0, 0]), None);
    }

    #[test]
    fn dates_and_timestamps_count_from_2000_with_infinities_at_the_ends() {
        let date = |days: i32| parse(BinaryType::Date, &days.to_be_bytes()).unwrap();
        assert_eq!(date(0), Value::Date(Date::Days(10_957)));
        assert_eq!(date(i32::MAX), Value::Date(Date::PositiveInfinity));
        assert_eq!(date(i32::MIN), Value::Date(Date::NegativeInfinity));
        let ts = |micros: i64| parse(BinaryType::TimestampTz, &micros.to_be_bytes()).unwrap();
        assert_eq!(
            ts(1),
            Value::TimestampTz(Timestamp::Micros(PG_EPOCH_MICROS + 1))
        );
        assert_eq!(
            ts(i64::MIN),
            Value::TimestampTz(Timestamp::NegativeInfinity)
        );
        assert!(parse(BinaryType::Timestamp, &(i64::MAX - 1).to_be_bytes()).is_err());
        let mut timetz = 3_600_000_000i64.to_be_bytes().to_vec();
        timetz.extend_from_slice(&(-7200i32).to_be_bytes());
        assert_eq!(
            parse(BinaryType::TimeTz, &timetz).unwrap(),
            Value::TimeTz {
                micros: 3_600_000_000,
                offset_seconds: 7200
            }
        );
    }

    #[test]
    fn wrong_lengths_and_bad_text_are_errors_not_panics() {
        for ty in [
            BinaryType::Bool,
            BinaryType::Int2,
            BinaryType::Int4,
            BinaryType::Int8,
            BinaryType::Float8,
            BinaryType::Uuid,
            BinaryType::Date,
            BinaryType::TimeTz,
            BinaryType::Interval,
            BinaryType::Numeric,
        ] {
            assert!(parse(ty, &[1, 2, 3]).is_err(), "{ty:?}");
        }
        assert!(parse(BinaryType::Text, &[0xff, 0xfe]).is_err());
        assert!(parse(BinaryType::Jsonb, &[2, b'{', b'}']).is_err());
    }

    #[test]
    fn framing_waits_for_whole_rows_and_rejects_bad_lengths() {
        let mut stream = SIGNATURE.to_vec();
        stream.extend_from_slice(&0u32.to_be_bytes());
        stream.extend_from_slice(&0u32.to_be_bytes());
        let header = stream.len();
        stream.extend_from_slice(&2i16.to_be_bytes());
        stream.extend_from_slice(&(-1i32).to_be_bytes());
        stream.extend_from_slice(&3i32.to_be_bytes());
        stream.extend_from_slice(b"abc");
        let row = stream.len() - header;
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        for cut in 0..header {
            assert_eq!(next(&stream[..cut], false), Ok(Next::Incomplete));
        }
        assert_eq!(next(&stream, false), Ok(Next::Header(header)));
        let rest = &stream[header..];
        for cut in 0..row {
            assert_eq!(next(&rest[..cut], true), Ok(Next::Incomplete));
        }
        assert_eq!(next(rest, true), Ok(Next::Row(row)));
        let fields: Vec<_> = fields(&rest[..row]).collect();
        assert_eq!(fields, [None, Some(&b"abc"[..])]);
        assert_eq!(next(&rest[row..], true), Ok(Next::End));
        assert!(next(b"PGCOPY\nxx\r\n\0\0\0\0\0\0\0\0\0", false).is_err());
        let mut bad = 1i16.to_be_bytes().to_vec();
        bad.extend_from_slice(&(-5i32).to_be_bytes());
        assert!(next(&bad, true).is_err());
    }
}
