//! ClickHouse column types: read from what the server says (`DESCRIBE TABLE`), chosen for a
//! source column by what the server supports, and compared to decide whether a table needs an
//! `ALTER`.

use std::fmt;

use sluice_core::event::{Column, DataType};

/// A column type, as far as the sink writes it. Types it does not write are `Other` (a
/// column of such a type in an existing table is refused by name when a row needs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChType {
    Bool,
    /// Signed integer of 8, 16, 32, 64 bits.
    Int(u8),
    /// Unsigned integer of 8, 16, 32, 64 bits.
    UInt(u8),
    Float32,
    Float64,
    Decimal {
        precision: u32,
        scale: u32,
    },
    String,
    FixedString(usize),
    Uuid,
    /// Days since 1970 as UInt16 (1970-01-01 to 2149-06-06).
    Date,
    /// Days since 1970 as Int32 (1900-01-01 to 2299-12-31).
    Date32,
    /// Seconds since 1970 as UInt32.
    DateTime {
        zone: Option<String>,
    },
    /// Ticks of 10^-precision seconds since 1970 as Int64.
    DateTime64 {
        precision: u32,
        zone: Option<String>,
    },
    Nullable(Box<ChType>),
    /// Stored as a dictionary, written as its inner type.
    LowCardinality(Box<ChType>),
    Array(Box<ChType>),
    Other(String),
}

/// What the server can store, by version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `DateTime64(p)` (20.1).
    pub datetime64: bool,
    /// `Date32` (21.9).
    pub date32: bool,
    /// `Bool` (21.12).
    pub bool_type: bool,
    /// `ReplacingMergeTree(version, is_deleted)` (23.2): `FINAL` hides deleted rows.
    pub is_deleted: bool,
}

impl Features {
    /// The features of the server whose `version()` is `version` (`18.16.1`, `26.9.2.1`).
    pub fn of_version(version: &str) -> Features {
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let at_least = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        Features {
            datetime64: at_least >= (20, 1),
            date32: at_least >= (21, 9),
            bool_type: at_least >= (21, 12),
            is_deleted: at_least >= (23, 2),
        }
    }
}

/// The type a source column gets in a table sluice creates (`Nullable` for nullable columns
/// that are not part of the key; arrays cannot be, and hold a NULL as an empty array).
pub fn column_type(column: &Column, features: Features) -> ChType {
    let base = base_type(&column.data_type, features);
    if column.nullable && !column.key {
        base.or_null()
    } else {
        base
    }
}

fn base_type(data_type: &DataType, features: Features) -> ChType {
    match data_type {
        DataType::Bool if features.bool_type => ChType::Bool,
        DataType::Bool => ChType::UInt(8),
        DataType::Int8 => ChType::Int(8),
        DataType::Int16 => ChType::Int(16),
        DataType::Int32 => ChType::Int(32),
        DataType::Int64 => ChType::Int(64),
        DataType::UInt8 => ChType::UInt(8),
        DataType::UInt16 => ChType::UInt(16),
        DataType::UInt32 => ChType::UInt(32),
        DataType::UInt64 => ChType::UInt(64),
        DataType::Float32 => ChType::Float32,
        DataType::Float64 => ChType::Float64,
        // Decimal(P, S) holds up to 38 digits on every version; wider or unconstrained
        // numbers (Postgres `numeric`, whose scale varies per value) are kept exact as text.
        DataType::Decimal {
            precision: Some(precision),
            scale,
        } if *precision <= 38 => ChType::Decimal {
            precision: (*precision).max(1),
            scale: scale.unwrap_or(0).min(*precision),
        },
        DataType::Uuid => ChType::Uuid,
        DataType::Date if features.date32 => ChType::Date32,
        DataType::Date => ChType::Date,
        // Microseconds where the server has them; 18.16's DateTime holds whole seconds.
        // Timestamps without zone are stored as UTC wall clock, so they print as the source's.
        DataType::Timestamp | DataType::TimestampTz if features.datetime64 => ChType::DateTime64 {
            precision: 6,
            zone: Some("UTC".into()),
        },
        DataType::Timestamp | DataType::TimestampTz => ChType::DateTime {
            zone: Some("UTC".into()),
        },
        DataType::Set => ChType::Array(Box::new(ChType::String)),
        DataType::Array(inner) => ChType::Array(Box::new(ChType::Nullable(Box::new(base_type(
            inner, features,
        ))))),
        DataType::Decimal { .. }
        | DataType::Text
        | DataType::Bytes
        | DataType::Json
        | DataType::Time
        | DataType::TimeTz
        | DataType::Interval
        | DataType::Enum => ChType::String,
    }
}

