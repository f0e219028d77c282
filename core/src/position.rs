//! Source positions: where in a database's change stream an event or checkpoint is.
//!
//! A closed enum, one variant per kind of stream, each with `Display`/`FromStr` and a total order
//! within its own kind. Positions of different kinds never compare (a pipeline's checkpoint always
//! holds its own source's kind).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A Postgres log sequence number, printed as Postgres prints it: `16/B374D848`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid position {text:?}: {reason}")]
pub struct PositionParseError {
    pub text: String,
    pub reason: &'static str,
}

fn parse_error(text: &str, reason: &'static str) -> PositionParseError {
    PositionParseError {
        text: text.to_owned(),
        reason,
    }
}

impl FromStr for Lsn {
    type Err = PositionParseError;

    fn from_str(text: &str) -> Result<Lsn, PositionParseError> {
        let (high, low) = text
            .split_once('/')
            .ok_or_else(|| parse_error(text, "an LSN looks like 16/B374D848"))?;
        let high = u32::from_str_radix(high, 16)
            .map_err(|_| parse_error(text, "LSN high half is not hex"))?;
        let low = u32::from_str_radix(low, 16)
            .map_err(|_| parse_error(text, "LSN low half is not hex"))?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

/// Where a source is in its stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    /// Postgres: the end LSN of a committed transaction (`pg:16/B374D848`).
    PgLsn(Lsn),
    /// MySQL GTID set (`mysql-gtid:3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5`).
    MysqlGtidSet(Arc<str>),
    /// MariaDB GTID list, `domain-server-seq` per domain (`mariadb-gtid:0-1-42,1-2-7`).
    MariadbGtidList(Arc<str>),
    /// Binlog file and byte offset, when GTIDs are off (`binlog:mysql-bin.000003:4`).
    BinlogFile { file: Arc<str>, offset: u64 },
    /// Kafka: the next offset of every partition a Kafka source reads,
    /// `kafka:topic/partition@offset,…` in topic and partition order.
    KafkaOffsets(Arc<str>),
}

impl Position {
    /// A copy with reference counts of its own. Readers on different threads stamping many
    /// events with one position each bump its shared count per event, and fight over it; a
    /// copy per chunk of events keeps each count on one thread.
    pub fn unshared(&self) -> Position {
        match self {
            Position::PgLsn(lsn) => Position::PgLsn(*lsn),
            Position::MysqlGtidSet(set) => Position::MysqlGtidSet(Arc::from(&**set)),
            Position::MariadbGtidList(list) => Position::MariadbGtidList(Arc::from(&**list)),
            Position::BinlogFile { file, offset } => Position::BinlogFile {
                file: Arc::from(&**file),
                offset: *offset,
            },
            Position::KafkaOffsets(offsets) => Position::KafkaOffsets(Arc::from(&**offsets)),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::PgLsn(lsn) => write!(f, "pg:{lsn}"),
            Position::MysqlGtidSet(set) => write!(f, "mysql-gtid:{set}"),
            Position::MariadbGtidList(list) => write!(f, "mariadb-gtid:{list}"),
            Position::BinlogFile { file, offset } => write!(f, "binlog:{file}:{offset}"),
            Position::KafkaOffsets(offsets) => write!(f, "kafka:{offsets}"),
        }
    }
}

impl FromStr for Position {
    type Err = PositionParseError;

    fn from_str(text: &str) -> Result<Position, PositionParseError> {
        let (kind, rest) = text
            .split_once(':')
            .ok_or_else(|| parse_error(text, "expected KIND:VALUE"))?;
        match kind {
            "pg" => Ok(Position::PgLsn(rest.parse()?)),
            "mysql-gtid" => Ok(Position::MysqlGtidSet(rest.to_owned().into())),
            "mariadb-gtid" => Ok(Position::MariadbGtidList(rest.to_owned().into())),
            "kafka" => Ok(Position::KafkaOffsets(rest.to_owned().into())),
            "binlog" => {
                let (file, offset) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| parse_error(text, "expected binlog:FILE:OFFSET"))?;
                let offset = offset
                    .parse()
                    .map_err(|_| parse_error(text, "binlog offset is not a number"))?;
                Ok(Position::BinlogFile {
                    file: file.to_owned().into(),
                    offset,
                })
            }
            _ => Err(parse_error(
                text,
                "unknown position kind (pg, mysql-gtid, mariadb-gtid, binlog, kafka)",
            )),
        }
    }
}

