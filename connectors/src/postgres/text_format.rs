//! Postgres' text representation of values (pgoutput tuples, COPY text rows) into typed values.
//!
//! Sessions are set up by `protocol::SESSION_SETTINGS` (DateStyle ISO, IntervalStyle iso_8601,
//! TimeZone UTC, hex bytea, extra_float_digits 3), so each type has one text form to parse. The
//! mapping per type is written down in docs/types.md. Errors never quote the value (values are
//! user data and must not reach logs).

use bytes::Bytes;
use sluice_core::event::DataType;
use sluice_core::value::{
    self, Date, Decimal, Interval, Timestamp, Value, MICROS_PER_DAY, MICROS_PER_SECOND,
};

/// How a column's text is turned into a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    /// `oid`, `xid` and other unsigned 32-bit types.
    Oid,
    Float4,
    Float8,
    Numeric,
    /// text, varchar, bpchar, name, "char", and types whose text form is their canonical form
    /// and read back exactly (inet, cidr, macaddr, xml, bit, money, geometric types, tsvector,
    /// tsquery, pg_lsn, ranges and multiranges, and the extensions' citext and ltree).
    Text,
    Bytea,
    Uuid,
    Json,
    /// The `hstore` extension's maps, as a JSON object of strings (Debezium's default
    /// `hstore.handling.mode = json`).
    Hstore,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    Enum,
    Array(Box<PgType>),
    /// A type sluice has no mapping for, passed through as text because the user asked for it.
    Passthrough,
}

impl PgType {
    /// The mapping of a built-in type OID, if it has one.
    pub fn builtin(oid: u32) -> Option<PgType> {
        let scalar = match oid {
            16 => PgType::Bool,
            21 => PgType::Int2,
            23 => PgType::Int4,
            20 => PgType::Int8,
            26 | 28 | 29 => PgType::Oid,
            700 => PgType::Float4,
            701 => PgType::Float8,
            1700 => PgType::Numeric,
            25 | 1043 | 1042 | 19 | 18 | 869 | 650 | 829 | 774 | 142 | 1560 | 1562 | 790 => {
                PgType::Text
            }
            // point, lseg, path, box, polygon, line, circle; tsvector, tsquery; pg_lsn; the
            // built-in ranges (int4, num, ts, tstz, date, int8) and multiranges.
            600 | 601 | 602 | 603 | 604 | 628 | 718 | 3614 | 3615 | 3220 | 3904 | 3906 | 3908
            | 3910 | 3912 | 3926 | 4451 | 4532 | 4533 | 4534 | 4535 | 4536 => PgType::Text,
            17 => PgType::Bytea,
            2950 => PgType::Uuid,
            114 | 3802 => PgType::Json,
            1082 => PgType::Date,
            1083 => PgType::Time,
            1266 => PgType::TimeTz,
            1114 => PgType::Timestamp,
            1184 => PgType::TimestampTz,
            1186 => PgType::Interval,
            _ => {
                return PgType::builtin_array_element(oid)
                    .map(|element| PgType::Array(Box::new(element)))
            }
        };
        Some(scalar)
    }