impl ChType {
    /// Parses a type as `DESCRIBE TABLE` prints it.
    pub fn parse(text: &str) -> ChType {
        let text = text.trim();
        let (name, args) = match text.find('(') {
            Some(open) if text.ends_with(')') => {
                (&text[..open], Some(&text[open + 1..text.len() - 1]))
            }
            _ => (text, None),
        };
        let other = || ChType::Other(text.to_owned());
        let numbers = |args: &str| -> Vec<u32> {
            args.split(',')
                .filter_map(|a| a.trim().parse::<u32>().ok())
                .collect()
        };
        match (name, args) {
            ("Bool" | "Boolean", None) => ChType::Bool,
            ("Int8", None) => ChType::Int(8),
            ("Int16", None) => ChType::Int(16),
            ("Int32", None) => ChType::Int(32),
            ("Int64", None) => ChType::Int(64),
            ("UInt8", None) => ChType::UInt(8),
            ("UInt16", None) => ChType::UInt(16),
            ("UInt32", None) => ChType::UInt(32),
            ("UInt64", None) => ChType::UInt(64),
            ("Float32", None) => ChType::Float32,
            ("Float64", None) => ChType::Float64,
            ("String", None) => ChType::String,
            ("UUID", None) => ChType::Uuid,
            ("Date", None) => ChType::Date,
            ("Date32", None) => ChType::Date32,
            ("DateTime", None) => ChType::DateTime { zone: None },
            ("DateTime", Some(args)) => ChType::DateTime {
                zone: Some(unquote(args)),
            },
            ("DateTime64", Some(args)) => {
                let mut parts = args.splitn(2, ',');
                match parts.next().and_then(|p| p.trim().parse().ok()) {
                    Some(precision) => ChType::DateTime64 {
                        precision,
                        zone: parts.next().map(unquote),
                    },
                    None => other(),
                }
            }
            ("Decimal", Some(args)) => match numbers(args)[..] {
                [precision, scale] => ChType::Decimal { precision, scale },
                [precision] => ChType::Decimal {
                    precision,
                    scale: 0,
                },
                _ => other(),
            },
            ("Decimal32" | "Decimal64" | "Decimal128", Some(args)) => match numbers(args)[..] {
                [scale] => ChType::Decimal {
                    precision: match name {
                        "Decimal32" => 9,
                        "Decimal64" => 18,
                        _ => 38,
                    },
                    scale,
                },
                _ => other(),
            },
            ("FixedString", Some(args)) => match numbers(args)[..] {
                [len] => ChType::FixedString(len as usize),
                _ => other(),
            },
            ("Nullable", Some(inner)) => ChType::Nullable(Box::new(ChType::parse(inner))),
            ("LowCardinality", Some(inner)) => {
                ChType::LowCardinality(Box::new(ChType::parse(inner)))
            }
            ("Array", Some(inner)) => ChType::Array(Box::new(ChType::parse(inner))),
            _ => other(),
        }
    }

    /// Whether a column of type `self` can hold every value of a column of type `other`
    /// (the sink then writes the other's values into it, converting).
    pub fn holds(&self, other: &ChType) -> bool {
        use ChType::*;
        if self == other {
            return true;
        }
        match (self, other) {
            (LowCardinality(inner), _) => inner.holds(other),
            (_, LowCardinality(inner)) => self.holds(inner),
            (Nullable(a), Nullable(b)) => a.holds(b),
            (Nullable(a), b) => a.holds(b),
            (_, Nullable(_)) => false,
            (Array(a), Array(b)) => a.holds(b),
            (Int(a), Int(b)) => a >= b,
            (Int(a), UInt(b)) => a > b,
            (UInt(a), UInt(b)) => a >= b,
            (Int(_) | UInt(_), Bool) | (Bool, UInt(8)) => true,
            (Float64, Float32) => true,
            (Float64, Int(8 | 16 | 32) | UInt(8 | 16 | 32)) => true,
            (Float32, Int(8 | 16) | UInt(8 | 16)) => true,
            (
                Decimal {
                    precision: p1,
                    scale: s1,
                },
                Decimal {
                    precision: p2,
                    scale: s2,
                },
            ) => s1 >= s2 && p1 - s1 >= p2 - s2,
            (Decimal { precision, scale }, Int(bits) | UInt(bits)) => {
                precision - scale >= digits_of(*bits)
            }
            // Text holds anything the sink can print.
            (String, Other(_)) => false,
            (String, _) => true,
            (Date32, Date) => true,
            (DateTime64 { .. }, DateTime { .. } | Date | Date32) => true,
            (DateTime { .. }, Date) => true,
            (DateTime { .. }, DateTime { .. }) => true,
            (DateTime64 { precision: a, .. }, DateTime64 { precision: b, .. }) => a >= b,
            _ => false,
        }
    }

    /// Whether a column of type `self` takes values of `other` one by one, some of which it
    /// may refuse: both are numbers (a user's `UInt32` for a source's `int`). Each row is then
    /// checked as it is written, and one that does not fit is rejected with its reason.
    pub fn accepts(&self, other: &ChType) -> bool {
        let number = |t: &ChType| {
            matches!(
                t,
                ChType::Int(_)
                    | ChType::UInt(_)
                    | ChType::Decimal { .. }
                    | ChType::Float32
                    | ChType::Float64
                    | ChType::Bool
            )
        };
        self.holds(other) || (number(self.base()) && number(other.base()))
    }