/// MariaDB GTID lists (`domain-server-seq,…`) by sequence number per domain: greater when no
/// domain is behind and one is ahead; `None` when each is ahead in some domain.
fn compare_gtid_lists(a: &str, b: &str) -> Option<Ordering> {
    let parse = |list: &str| -> Option<std::collections::BTreeMap<u32, u64>> {
        list.split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(|g| {
                let mut parts = g.split('-');
                let domain = parts.next()?.parse().ok()?;
                let _server = parts.next()?;
                let seq = parts.next()?.parse().ok()?;
                Some((domain, seq))
            })
            .collect()
    };
    let (a, b) = (parse(a)?, parse(b)?);
    let mut order = Ordering::Equal;
    for domain in a.keys().chain(b.keys()) {
        let here = a
            .get(domain)
            .copied()
            .unwrap_or(0)
            .cmp(&b.get(domain).copied().unwrap_or(0));
        match (order, here) {
            (_, Ordering::Equal) => {}
            (Ordering::Equal, other) => order = other,
            (current, other) if current != other => return None,
            _ => {}
        }
    }
    Some(order)
}

impl PartialOrd for Position {
    /// Orders positions of the same kind; `None` across kinds. GTID sets are ordered by
    /// inclusion in the sources that own them, not here.
    fn partial_cmp(&self, other: &Position) -> Option<Ordering> {
        match (self, other) {
            (Position::PgLsn(a), Position::PgLsn(b)) => Some(a.cmp(b)),
            (
                Position::BinlogFile {
                    file: fa,
                    offset: oa,
                },
                Position::BinlogFile {
                    file: fb,
                    offset: ob,
                },
            ) => Some(fa.cmp(fb).then(oa.cmp(ob))),
            (Position::MariadbGtidList(a), Position::MariadbGtidList(b)) => {
                compare_gtid_lists(a, b)
            }
            _ => (self == other).then_some(Ordering::Equal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_text() {
        let cases = [
            Position::PgLsn(Lsn(0x16_B374_D848)),
            Position::PgLsn(Lsn(0)),
            Position::MysqlGtidSet("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5".into()),
            Position::MariadbGtidList("0-1-42,1-2-7".into()),
            Position::KafkaOffsets("dbserver1.public.t/0@42,dbserver1.public.t/1@7".into()),
            Position::BinlogFile {
                file: "mysql-bin.000003".into(),
                offset: 4,
            },
        ];
        for position in cases {
            let text = position.to_string();
            assert_eq!(text.parse::<Position>().unwrap(), position, "{text}");
        }
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
    }

    #[test]
    fn lsns_order_numerically_and_bad_text_is_refused() {
        assert!(
            "pg:1/0".parse::<Position>().unwrap() > "pg:0/FFFFFFFF".parse::<Position>().unwrap()
        );
        for bad in ["", "pg:", "pg:zz/1", "nope:1", "binlog:file"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod gtid_order_tests {
    use super::*;

    #[test]
    fn mariadb_gtid_lists_order_by_domain() {
        let p = |s: &str| Position::MariadbGtidList(s.into());
        assert_eq!(p("0-1-5").partial_cmp(&p("0-1-4")), Some(Ordering::Greater));
        assert_eq!(
            p("0-1-5,1-2-3").partial_cmp(&p("0-1-5")),
            Some(Ordering::Greater)
        );
        assert_eq!(p("0-1-5").partial_cmp(&p("0-2-5")), Some(Ordering::Equal));
        assert_eq!(p("0-1-6,1-1-1").partial_cmp(&p("0-1-5,1-1-2")), None);
    }
}
