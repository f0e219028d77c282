//! pgoutput messages (protocol versions 1 and 2) from the bytes of an XLogData payload.
//!
//! Parsing is zero-copy: column texts are slices of the received buffer. Every length is
//! checked; malformed input is an error, never a panic. Protocol 2 (streamed in-progress
//! transactions) adds Stream Start/Stop/Commit/Abort and, between a Stream Start and its Stop,
//! the (sub)transaction's xid ahead of each data message's fields.

use bytes::{Buf, Bytes};
use sluice_core::position::Lsn;

use super::protocol::PG_EPOCH_OFFSET_US;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum PgOutput {
    Begin {
        final_lsn: Lsn,
        commit_ts_us: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts_us: i64,
    },
    Origin {
        name: String,
    },
    Relation(RelationMessage),
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Vec<TupleValue>,
    },
    Update {
        relation: u32,
        old: Option<OldTuple>,
        new: Vec<TupleValue>,
    },
    Delete {
        relation: u32,
        old: OldTuple,
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
    /// A block of an in-progress transaction's changes begins (protocol 2).
    StreamStart {
        xid: u32,
        first_segment: bool,
    },
    StreamStop,
    /// A streamed transaction committed: its blocks, in order, are the transaction.
    StreamCommit {
        xid: u32,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts_us: i64,
    },
    /// A streamed transaction (`subxid == xid`) or one of its subtransactions rolled back.
    StreamAbort {
        xid: u32,
        subxid: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct RelationMessage {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct RelationColumn {
    /// Part of the replica identity.
    pub identity: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// The old row of an update or delete: key columns only (`K`) or the whole row (`O`, under
/// REPLICA IDENTITY FULL).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OldTuple {
    pub key_only: bool,
    pub values: Vec<TupleValue>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum TupleValue {
    Null,
    /// An unchanged TOASTed value the server did not send.
    Unchanged,
    Text(Bytes),
    Binary(Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput message: {0}")]
pub struct DecodeError(pub String);

fn error(message: impl Into<String>) -> DecodeError {
    DecodeError(message.into())
}

struct Reader {
    data: Bytes,
}

impl Reader {
    fn need(&self, n: usize, what: &str) -> Result<(), DecodeError> {
        if self.data.remaining() < n {
            return Err(error(format!("truncated {what}")));
        }
        Ok(())
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        Ok(self.data.get_u8())
    }
    fn i16(&mut self, what: &str) -> Result<i16, DecodeError> {
        self.need(2, what)?;
        Ok(self.data.get_i16())
    }
    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        Ok(self.data.get_u32())
    }
    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        self.need(4, what)?;
        Ok(self.data.get_i32())
    }
    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        self.need(8, what)?;
        Ok(self.data.get_u64())
    }
    fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        self.need(8, what)?;
        Ok(self.data.get_i64())
    }
    fn cstring(&mut self, what: &str) -> Result<String, DecodeError> {
        let end = self
            .data
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| error(format!("unterminated {what}")))?;
        let text = String::from_utf8(self.data[..end].to_vec())
            .map_err(|_| error(format!("{what} is not UTF-8")))?;
        self.data.advance(end + 1);
        Ok(text)
    }
    fn bytes(&mut self, n: usize, what: &str) -> Result<Bytes, DecodeError> {
        self.need(n, what)?;
        Ok(self.data.split_to(n))
    }
    fn timestamp(&mut self, what: &str) -> Result<i64, DecodeError> {
        Ok(self.i64(what)?.saturating_add(PG_EPOCH_OFFSET_US))
    }

    fn tuple(&mut self) -> Result<Vec<TupleValue>, DecodeError> {
        let count = self.i16("tuple column count")?;
        let count = usize::try_from(count).map_err(|_| error("negative tuple column count"))?;
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            values.push(match self.u8("tuple value kind")? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::Unchanged,
                kind @ (b't' | b'b') => {
                    let len = self.i32("tuple value length")?;
                    let len =
                        usize::try_from(len).map_err(|_| error("negative tuple value length"))?;
                    let data = self.bytes(len, "tuple value")?;
                    if kind == b't' {
                        TupleValue::Text(data)
                    } else {
                        TupleValue::Binary(data)
                    }
                }
                other => return Err(error(format!("unknown tuple value kind {other:#x}"))),
            });
        }
        Ok(values)
    }
}

/// Parses one pgoutput message outside a stream block.
pub(super) fn parse(data: Bytes) -> Result<PgOutput, DecodeError> {
    parse_in(data, false).map(|(message, _)| message)
}