    /// sluice's type for a column of this type; `type_name` (`format_type`, e.g.
    /// `numeric(10,2)`) supplies the precision and scale of numerics.
    pub fn data_type(&self, type_name: &str) -> DataType {
        match self {
            PgType::Bool => DataType::Bool,
            PgType::Int2 => DataType::Int16,
            PgType::Int4 => DataType::Int32,
            PgType::Int8 => DataType::Int64,
            PgType::Oid => DataType::UInt32,
            PgType::Float4 => DataType::Float32,
            PgType::Float8 => DataType::Float64,
            PgType::Numeric => {
                let modifiers = type_name
                    .split_once('(')
                    .and_then(|(_, rest)| rest.split_once(')'))
                    .map(|(inside, _)| inside);
                let mut parts = modifiers.into_iter().flat_map(|m| m.split(','));
                let precision = parts.next().and_then(|p| p.trim().parse().ok());
                let scale = precision.map(|_| {
                    parts
                        .next()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0)
                });
                DataType::Decimal { precision, scale }
            }
            PgType::Text | PgType::Passthrough => DataType::Text,
            PgType::Bytea => DataType::Bytes,
            PgType::Uuid => DataType::Uuid,
            PgType::Json | PgType::Hstore => DataType::Json,
            PgType::Date => DataType::Date,
            PgType::Time => DataType::Time,
            PgType::TimeTz => DataType::TimeTz,
            PgType::Timestamp => DataType::Timestamp,
            PgType::TimestampTz => DataType::TimestampTz,
            PgType::Interval => DataType::Interval,
            PgType::Enum => DataType::Enum,
            PgType::Array(element) => {
                let element_name = type_name.strip_suffix("[]").unwrap_or(type_name);
                DataType::Array(Box::new(element.data_type(element_name)))
            }
        }
    }

    fn builtin_array_element(oid: u32) -> Option<PgType> {
        let element = match oid {
            1000 => 16,
            1005 => 21,
            1007 => 23,
            1016 => 20,
            1028 => 26,
            1021 => 700,
            1022 => 701,
            1231 => 1700,
            1009 => 25,
            1015 => 1043,
            1014 => 1042,
            1003 => 19,
            1001 => 17,
            2951 => 2950,
            199 => 114,
            3807 => 3802,
            1182 => 1082,
            1183 => 1083,
            1270 => 1266,
            1115 => 1114,
            1185 => 1184,
            1187 => 1186,
            1041 => 869,
            651 => 650,
            _ => return None,
        };
        PgType::builtin(element)
    }
}

/// A value whose text does not parse as its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server sent a {type_name} value sluice cannot parse")]
pub struct InvalidText {
    pub type_name: &'static str,
}

fn invalid(type_name: &'static str) -> InvalidText {
    InvalidText { type_name }
}

/// Parses one non-null value.
pub fn parse(ty: &PgType, text: &[u8]) -> Result<Value, InvalidText> {
    let str_of = |name| std::str::from_utf8(text).map_err(|_| invalid(name));
    Ok(match ty {
        PgType::Bool => match text {
            b"t" => Value::Bool(true),
            b"f" => Value::Bool(false),
            _ => return Err(invalid("boolean")),
        },
        PgType::Int2 => Value::Int16(
            str_of("smallint")?
                .parse()
                .map_err(|_| invalid("smallint"))?,
        ),
        PgType::Int4 => Value::Int32(str_of("integer")?.parse().map_err(|_| invalid("integer"))?),
        PgType::Int8 => Value::Int64(str_of("bigint")?.parse().map_err(|_| invalid("bigint"))?),
        PgType::Oid => Value::UInt32(str_of("oid")?.parse().map_err(|_| invalid("oid"))?),
        PgType::Float4 => Value::Float32(str_of("real")?.parse().map_err(|_| invalid("real"))?),
        PgType::Float8 => Value::Float64(
            str_of("double precision")?
                .parse()
                .map_err(|_| invalid("double precision"))?,
        ),
        PgType::Numeric => {
            Value::Decimal(Decimal::parse(str_of("numeric")?).ok_or(invalid("numeric"))?)
        }
        PgType::Text | PgType::Passthrough => Value::Text(str_of("text")?.into()),
        PgType::Enum => Value::Enum(str_of("enum")?.to_owned()),
        PgType::Json => Value::Json(str_of("json")?.to_owned()),
        PgType::Hstore => Value::Json(parse_hstore(str_of("hstore")?)?),
        PgType::Bytea => Value::Bytes(parse_bytea(text)?),
        PgType::Uuid => Value::Uuid(parse_uuid(text)?),
        PgType::Date => Value::Date(parse_date(str_of("date")?)?),
        PgType::Time => Value::Time(parse_time(str_of("time")?)?),
        PgType::TimeTz => {
            let text = str_of("timetz")?;
            let split = text.rfind(['+', '-']).ok_or(invalid("timetz"))?;
            Value::TimeTz {
                micros: parse_time(&text[..split])?,
                offset_seconds: parse_offset(&text[split..])?,
            }
        }
        PgType::Timestamp => Value::Timestamp(parse_timestamp(str_of("timestamp")?, false)?),
        PgType::TimestampTz => Value::TimestampTz(parse_timestamp(str_of("timestamptz")?, true)?),
        PgType::Interval => Value::Interval(parse_interval(str_of("interval")?)?),
        PgType::Array(element) => parse_array(element, text)?,
    })
}

