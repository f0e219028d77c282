//! Where the binlog stream stands (`Cursor`: a GTID list, a GTID set, or a file and offset)
//! and the GTIDs that move it, read from the events that start transactions.

use mysql_async::binlog::events::{Event, EventData};
use mysql_async::{GnoInterval, Sid};
use sluice_core::position::Position;

use super::super::gtid::{self, MariadbGtidList, MysqlGtidSet};
use super::super::SourceError;

/// MariaDB's GTID event type.
const MARIADB_GTID_EVENT: u8 = 162;

/// Where the stream stands.
#[derive(Clone)]
pub(super) enum Cursor {
    Mariadb(MariadbGtidList),
    Mysql(MysqlGtidSet),
    File { file: String, offset: u64 },
}

impl Cursor {
    /// The cursor as it will be once `gtid`'s transaction has committed.
    pub(super) fn after(&self, gtid: &Gtid) -> Cursor {
        let mut next = self.clone();
        match (&mut next, gtid) {
            (
                Cursor::Mariadb(list),
                Gtid::Mariadb {
                    domain,
                    server,
                    seq,
                },
            ) => list.apply(*domain, *server, *seq),
            (Cursor::Mysql(set), Gtid::Mysql { uuid, gno }) => set.add(uuid, *gno),
            _ => {}
        }
        next
    }

    pub(super) fn position(&self) -> Position {
        match self {
            Cursor::Mariadb(list) => Position::MariadbGtidList(list.to_string().into()),
            Cursor::Mysql(set) => Position::MysqlGtidSet(set.to_string().into()),
            Cursor::File { file, offset } => Position::BinlogFile {
                file: file.clone().into(),
                offset: *offset,
            },
        }
    }
}

#[derive(Clone)]
pub(super) enum Gtid {
    Mariadb { domain: u32, server: u32, seq: u64 },
    Mysql { uuid: String, gno: u64 },
}

impl Gtid {
    pub(super) fn text(&self) -> String {
        match self {
            Gtid::Mariadb {
                domain,
                server,
                seq,
            } => format!("{domain}-{server}-{seq}"),
            Gtid::Mysql { uuid, gno } => format!("{uuid}:{gno}"),
        }
    }
}

/// The GTID an event starts a transaction with: MariaDB's GTID event (type 162, which
/// mysql_common does not decode) or MySQL's GTID event.
pub(super) fn gtid_of(event: &Event) -> Result<Option<Gtid>, SourceError> {
    let header = event.header();
    if header.event_type_raw() == MARIADB_GTID_EVENT {
        let (seq, domain) = gtid::parse_mariadb_gtid_event(event.data())
            .ok_or_else(|| SourceError::Other("a MariaDB GTID event is too short".into()))?;
        return Ok(Some(Gtid::Mariadb {
            domain,
            server: header.server_id(),
            seq,
        }));
    }
    if header.event_type_raw() == 33 {
        if let Ok(Some(EventData::GtidEvent(gtid_event))) = event.read_data() {
            return Ok(Some(Gtid::Mysql {
                uuid: gtid::uuid_text(&gtid_event.sid()),
                gno: gtid_event.gno(),
            }));
        }
        return Err(SourceError::Other("an unreadable MySQL GTID event".into()));
    }
    Ok(None)
}

/// A MySQL GTID set as the dump request's SIDs (intervals end-exclusive on the wire).
pub(super) fn mysql_sids(set: &str) -> Result<Vec<Sid<'static>>, SourceError> {
    let mut sids = Vec::new();
    for part in set.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut pieces = part.split(':');
        let uuid = pieces.next().unwrap_or_default();
        let bytes = sluice_core::value::parse_uuid(uuid)
            .ok_or_else(|| SourceError::Other(format!("{uuid:?} in the GTID set is not a uuid")))?;
        let mut sid = Sid::new(bytes);
        for interval in pieces {
            let (start, end) = match interval.split_once('-') {
                Some((a, b)) => (a.parse::<u64>(), b.parse::<u64>()),
                None => (interval.parse::<u64>(), interval.parse::<u64>()),
            };
            let (Ok(start), Ok(end)) = (start, end) else {
                return Err(SourceError::Other(format!(
                    "{interval:?} in the GTID set is not an interval"
                )));
            };
            sid = sid.with_interval(GnoInterval::new(start, end + 1));
        }
        sids.push(sid);
    }
    Ok(sids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::binlog::events::FormatDescriptionEvent;
    use mysql_async::binlog::BinlogVersion;

    /// A binlog event: the 19-byte v4 header (timestamp, type, server id, length, next
    /// position, flags) and `body`.
    fn event(type_code: u8, server_id: u32, body: &[u8]) -> Event {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        bytes.push(type_code);
        bytes.extend_from_slice(&server_id.to_le_bytes());
        bytes.extend_from_slice(&(19 + body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&4_000u32.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        bytes.extend_from_slice(body);
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
        Event::read(&fde, &bytes[..]).expect("a well-formed event")
    }

    #[test]
    fn mariadb_gtid_events_give_domain_server_and_sequence() {
        // Body as MariaDB 10.11 writes it: seq_no 1234, domain 3, flags (standalone), padding.
        let mut body = 1234u64.to_le_bytes().to_vec();
        body.extend_from_slice(&3u32.to_le_bytes());
        body.push(0x0d);
        body.extend_from_slice(&[0; 6]);
        match gtid_of(&event(162, 7, &body)).unwrap() {
            Some(Gtid::Mariadb {
                domain,
                server,
                seq,
            }) => assert_eq!((domain, server, seq), (3, 7, 1234)),
            _ => panic!("not a MariaDB GTID"),
        }
    }

    #[test]
    fn mysql_gtid_events_give_uuid_and_number() {
        // MySQL 8's GTID_LOG_EVENT: commit flag, source uuid, gno, then the logical clock
        // (type 2, last_committed, sequence_number).
        let uuid = [
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ];
        let mut body = vec![1];
        body.extend_from_slice(&uuid);
        body.extend_from_slice(&42i64.to_le_bytes());
        body.push(2);
        body.extend_from_slice(&10i64.to_le_bytes());
        body.extend_from_slice(&11i64.to_le_bytes());
        match gtid_of(&event(33, 1, &body)).unwrap() {
            Some(Gtid::Mysql { uuid, gno }) => {
                assert_eq!(uuid, "3e11fa47-71ca-11e1-9e33-c80aa9429562");
                assert_eq!(gno, 42);
                let mut set = MysqlGtidSet::parse(&format!("{uuid}:1-41")).unwrap();
                set.add(&uuid, gno);
                assert_eq!(set.to_string(), format!("{uuid}:1-42"));
            }
            _ => panic!("not a MySQL GTID"),
        }
        // Any other event starts nothing.
        assert!(gtid_of(&event(16, 1, &7u64.to_le_bytes()))
            .unwrap()
            .is_none());
    }
}