    /// `Nullable(self)`, except for types ClickHouse does not let be Nullable (arrays) and
    /// types that are already.
    pub fn or_null(self) -> ChType {
        match self {
            ChType::Array(_) | ChType::Nullable(_) => self,
            other => ChType::Nullable(Box::new(other)),
        }
    }

    /// The type without `Nullable` and `LowCardinality`.
    pub fn base(&self) -> &ChType {
        match self {
            ChType::Nullable(inner) | ChType::LowCardinality(inner) => inner.base(),
            other => other,
        }
    }

    pub fn is_nullable(&self) -> bool {
        match self {
            ChType::Nullable(_) => true,
            ChType::LowCardinality(inner) => inner.is_nullable(),
            _ => false,
        }
    }
}

/// Decimal digits an integer of `bits` may need.
fn digits_of(bits: u8) -> u32 {
    match bits {
        8 => 3,
        16 => 5,
        32 => 10,
        _ => 20,
    }
}

fn unquote(text: &str) -> String {
    text.trim()
        .trim_start_matches('\'')
        .trim_end_matches('\'')
        .to_owned()
}

impl fmt::Display for ChType {
    /// The type as DDL spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChType::Bool => f.write_str("Bool"),
            ChType::Int(bits) => write!(f, "Int{bits}"),
            ChType::UInt(bits) => write!(f, "UInt{bits}"),
            ChType::Float32 => f.write_str("Float32"),
            ChType::Float64 => f.write_str("Float64"),
            ChType::Decimal { precision, scale } => write!(f, "Decimal({precision}, {scale})"),
            ChType::String => f.write_str("String"),
            ChType::FixedString(len) => write!(f, "FixedString({len})"),
            ChType::Uuid => f.write_str("UUID"),
            ChType::Date => f.write_str("Date"),
            ChType::Date32 => f.write_str("Date32"),
            ChType::DateTime { zone: None } => f.write_str("DateTime"),
            ChType::DateTime { zone: Some(zone) } => write!(f, "DateTime('{zone}')"),
            ChType::DateTime64 {
                precision,
                zone: None,
            } => write!(f, "DateTime64({precision})"),
            ChType::DateTime64 {
                precision,
                zone: Some(zone),
            } => write!(f, "DateTime64({precision}, '{zone}')"),
            ChType::Nullable(inner) => write!(f, "Nullable({inner})"),
            ChType::LowCardinality(inner) => write!(f, "LowCardinality({inner})"),
            ChType::Array(inner) => write!(f, "Array({inner})"),
            ChType::Other(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_as_describe_prints_them_and_print_back() {
        for text in [
            "Int64",
            "UInt8",
            "Decimal(38, 10)",
            "Nullable(String)",
            "Array(Nullable(Int32))",
            "DateTime('UTC')",
            "DateTime64(6, 'UTC')",
            "LowCardinality(Nullable(String))",
            "FixedString(16)",
            "UUID",
        ] {
            assert_eq!(ChType::parse(text).to_string(), text);
        }
        assert_eq!(
            ChType::parse("Decimal64(4)"),
            ChType::Decimal {
                precision: 18,
                scale: 4
            }
        );
        assert_eq!(
            ChType::parse("Map(String, UInt64)"),
            ChType::Other("Map(String, UInt64)".into())
        );
    }

    #[test]
    fn wider_types_hold_narrower_ones_and_not_the_reverse() {
        let p = ChType::parse;
        assert!(p("Int64").holds(&p("Int32")));
        assert!(!p("Int32").holds(&p("Int64")));
        assert!(p("Int64").holds(&p("UInt32")));
        assert!(!p("Int64").holds(&p("UInt64")));
        assert!(p("Nullable(Int64)").holds(&p("Int32")));
        assert!(!p("Int64").holds(&p("Nullable(Int64)")));
        assert!(p("Decimal(12, 2)").holds(&p("Decimal(10, 2)")));
        assert!(!p("Decimal(12, 2)").holds(&p("Decimal(12, 3)")));
        assert!(p("String").holds(&p("Int32")));
        assert!(p("DateTime64(6, 'UTC')").holds(&p("DateTime('UTC')")));
        assert!(!p("DateTime('UTC')").holds(&p("DateTime64(6, 'UTC')")));
        assert!(p("Array(Nullable(Int64))").holds(&p("Array(Nullable(Int32))")));
        assert!(p("Nullable(UInt32)").accepts(&p("Nullable(Int32)")));
        assert!(!p("Date").accepts(&p("Int32")));
    }

    #[test]
    fn features_follow_the_server_version() {
        let old = Features::of_version("18.16.1");
        assert!(!old.datetime64 && !old.date32 && !old.bool_type && !old.is_deleted);
        let new = Features::of_version("26.9.2.1");
        assert!(new.datetime64 && new.date32 && new.bool_type && new.is_deleted);
        assert!(Features::of_version("22.8.1").date32);
        assert!(!Features::of_version("22.8.1").is_deleted);
    }
}