/// `"k"=>"v", "k2"=>NULL` (keys and values quoted, a backslash escaping the next character)
/// as the JSON object `{"k":"v","k2":null}`.
fn parse_hstore(text: &str) -> Result<String, InvalidText> {
    fn quoted(rest: &mut &str) -> Option<String> {
        let mut chars = rest.strip_prefix('"')?.char_indices();
        let mut out = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?.1),
                '"' => {
                    *rest = &rest[i + 2..];
                    return Some(out);
                }
                c => out.push(c),
            }
        }
        None
    }
    let mut map = serde_json::Map::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let key = quoted(&mut rest).ok_or(invalid("hstore"))?;
        rest = rest.strip_prefix("=>").ok_or(invalid("hstore"))?;
        let value = if let Some(after) = rest.strip_prefix("NULL") {
            rest = after;
            serde_json::Value::Null
        } else {
            serde_json::Value::String(quoted(&mut rest).ok_or(invalid("hstore"))?)
        };
        map.insert(key, value);
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.is_empty() {
            return Err(invalid("hstore"));
        }
    }
    Ok(serde_json::Value::Object(map).to_string())
}

fn parse_bytea(text: &[u8]) -> Result<Bytes, InvalidText> {
    let hex = text.strip_prefix(b"\\x").ok_or(invalid("bytea"))?;
    if hex.len() % 2 != 0 {
        return Err(invalid("bytea"));
    }
    let mut out = Vec::with_capacity(hex.len() / 2);
    for pair in hex.chunks_exact(2) {
        out.push(
            (hex_digit(pair[0]).ok_or(invalid("bytea"))? << 4)
                | hex_digit(pair[1]).ok_or(invalid("bytea"))?,
        );
    }
    Ok(Bytes::from(out))
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn parse_uuid(text: &[u8]) -> Result<[u8; 16], InvalidText> {
    std::str::from_utf8(text)
        .ok()
        .and_then(value::parse_uuid)
        .ok_or(invalid("uuid"))
}

/// `YYYY-MM-DD[ BC]` → days since epoch, or ±infinity.
fn parse_date(text: &str) -> Result<Date, InvalidText> {
    match text {
        "infinity" => return Ok(Date::PositiveInfinity),
        "-infinity" => return Ok(Date::NegativeInfinity),
        _ => {}
    }
    let (text, bc) = strip_bc(text);
    let days = civil_days(text, bc).ok_or(invalid("date"))?;
    Ok(Date::Days(
        i32::try_from(days).map_err(|_| invalid("date"))?,
    ))
}

fn strip_bc(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (text, false),
    }
}

fn civil_days(text: &str, bc: bool) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // 1 BC is year 0 of the proleptic Gregorian calendar.
    let year = if bc { 1 - year } else { year };
    Some(value::days_from_civil(year, month, day))
}

/// `HH:MM:SS[.ffffff]` → microseconds since midnight (`24:00:00` allowed, as Postgres does).
fn parse_time(text: &str) -> Result<i64, InvalidText> {
    let bad = || invalid("time");
    let (hms, frac) = text.split_once('.').unwrap_or((text, ""));
    let mut parts = hms.splitn(3, ':');
    let mut field = |max: i64| -> Result<i64, InvalidText> {
        let v: i64 = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        if (0..=max).contains(&v) {
            Ok(v)
        } else {
            Err(bad())
        }
    };
    let (h, m, s) = (field(24)?, field(59)?, field(60)?);
    let micros = fraction_micros(frac).ok_or_else(bad)?;
    let total = (h * 3600 + m * 60 + s) * MICROS_PER_SECOND + micros;
    if total > MICROS_PER_DAY {
        return Err(bad());
    }
    Ok(total)
}

/// Digits after a decimal point, as microseconds (at most 6 digits).
fn fraction_micros(frac: &str) -> Option<i64> {
    if frac.is_empty() {
        return Some(0);
    }
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: i64 = frac.parse().ok()?;
    Some(digits * 10i64.pow(6 - frac.len() as u32))
}

