//! Change events: the one shape every source produces and every encoder reads.

use std::sync::Arc;

use bytes::Bytes;

use crate::position::Position;
use crate::value::Value;

/// What happened to a row (Debezium's `op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// A row read by a snapshot.
    Read,
    Truncate,
    /// A logical decoding message (Postgres `pg_logical_emit_message`).
    Message,
}

impl Op {
    /// Debezium's op code.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
            Op::Message => "m",
        }
    }
}

/// A table: Postgres schema and table, or MySQL database and table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for TableId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// A column's type in sluice's own terms, the same for every source: what encoders derive
/// schemas from and sinks create target columns from. `type_name` keeps the source's spelling
/// for same-engine targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    /// Exact decimal; `None` precision means unconstrained (Postgres `numeric`), whose scale
    /// varies per value and which may hold NaN and ±infinity.
    Decimal {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    Text,
    Bytes,
    Uuid,
    Json,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    Enum,
    Set,
    Array(Box<DataType>),
}

impl DataType {
    /// Whether every value of `self` fits `wider` without loss: what a sink may apply as a
    /// column type change, and what a schema registry accepts as a promotion.
    pub fn widens_to(&self, wider: &DataType) -> bool {
        use DataType::*;
        if self == wider {
            return true;
        }
        match (self, wider) {
            (Int8, Int16 | Int32 | Int64) | (Int16, Int32 | Int64) | (Int32, Int64) => true,
            (UInt8, UInt16 | UInt32 | UInt64 | Int16 | Int32 | Int64) => true,
            (UInt16, UInt32 | UInt64 | Int32 | Int64) | (UInt32, UInt64 | Int64) => true,
            (Float32, Float64) => true,
            (
                Decimal {
                    precision: Some(p1),
                    scale: Some(s1),
                },
                Decimal {
                    precision: Some(p2),
                    scale: Some(s2),
                },
            ) => s1 == s2 && p1 <= p2,
            (
                Decimal { .. },
                Decimal {
                    precision: None, ..
                },
            ) => true,
            (Enum, Text) | (Set, Text) => true,
            (Array(a), Array(b)) => a.widens_to(b),
            _ => false,
        }
    }
}

impl std::fmt::Display for DataType {
    /// The compact form schemas carry (`int16`, `decimal(10,2)`, `array<text>`); `FromStr`
    /// reads it back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            DataType::Bool => "bool",
            DataType::Int8 => "int8",
            DataType::Int16 => "int16",
            DataType::Int32 => "int32",
            DataType::Int64 => "int64",
            DataType::UInt8 => "uint8",
            DataType::UInt16 => "uint16",
            DataType::UInt32 => "uint32",
            DataType::UInt64 => "uint64",
            DataType::Float32 => "float32",
            DataType::Float64 => "float64",
            DataType::Decimal {
                precision: Some(p),
                scale,
            } => return write!(f, "decimal({p},{})", scale.unwrap_or(0)),
            DataType::Decimal { .. } => "decimal",
            DataType::Text => "text",
            DataType::Bytes => "bytes",
            DataType::Uuid => "uuid",
            DataType::Json => "json",
            DataType::Date => "date",
            DataType::Time => "time",
            DataType::TimeTz => "timetz",
            DataType::Timestamp => "timestamp",
            DataType::TimestampTz => "timestamptz",
            DataType::Interval => "interval",
            DataType::Enum => "enum",
            DataType::Set => "set",
            DataType::Array(element) => return write!(f, "array<{element}>"),
        };
        f.write_str(name)
    }
}

impl std::str::FromStr for DataType {
    type Err = crate::error::UnknownDataType;

    fn from_str(text: &str) -> Result<DataType, Self::Err> {
        Ok(match text {
            "bool" => DataType::Bool,
            "int8" => DataType::Int8,
            "int16" => DataType::Int16,
            "int32" => DataType::Int32,
            "int64" => DataType::Int64,
            "uint8" => DataType::UInt8,
            "uint16" => DataType::UInt16,
            "uint32" => DataType::UInt32,
            "uint64" => DataType::UInt64,
            "float32" => DataType::Float32,
            "float64" => DataType::Float64,
            "decimal" => DataType::Decimal {
                precision: None,
                scale: None,
            },
            "text" => DataType::Text,
            "bytes" => DataType::Bytes,
            "uuid" => DataType::Uuid,
            "json" => DataType::Json,
            "date" => DataType::Date,
            "time" => DataType::Time,
            "timetz" => DataType::TimeTz,
            "timestamp" => DataType::Timestamp,
            "timestamptz" => DataType::TimestampTz,
            "interval" => DataType::Interval,
            "enum" => DataType::Enum,
            "set" => DataType::Set,
            _ => {
                if let Some(inner) = text
                    .strip_prefix("array<")
                    .and_then(|t| t.strip_suffix('>'))
                {
                    return Ok(DataType::Array(Box::new(inner.parse()?)));
                }
                let bad = || format!("{text:?} is not a sluice data type");
                let (p, s) = text
                    .strip_prefix("decimal(")
                    .and_then(|t| t.strip_suffix(')'))
                    .and_then(|t| t.split_once(','))
                    .ok_or_else(bad)?;
                DataType::Decimal {
                    precision: Some(p.parse().map_err(|_| bad())?),
                    scale: Some(s.parse().map_err(|_| bad())?),
                }
            }
        })
    }
}

