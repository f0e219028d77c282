//! Positions in a MySQL or MariaDB binlog.
//!
//! - MariaDB GTIDs are `domain-server-seq`; a position is a list with the last GTID of each
//!   domain (`0-1-42,1-2-7`), which is what `@slave_connect_state` takes to resume after it.
//! - MySQL GTIDs are `source_uuid:n`; a position is a GTID set (`uuid:1-42:50,uuid2:1-7`), the
//!   set of transactions already seen, which `COM_BINLOG_DUMP_GTID` takes to send the rest.
//! - Without GTIDs: binlog file and offset of the next event.

use std::collections::BTreeMap;

sluice_core::reason_error!(
    /// A GTID position (MariaDB list or MySQL set) that does not parse.
    pub GtidError
);

/// MariaDB's GTID position: per domain, the server and sequence number of its last GTID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct MariadbGtidList {
    domains: BTreeMap<u32, (u32, u64)>,
}

impl MariadbGtidList {
    pub(super) fn parse(text: &str) -> Result<MariadbGtidList, GtidError> {
        let mut list = MariadbGtidList::default();
        for gtid in text.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            let parts: Vec<&str> = gtid.split('-').collect();
            let bad = || {
                GtidError(format!(
                    "{gtid:?} is not a MariaDB GTID (domain-server-seq)"
                ))
            };
            if parts.len() != 3 {
                return Err(bad());
            }
            let domain = parts[0].parse().map_err(|_| bad())?;
            let server = parts[1].parse().map_err(|_| bad())?;
            let seq = parts[2].parse().map_err(|_| bad())?;
            list.domains.insert(domain, (server, seq));
        }
        Ok(list)
    }

    pub(super) fn apply(&mut self, domain: u32, server: u32, seq: u64) {
        self.domains.insert(domain, (server, seq));
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

impl std::fmt::Display for MariadbGtidList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (domain, (server, seq))) in self.domains.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{domain}-{server}-{seq}")?;
        }
        Ok(())
    }
}

/// A MariaDB GTID event (type 162): sequence number and domain; the server id is in the
/// event header. Body: seq_no (8 bytes LE), domain_id (4 bytes LE), flags (1 byte), …
pub(super) fn parse_mariadb_gtid_event(body: &[u8]) -> Option<(u64, u32)> {
    let seq = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?);
    Some((seq, domain))
}

/// MySQL's executed GTID set: per source uuid, sorted disjoint intervals `[start, end]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct MysqlGtidSet {
    sources: BTreeMap<String, Vec<(u64, u64)>>,
}

impl MysqlGtidSet {
    pub(super) fn parse(text: &str) -> Result<MysqlGtidSet, GtidError> {
        let mut set = MysqlGtidSet::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut pieces = part.split(':');
            let uuid = pieces
                .next()
                .filter(|u| u.len() == 36)
                .ok_or_else(|| format!("{part:?} is not uuid:interval"))?
                .to_ascii_lowercase();
            for interval in pieces {
                let bad = || GtidError(format!("{interval:?} in {part:?} is not n or n-m"));
                let (start, end) = match interval.split_once('-') {
                    Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
                    None => {
                        let n = interval.parse().map_err(|_| bad())?;
                        (n, n)
                    }
                };
                if start > end || start == 0 {
                    return Err(bad());
                }
                for n in [start, end] {
                    set.add(&uuid, n);
                }
                // Fill the inside of the interval in one step.
                let intervals = set.sources.get_mut(&uuid).expect("just added");
                intervals.push((start, end));
                normalize(intervals);
            }
        }
        Ok(set)
    }

    /// Adds one transaction.
    pub(super) fn add(&mut self, uuid: &str, n: u64) {
        let intervals = self.sources.entry(uuid.to_ascii_lowercase()).or_default();
        intervals.push((n, n));
        normalize(intervals);
    }

    #[cfg(test)]
    pub(super) fn contains(&self, uuid: &str, n: u64) -> bool {
        self.sources
            .get(&uuid.to_ascii_lowercase())
            .is_some_and(|intervals| intervals.iter().any(|(a, b)| (*a..=*b).contains(&n)))
    }
}

fn normalize(intervals: &mut Vec<(u64, u64)>) {
    intervals.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
    for &(start, end) in intervals.iter() {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    *intervals = merged;
}

impl std::fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (uuid, intervals)) in self.sources.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(uuid)?;
            for (start, end) in intervals {
                if start == end {
                    write!(f, ":{start}")?;
                } else {
                    write!(f, ":{start}-{end}")?;
                }
            }
        }
        Ok(())
    }
}

/// A MySQL GTID as its 16-byte uuid renders (`3e11fa47-71ca-11e1-9e33-c80aa9429562`).
pub(super) fn uuid_text(sid: &[u8; 16]) -> String {
    sluice_core::value::uuid_to_string(sid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_lists_keep_the_last_gtid_per_domain() {
        let mut list = MariadbGtidList::parse("0-1-42,1-2-7").unwrap();
        list.apply(0, 1, 43);
        list.apply(2, 5, 1);
        assert_eq!(list.to_string(), "0-1-43,1-2-7,2-5-1");
        assert!(MariadbGtidList::parse("0-1").is_err());
        assert!(MariadbGtidList::parse("").unwrap().is_empty());
    }

    #[test]
    fn mariadb_gtid_event_bodies_parse() {
        // Recorded from MariaDB 10.11: GTID 0-1-1234, flags 0x0c (standalone).
        let body = [
            0xd2, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0c, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(parse_mariadb_gtid_event(&body), Some((1234, 0)));
        assert_eq!(parse_mariadb_gtid_event(&body[..5]), None);
    }

    #[test]
    fn mysql_sets_merge_intervals() {
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut set = MysqlGtidSet::parse(&format!("{uuid}:1-5:7")).unwrap();
        assert_eq!(set.to_string(), format!("{uuid}:1-5:7"));
        set.add(uuid, 6);
        assert_eq!(set.to_string(), format!("{uuid}:1-7"));
        set.add("4E11FA47-71CA-11E1-9E33-C80AA9429562", 3);
        assert!(set.contains(uuid, 4));
        assert!(!set.contains(uuid, 9));
        assert_eq!(
            set.to_string(),
            format!("{uuid}:1-7,4e11fa47-71ca-11e1-9e33-c80aa9429562:3")
        );
        assert!(MysqlGtidSet::parse("nope:1").is_err());
        assert!(MysqlGtidSet::parse(&format!("{uuid}:5-2")).is_err());
    }
}