/// Parses one pgoutput message; `in_stream` between a Stream Start and its Stop, where data
/// messages carry the xid of the (sub)transaction that made them, returned alongside.
pub(super) fn parse_in(
    data: Bytes,
    in_stream: bool,
) -> Result<(PgOutput, Option<u32>), DecodeError> {
    let mut r = Reader { data };
    let tag = r.u8("message tag")?;
    let xid = match tag {
        b'R' | b'Y' | b'I' | b'U' | b'D' | b'T' | b'M' if in_stream => {
            Some(r.u32("streamed change xid")?)
        }
        _ => None,
    };
    let message = match tag {
        b'B' => PgOutput::Begin {
            final_lsn: Lsn(r.u64("begin lsn")?),
            commit_ts_us: r.timestamp("begin timestamp")?,
            xid: r.u32("begin xid")?,
        },
        b'C' => {
            let _flags = r.u8("commit flags")?;
            PgOutput::Commit {
                commit_lsn: Lsn(r.u64("commit lsn")?),
                end_lsn: Lsn(r.u64("commit end lsn")?),
                commit_ts_us: r.timestamp("commit timestamp")?,
            }
        }
        b'O' => {
            let _lsn = r.u64("origin lsn")?;
            PgOutput::Origin {
                name: r.cstring("origin name")?,
            }
        }
        b'R' => {
            let oid = r.u32("relation oid")?;
            let namespace = r.cstring("relation namespace")?;
            let name = r.cstring("relation name")?;
            let replica_identity = r.u8("replica identity")?;
            let count = r.i16("relation column count")?;
            let count =
                usize::try_from(count).map_err(|_| error("negative relation column count"))?;
            let mut columns = Vec::with_capacity(count);
            for _ in 0..count {
                let flags = r.u8("column flags")?;
                columns.push(RelationColumn {
                    identity: flags & 1 == 1,
                    name: r.cstring("column name")?,
                    type_oid: r.u32("column type")?,
                    type_modifier: r.i32("column type modifier")?,
                });
            }
            PgOutput::Relation(RelationMessage {
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => PgOutput::Type {
            oid: r.u32("type oid")?,
            namespace: r.cstring("type namespace")?,
            name: r.cstring("type name")?,
        },
        b'I' => {
            let relation = r.u32("insert relation")?;
            if r.u8("insert tuple tag")? != b'N' {
                return Err(error("insert without a new tuple"));
            }
            PgOutput::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32("update relation")?;
            let mut old = None;
            let mut kind = r.u8("update tuple tag")?;
            if kind == b'K' || kind == b'O' {
                old = Some(OldTuple {
                    key_only: kind == b'K',
                    values: r.tuple()?,
                });
                kind = r.u8("update tuple tag")?;
            }
            if kind != b'N' {
                return Err(error("update without a new tuple"));
            }
            PgOutput::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32("delete relation")?;
            let kind = r.u8("delete tuple tag")?;
            if kind != b'K' && kind != b'O' {
                return Err(error("delete without an old tuple"));
            }
            PgOutput::Delete {
                relation,
                old: OldTuple {
                    key_only: kind == b'K',
                    values: r.tuple()?,
                },
            }
        }
        b'T' => {
            let count = r.u32("truncate relation count")?;
            let options = r.u8("truncate options")?;
            let mut relations = Vec::with_capacity(count.min(1024) as usize);
            for _ in 0..count {
                relations.push(r.u32("truncate relation")?);
            }
            PgOutput::Truncate {
                relations,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            }
        }
        b'M' => {
            let flags = r.u8("message flags")?;
            let lsn = Lsn(r.u64("message lsn")?);
            let prefix = r.cstring("message prefix")?;
            let len = r.u32("message length")? as usize;
            PgOutput::Message {
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content: r.bytes(len, "message content")?,
            }
        }
        b'S' => PgOutput::StreamStart {
            xid: r.u32("stream start xid")?,
            first_segment: r.u8("stream start first segment")? == 1,
        },
        b'E' => PgOutput::StreamStop,
        b'c' => {
            let xid = r.u32("stream commit xid")?;
            let _flags = r.u8("stream commit flags")?;
            PgOutput::StreamCommit {
                xid,
                commit_lsn: Lsn(r.u64("stream commit lsn")?),
                end_lsn: Lsn(r.u64("stream commit end lsn")?),
                commit_ts_us: r.timestamp("stream commit timestamp")?,
            }
        }
        // Protocol 4 adds the abort's LSN and time, which sluice has no use for.
        b'A' => PgOutput::StreamAbort {
            xid: r.u32("stream abort xid")?,
            subxid: r.u32("stream abort subxid")?,
        },
        other => return Err(error(format!("unknown message tag {other:#x}"))),
    };
    Ok((message, xid))
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::*;

    fn relation_bytes() -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'R');
        b.put_u32(16384);
        b.put_slice(b"public\0orders\0");
        b.put_u8(b'f');
        b.put_i16(2);
        b.put_u8(1);
        b.put_slice(b"id\0");
        b.put_u32(23);
        b.put_i32(-1);
        b.put_u8(0);
        b.put_slice(b"note\0");
        b.put_u32(25);
        b.put_i32(-1);
        b.freeze()
    }

    #[test]
    fn parses_relation_and_update_with_old_tuple_and_toast() {
        let PgOutput::Relation(relation) = parse(relation_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(relation.name, "orders");
        assert_eq!(relation.replica_identity, b'f');
        assert!(relation.columns[0].identity && !relation.columns[1].identity);

        let mut b = BytesMut::new();
        b.put_u8(b'U');
        b.put_u32(16384);
        b.put_u8(b'O');
        b.put_i16(2);
        b.put_u8(b't');
        b.put_i32(1);
        b.put_slice(b"7");
        b.put_u8(b'n');
        b.put_u8(b'N');
        b.put_i16(2);
        b.put_u8(b't');
        b.put_i32(1);
        b.put_slice(b"7");
        b.put_u8(b'u');
        let PgOutput::Update { relation, old, new } = parse(b.freeze()).unwrap() else {
            panic!()
        };
        assert_eq!(relation, 16384);
        let old = old.unwrap();
        assert!(!old.key_only);
        assert_eq!(
            old.values,
            vec![TupleValue::Text(Bytes::from_static(b"7")), TupleValue::Null]
        );
        assert_eq!(new[1], TupleValue::Unchanged);
    }

    /// A Commit (`C`) or, with its xid, a Stream Commit (`c`): commit LSN 0x10, end 0x20, at
    /// Postgres' epoch.
    fn commit_bytes(xid: Option<u32>) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(if xid.is_some() { b'c' } else { b'C' });
        if let Some(xid) = xid {
            b.put_u32(xid);
        }
        b.put_u8(0);
        b.put_u64(0x10);
        b.put_u64(0x20);
        b.put_i64(0);
        b.freeze()
    }

    #[test]
    fn begin_and_commit_carry_lsns_and_unix_timestamps() {
        assert_eq!(
            parse(commit_bytes(None)).unwrap(),
            PgOutput::Commit {
                commit_lsn: Lsn(0x10),
                end_lsn: Lsn(0x20),
                commit_ts_us: PG_EPOCH_OFFSET_US
            }
        );
    }

    #[test]
    fn streamed_changes_carry_their_xid_and_stream_messages_parse() {
        let mut b = BytesMut::new();
        b.put_u8(b'I');
        b.put_u32(742);
        b.put_u32(16384);
        b.put_u8(b'N');
        b.put_i16(1);
        b.put_u8(b'n');
        let (message, xid) = parse_in(b.freeze(), true).unwrap();
        assert_eq!(xid, Some(742));
        assert_eq!(
            message,
            PgOutput::Insert {
                relation: 16384,
                new: vec![TupleValue::Null]
            }
        );
        let mut b = BytesMut::new();
        b.put_u8(b'S');
        b.put_u32(741);
        b.put_u8(1);
        assert_eq!(
            parse(b.freeze()).unwrap(),
            PgOutput::StreamStart {
                xid: 741,
                first_segment: true
            }
        );
        assert_eq!(
            parse(commit_bytes(Some(741))).unwrap(),
            PgOutput::StreamCommit {
                xid: 741,
                commit_lsn: Lsn(0x10),
                end_lsn: Lsn(0x20),
                commit_ts_us: PG_EPOCH_OFFSET_US
            }
        );
        let mut b = BytesMut::new();
        b.put_u8(b'A');
        b.put_u32(741);
        b.put_u32(742);
        assert_eq!(
            parse(b.freeze()).unwrap(),
            PgOutput::StreamAbort {
                xid: 741,
                subxid: 742
            }
        );
        assert!(parse(Bytes::from_static(b"A\0\0\0\x01")).is_err());
    }

    #[test]
    fn every_truncation_of_a_message_is_an_error() {
        let full = relation_bytes();
        for len in 0..full.len() {
            assert!(
                parse(full.slice(..len)).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
    }
}