/// A column as the source describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The source's type name, e.g. `numeric(10,2)`, `timestamptz`, `_int4`.
    pub type_name: String,
    pub data_type: DataType,
    /// Part of the primary key (the event key).
    pub key: bool,
    pub nullable: bool,
}

/// One version of a table's schema. Events point at the version their row was written under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub table: TableId,
    pub columns: Vec<Column>,
    /// Bumped by the source each time the table's columns change.
    pub version: u32,
}

impl TableSchema {
    pub fn key_columns(&self) -> impl Iterator<Item = (usize, &Column)> {
        self.columns.iter().enumerate().filter(|(_, c)| c.key)
    }

    pub fn has_key(&self) -> bool {
        self.columns.iter().any(|c| c.key)
    }
}

/// Whether an event came from a snapshot, and where in it (Debezium's `source.snapshot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMarker {
    No,
    /// The snapshot's first row.
    First,
    /// A table's first row (not the snapshot's).
    FirstInDataCollection,
    Yes,
    /// A table's last row (not the snapshot's).
    LastInDataCollection,
    /// The snapshot's last row.
    Last,
    /// A row read by an on-demand snapshot while streaming (Debezium's `incremental`).
    Incremental,
}

impl SnapshotMarker {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMarker::No => "false",
            SnapshotMarker::First => "first",
            SnapshotMarker::FirstInDataCollection => "first_in_data_collection",
            SnapshotMarker::Yes => "true",
            SnapshotMarker::LastInDataCollection => "last_in_data_collection",
            SnapshotMarker::Last => "last",
            SnapshotMarker::Incremental => "incremental",
        }
    }
}

/// The source transaction an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnInfo {
    /// `txid:lsn` for Postgres, the GTID for MySQL.
    pub id: Arc<str>,
    /// 1-based position of the event within its transaction.
    pub total_order: u64,
    /// 1-based position of the event among its table's events in the transaction; 0 when
    /// not tracked (the source's `transaction_metadata` is off).
    pub data_collection_order: u64,
}

/// A source transaction's boundary record, Debezium's transaction metadata: `BEGIN` goes out
/// with the transaction's first events, `END` with its last, saying how many events it had
/// per table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnBoundary {
    /// The transaction's id, as in its events' [`TxnInfo`].
    pub id: Arc<str>,
    /// Commit time of the transaction, microseconds since the Unix epoch.
    pub commit_ts_us: i64,
    /// `None` for BEGIN; for END, the events per table (`schema.table`), by table name.
    pub end: Option<Vec<(String, u64)>>,
}

impl TxnBoundary {
    /// `BEGIN` or `END`.
    pub fn status(&self) -> &'static str {
        match self.end {
            None => "BEGIN",
            Some(_) => "END",
        }
    }

    /// The transaction's events (END only).
    pub fn event_count(&self) -> Option<u64> {
        self.end
            .as_ref()
            .map(|tables| tables.iter().map(|t| t.1).sum())
    }
}

/// A logical decoding message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    pub prefix: String,
    pub content: Bytes,
    pub transactional: bool,
}

/// One change.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub op: Op,
    /// The table and schema version; `None` only for `Message`.
    pub table: Option<Arc<TableSchema>>,
    /// Row before the change, in column order of `table`. For Postgres under REPLICA IDENTITY
    /// DEFAULT only the key columns are set (others `Null`); see `before_is_key_only`.
    pub before: Option<Vec<Value>>,
    pub before_is_key_only: bool,
    pub after: Option<Vec<Value>>,
    pub snapshot: SnapshotMarker,
    /// Commit time of the source transaction, microseconds since the Unix epoch.
    pub commit_ts_us: i64,
    /// Position of this change in the source stream.
    pub position: Position,
    /// Source transaction id (Postgres xid), when the source has one.
    pub xid: Option<u64>,
    pub txn: Option<TxnInfo>,
    /// Boxed: messages are rare, and every event moves this field around.
    pub message: Option<Box<LogicalMessage>>,
}

#[cfg(test)]
mod tests {
    use super::DataType;

    #[test]
    fn data_types_round_trip_through_their_text() {
        let types = [
            DataType::Bool,
            DataType::Int8,
            DataType::UInt64,
            DataType::Float32,
            DataType::Decimal {
                precision: Some(10),
                scale: Some(2),
            },
            DataType::Decimal {
                precision: None,
                scale: None,
            },
            DataType::TimestampTz,
            DataType::Set,
            DataType::Array(Box::new(DataType::Array(Box::new(DataType::Decimal {
                precision: Some(5),
                scale: Some(0),
            })))),
        ];
        for t in types {
            assert_eq!(t.to_string().parse::<DataType>(), Ok(t.clone()), "{t}");
        }
        assert!("decimal(x,1)".parse::<DataType>().is_err());
        assert!("varchar".parse::<DataType>().is_err());
    }

    #[test]
    fn widening() {
        assert!(DataType::Int32.widens_to(&DataType::Int64));
        assert!(!DataType::Int64.widens_to(&DataType::Int32));
        let d = |p| DataType::Decimal {
            precision: Some(p),
            scale: Some(2),
        };
        assert!(d(10).widens_to(&d(12)));
        assert!(!d(12).widens_to(&d(10)));
        assert!(DataType::UInt32.widens_to(&DataType::Int64));
        assert!(!DataType::Text.widens_to(&DataType::Int64));
    }
}