/// `+HH[:MM[:SS]]` → seconds east of UTC.
fn parse_offset(text: &str) -> Result<i32, InvalidText> {
    let bad = || invalid("time zone offset");
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let mut total = 0i32;
    for (i, part) in rest.split(':').enumerate() {
        let v: i32 = part.parse().map_err(|_| bad())?;
        total += v * [3600, 60, 1].get(i).ok_or_else(bad)?;
    }
    Ok(sign * total)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]][ BC]` → microseconds since epoch (UTC for `tz`).
fn parse_timestamp(text: &str, tz: bool) -> Result<Timestamp, InvalidText> {
    let name = if tz { "timestamptz" } else { "timestamp" };
    match text {
        "infinity" => return Ok(Timestamp::PositiveInfinity),
        "-infinity" => return Ok(Timestamp::NegativeInfinity),
        _ => {}
    }
    let (text, bc) = strip_bc(text);
    let (date, time) = text.split_once(' ').ok_or(invalid(name))?;
    let (time, offset) = if tz {
        let split = time.find(['+', '-']).ok_or(invalid(name))?;
        (&time[..split], parse_offset(&time[split..])?)
    } else {
        (time, 0)
    };
    let days = civil_days(date, bc).ok_or(invalid(name))?;
    let micros = days
        .checked_mul(MICROS_PER_DAY)
        .and_then(|m| m.checked_add(parse_time(time).ok()?))
        .and_then(|m| m.checked_sub(i64::from(offset) * MICROS_PER_SECOND))
        .ok_or(invalid(name))?;
    Ok(Timestamp::Micros(micros))
}

/// ISO-8601 interval as Postgres prints it with IntervalStyle iso_8601: `P1Y2M3DT4H5M6.5S`,
/// each part possibly negative.
fn parse_interval(text: &str) -> Result<Interval, InvalidText> {
    let bad = || invalid("interval");
    let rest = text.strip_prefix('P').ok_or_else(bad)?;
    let (date_part, time_part) = rest.split_once('T').unwrap_or((rest, ""));
    let mut interval = Interval::default();
    for (number, unit) in sluice_core::value::iso_duration_parts(date_part).ok_or_else(bad)? {
        let n: i32 = number.parse().map_err(|_| bad())?;
        match unit {
            'Y' => {
                interval.months = interval
                    .months
                    .checked_add(n.checked_mul(12).ok_or_else(bad)?)
                    .ok_or_else(bad)?
            }
            'M' => interval.months = interval.months.checked_add(n).ok_or_else(bad)?,
            'W' => {
                interval.days = interval
                    .days
                    .checked_add(n.checked_mul(7).ok_or_else(bad)?)
                    .ok_or_else(bad)?
            }
            'D' => interval.days = interval.days.checked_add(n).ok_or_else(bad)?,
            _ => return Err(bad()),
        }
    }
    for (number, unit) in sluice_core::value::iso_duration_parts(time_part).ok_or_else(bad)? {
        let micros = match unit {
            'H' => number
                .parse::<i64>()
                .map_err(|_| bad())?
                .checked_mul(3600 * MICROS_PER_SECOND),
            'M' => number
                .parse::<i64>()
                .map_err(|_| bad())?
                .checked_mul(60 * MICROS_PER_SECOND),
            'S' => {
                let negative = number.starts_with('-');
                let (whole, frac) = number
                    .trim_start_matches('-')
                    .split_once('.')
                    .unwrap_or((number.trim_start_matches('-'), ""));
                let whole: i64 = whole.parse().map_err(|_| bad())?;
                let total = whole
                    .checked_mul(MICROS_PER_SECOND)
                    .and_then(|w| w.checked_add(fraction_micros(frac)?));
                total.map(|t| if negative { -t } else { t })
            }
            _ => None,
        };
        interval.micros = interval
            .micros
            .checked_add(micros.ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    Ok(interval)
}

/// `{1,2,NULL}`, `{{1,2},{3,4}}`, `{"a b","c\"d"}`, optionally after a `[1:2]=` bounds prefix.
fn parse_array(element: &PgType, text: &[u8]) -> Result<Value, InvalidText> {
    let bad = || invalid("array");
    let start = match text.first() {
        Some(b'[') => text.iter().position(|b| *b == b'=').ok_or_else(bad)? + 1,
        _ => 0,
    };
    let mut pos = start;
    let value = parse_array_level(element, text, &mut pos)?;
    if pos != text.len() {
        return Err(bad());
    }
    Ok(value)
}

fn parse_array_level(element: &PgType, text: &[u8], pos: &mut usize) -> Result<Value, InvalidText> {
    let bad = || invalid("array");
    if text.get(*pos) != Some(&b'{') {
        return Err(bad());
    }
    *pos += 1;
    let mut items = Vec::new();
    if text.get(*pos) == Some(&b'}') {
        *pos += 1;
        return Ok(Value::Array(items));
    }
    loop {
        match text.get(*pos).ok_or_else(bad)? {
            b'{' => items.push(parse_array_level(element, text, pos)?),
            b'"' => {
                *pos += 1;
                let mut raw = Vec::new();
                loop {
                    match *text.get(*pos).ok_or_else(bad)? {
                        b'\\' => {
                            raw.push(*text.get(*pos + 1).ok_or_else(bad)?);
                            *pos += 2;
                        }
                        b'"' => {
                            *pos += 1;
                            break;
                        }
                        b => {
                            raw.push(b);
                            *pos += 1;
                        }
                    }
                }
                items.push(parse(element, &raw)?);
            }
            _ => {
                let end = text[*pos..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}'))
                    .ok_or_else(bad)?
                    + *pos;
                let token = &text[*pos..end];
                *pos = end;
                if token.eq_ignore_ascii_case(b"NULL") {
                    items.push(Value::Null);
                } else {
                    items.push(parse(element, token)?);
                }
            }
        }
        match text.get(*pos).ok_or_else(bad)? {
            b',' => *pos += 1,
            b'}' => {
                *pos += 1;
                return Ok(Value::Array(items));
            }
            _ => return Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ty: PgType, text: &str) -> Value {
        parse(&ty, text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn hstore_becomes_a_json_object_of_strings() {
        assert_eq!(
            p(
                PgType::Hstore,
                r#""a"=>"1", "b c"=>NULL, "q\"\\"=>"x=>y, \"z\"""#
            ),
            Value::Json(r#"{"a":"1","b c":null,"q\"\\":"x=>y, \"z\""}"#.into())
        );
        assert_eq!(p(PgType::Hstore, ""), Value::Json("{}".into()));
        for bad in [
            r#""a"=>"#,
            r#""a"=>"1" "b"=>"2""#,
            r#"a=>"1""#,
            r#""a"=>"1"#,
        ] {
            assert!(parse(&PgType::Hstore, bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn scalars_parse_exactly() {
        assert_eq!(
            p(PgType::Int8, "-9223372036854775808"),
            Value::Int64(i64::MIN)
        );
        assert_eq!(p(PgType::Numeric, "NaN"), Value::Decimal(Decimal::NaN));
        assert_eq!(
            p(PgType::Float8, "-Infinity"),
            Value::Float64(f64::NEG_INFINITY)
        );
        assert!(matches!(p(PgType::Float4, "NaN"), Value::Float32(v) if v.is_nan()));
        assert_eq!(
            p(PgType::Bytea, "\\x00ff10"),
            Value::Bytes(Bytes::from_static(&[0, 255, 16]))
        );
        assert_eq!(p(PgType::Bool, "t"), Value::Bool(true));
        let uuid = p(PgType::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert!(matches!(uuid, Value::Uuid(bytes) if bytes[0] == 0xa0 && bytes[15] == 0x11));
    }

    #[test]
    fn dates_and_times_handle_bc_infinity_and_offsets() {
        assert_eq!(p(PgType::Date, "1970-01-02"), Value::Date(Date::Days(1)));
        assert_eq!(
            p(PgType::Date, "infinity"),
            Value::Date(Date::PositiveInfinity)
        );
        assert_eq!(
            p(PgType::Date, "0001-12-31 BC"),
            Value::Date(Date::Days(value::days_from_civil(0, 12, 31) as i32))
        );
        assert_eq!(p(PgType::Time, "24:00:00"), Value::Time(MICROS_PER_DAY));
        assert_eq!(p(PgType::Time, "00:00:00.5"), Value::Time(500_000));
        assert_eq!(
            p(PgType::TimeTz, "10:00:00-05:30"),
            Value::TimeTz {
                micros: 36_000_000_000,
                offset_seconds: -19_800
            }
        );
        assert_eq!(
            p(PgType::Timestamp, "1970-01-01 00:00:01.000001"),
            Value::Timestamp(Timestamp::Micros(1_000_001))
        );
        assert_eq!(
            p(PgType::TimestampTz, "1970-01-01 01:00:00+01"),
            Value::TimestampTz(Timestamp::Micros(0))
        );
        assert_eq!(
            p(PgType::TimestampTz, "-infinity"),
            Value::TimestampTz(Timestamp::NegativeInfinity)
        );
        let late = value::days_from_civil(294_000, 12, 31) * MICROS_PER_DAY + MICROS_PER_DAY - 1;
        assert_eq!(
            p(PgType::Timestamp, "294000-12-31 23:59:59.999999"),
            Value::Timestamp(Timestamp::Micros(late))
        );
        // Postgres' own maximum lies past i64 microseconds since 1970: a clear error, not a wrap.
        assert!(parse(&PgType::Timestamp, b"294276-12-31 23:59:59.999999").is_err());
        let early = value::days_from_civil(-4713, 11, 24) * MICROS_PER_DAY;
        assert_eq!(
            p(PgType::Timestamp, "4714-11-24 00:00:00 BC"),
            Value::Timestamp(Timestamp::Micros(early))
        );
    }

    #[test]
    fn intervals_parse_from_iso_8601() {
        let i = |text| match p(PgType::Interval, text) {
            Value::Interval(i) => i,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            i("P1Y2M3DT4H5M6.5S"),
            Interval {
                months: 14,
                days: 3,
                micros: 14_706_500_000
            }
        );
        assert_eq!(i("PT0S"), Interval::default());
        assert_eq!(
            i("P-1Y-2M3DT-4H-5M-6.25S"),
            Interval {
                months: -14,
                days: 3,
                micros: -14_706_250_000
            }
        );
        assert!(parse(&PgType::Interval, b"1 day").is_err());
    }

    #[test]
    fn arrays_parse_nested_quoted_and_null() {
        let ints = PgType::Array(Box::new(PgType::Int4));
        assert_eq!(p(ints.clone(), "{}"), Value::Array(vec![]));
        assert_eq!(
            p(ints.clone(), "{1,NULL,-3}"),
            Value::Array(vec![Value::Int32(1), Value::Null, Value::Int32(-3)])
        );
        assert_eq!(
            p(ints.clone(), "{{1,2},{3,4}}"),
            Value::Array(vec![
                Value::Array(vec![Value::Int32(1), Value::Int32(2)]),
                Value::Array(vec![Value::Int32(3), Value::Int32(4)])
            ])
        );
        assert_eq!(
            p(ints, "[0:1]={5,6}"),
            Value::Array(vec![Value::Int32(5), Value::Int32(6)])
        );
        let texts = PgType::Array(Box::new(PgType::Text));
        assert_eq!(
            p(texts, r#"{"a b","c\"d",NULL,"NULL",ü}"#),
            Value::Array(vec![
                Value::Text("a b".into()),
                Value::Text("c\"d".into()),
                Value::Null,
                Value::Text("NULL".into()),
                Value::Text("ü".into())
            ])
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for (ty, text) in [
            (PgType::Int4, "x"),
            (PgType::Date, "2024-13-01"),
            (PgType::Time, "25:00:00"),
            (PgType::Bytea, "\\x0"),
            (PgType::Uuid, "nope"),
            (PgType::Array(Box::new(PgType::Int4)), "{1,2"),
            (PgType::TimestampTz, "2024-01-01 00:00:00"),
        ] {
            assert!(parse(&ty, text.as_bytes()).is_err(), "{ty:?} {text}");
        }
    }
}
