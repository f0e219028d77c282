//! Streamed in-progress transactions (pgoutput protocol 2), held on local disk until they end.
//!
//! With protocol 1 the server keeps a running transaction in its walsender's memory and, past
//! `logical_decoding_work_mem`, spills it to files under `pg_replslot`, decoding and sending
//! nothing until it commits: a 5 GB load costs the primary 5 GB of disk and sluice sees its
//! first row only after the whole transaction has been read back. With `streaming = on` the
//! server sends the transaction in blocks as it decodes it, and sends Stream Commit or Stream
//! Abort at the end.
//!
//! Blocks of several transactions interleave and any of them may still abort, while the log
//! keeps one open transaction per source (the shape a Kafka transaction has too). So each
//! streamed transaction's messages are appended to a file of its own here, and at its Stream
//! Commit the file is replayed through the ordinary path: in parts of `max_batch_events`, the
//! last with the commit's checkpoint, exactly as a large protocol-1 transaction. An abort
//! deletes the file; a subtransaction's abort cuts the file back to where that subtransaction's
//! first change began (Postgres' own apply worker does the same), since every change after it
//! belongs to it or to subtransactions nested in it.
//!
//! Relation messages inside a block go to the file with the changes, in order, and are read back
//! into the replay's own relations: the transaction's changes are decoded with the columns they
//! were made with (an ALTER TABLE inside it included), and the stream's relations, which
//! describe the tables for the transactions that commit meanwhile, are left as they are.
//!
//! Memory: a 64 KiB write buffer per open streamed transaction, and one when replaying.
//! Disk: the transaction's pgoutput bytes, in `<log dir>/spool/<source>/`, which is emptied on
//! start (after a restart the server streams every open transaction again from its start).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sluice_core::position::Lsn;

use super::Relation;
use crate::postgres::PostgresError;

const BUFFER: usize = 64 << 10;
/// A streamed transaction at least this large is logged at info when it ends.
const LARGE: u64 = 64 << 20;

/// The open streamed transactions of one source.
pub(super) struct Spools {
    dir: PathBuf,
    open: HashMap<u32, Spool>,
    /// The transaction of the block being received.
    current: Option<u32>,
}

struct Spool {
    path: PathBuf,
    file: BufWriter<File>,
    len: u64,
    /// Subtransactions seen, with the offset of their first change.
    subxacts: Vec<(u32, u64)>,
}

/// A committed streamed transaction being read back.
pub(super) struct Replay {
    reader: BufReader<File>,
    path: PathBuf,
    remaining: u64,
    /// The relations as the transaction's own Relation messages describe them.
    pub(super) relations: HashMap<u32, Relation>,
    /// Where the transaction's commit record ends.
    pub(super) end_lsn: Lsn,
}

fn failure(what: &str, path: &Path, err: &io::Error) -> PostgresError {
    PostgresError::Setup {
        problem: format!(
            "cannot {what} {} (a large transaction the server streams while it runs is kept \
             there until it commits): {err}",
            path.display()
        ),
        fix: "free space in the log's directory (the transaction needs about its own size), \
              or set stream_in_progress = false to have the server hold it until its commit"
            .into(),
    }
}

impl Spools {
    /// The spool directory `dir`, emptied of files an earlier run left.
    pub(super) fn open(dir: PathBuf) -> Result<Spools, PostgresError> {
        fs::create_dir_all(&dir).map_err(|e| failure("create", &dir, &e))?;
        let entries = fs::read_dir(&dir).map_err(|e| failure("list", &dir, &e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "spool") {
                fs::remove_file(&path).map_err(|e| failure("remove", &path, &e))?;
            }
        }
        Ok(Spools {
            dir,
            open: HashMap::new(),
            current: None,
        })
    }

    /// Whether a block is being received: its data messages carry xids.
    pub(super) fn in_block(&self) -> bool {
        self.current.is_some()
    }

    /// Stream Start: later messages belong to `xid` until the Stream Stop.
    pub(super) fn start(&mut self, xid: u32, first_segment: bool) -> Result<(), PostgresError> {
        if first_segment || !self.open.contains_key(&xid) {
            if !first_segment {
                return Err(PostgresError::protocol(format!(
                    "a later block of streamed transaction {xid} without its first"
                )));
            }
            let path = self.dir.join(format!("{xid}.spool"));
            let file = File::create(&path).map_err(|e| failure("create", &path, &e))?;
            tracing::debug!(xid, "streamed transaction begins");
            self.open.insert(
                xid,
                Spool {
                    path,
                    file: BufWriter::with_capacity(BUFFER, file),
                    len: 0,
                    subxacts: Vec::new(),
                },
            );
        }
        self.current = Some(xid);
        Ok(())
    }

    /// Stream Stop.
    pub(super) fn stop(&mut self) {
        self.current = None;
    }

    fn current(&mut self) -> Result<&mut Spool, PostgresError> {
        self.current
            .and_then(|xid| self.open.get_mut(&xid))
            .ok_or_else(|| PostgresError::protocol("streamed change outside a stream block"))
    }

    /// Appends a message of the block (its raw bytes, parsed again at replay).
    pub(super) fn append(
        &mut self,
        subxid: u32,
        wal_start: Lsn,
        data: &Bytes,
    ) -> Result<(), PostgresError> {
        let top = self.current;
        let spool = self.current()?;
        if Some(subxid) != top && !spool.subxacts.iter().any(|(x, _)| *x == subxid) {
            spool.subxacts.push((subxid, spool.len));
        }
        let len = u32::try_from(data.len())
            .map_err(|_| PostgresError::protocol("streamed message over 4 GiB"))?;
        let write = |file: &mut BufWriter<File>| -> io::Result<()> {
            file.write_all(&len.to_le_bytes())?;
            file.write_all(&wal_start.0.to_le_bytes())?;
            file.write_all(data)
        };
        write(&mut spool.file).map_err(|e| failure("write", &spool.path, &e))?;
        spool.len += 12 + u64::from(len);
        Ok(())
    }

    /// Stream Abort: drops the transaction, or cuts back a subtransaction's changes.
    pub(super) fn abort(&mut self, xid: u32, subxid: u32) -> Result<(), PostgresError> {
        if xid == subxid {
            if let Some(spool) = self.open.remove(&xid) {
                if spool.len >= LARGE {
                    tracing::info!(
                        xid,
                        mb = spool.len >> 20,
                        "a large streamed transaction rolled back; dropped"
                    );
                } else {
                    tracing::debug!(xid, bytes = spool.len, "streamed transaction aborted");
                }
                drop(spool.file);
                let _ = fs::remove_file(&spool.path);
            }
            return Ok(());
        }
        let Some(spool) = self.open.get_mut(&xid) else {
            return Ok(());
        };
        let Some(at) = spool.subxacts.iter().position(|(x, _)| *x == subxid) else {
            // A subtransaction with no change streamed: nothing to cut.
            return Ok(());
        };
        let offset = spool.subxacts[at].1;
        spool.subxacts.truncate(at);
        let cut = |spool: &mut Spool| -> io::Result<()> {
            spool.file.flush()?;
            spool.file.get_mut().set_len(offset)?;
            spool.file.get_mut().seek(io::SeekFrom::Start(offset))?;
            Ok(())
        };
        cut(spool).map_err(|e| failure("truncate", &spool.path, &e))?;
        spool.len = offset;
        Ok(())
    }

    /// Stream Commit of `xid`, whose commit record ends at `end_lsn`: the transaction, to be
    /// read back.
    pub(super) fn commit(&mut self, xid: u32, end_lsn: Lsn) -> Result<Replay, PostgresError> {
        let spool = self.open.remove(&xid).ok_or_else(|| {
            PostgresError::protocol(format!(
                "commit of streamed transaction {xid} that never streamed"
            ))
        })?;
        let Spool {
            path,
            mut file,
            len,
            ..
        } = spool;
        file.flush().map_err(|e| failure("write", &path, &e))?;
        drop(file);
        let reader = File::open(&path).map_err(|e| failure("read", &path, &e))?;
        if len >= LARGE {
            tracing::info!(
                xid,
                mb = len >> 20,
                "a large streamed transaction committed; writing it to the log"
            );
        } else {
            tracing::debug!(xid, bytes = len, "streamed transaction committed");
        }
        Ok(Replay {
            reader: BufReader::with_capacity(BUFFER, reader),
            path,
            remaining: len,
            relations: HashMap::new(),
            end_lsn,
        })
    }
}

impl Replay {
    /// The next message and the WAL position it was sent with; `None` at the end.
    pub(super) fn next(&mut self) -> Result<Option<(Lsn, Bytes)>, PostgresError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let mut read = || -> io::Result<(Lsn, Bytes)> {
            let mut header = [0u8; 12];
            self.reader.read_exact(&mut header)?;
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
            let lsn = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
            let mut data = vec![0; len as usize];
            self.reader.read_exact(&mut data)?;
            Ok((Lsn(lsn), Bytes::from(data)))
        };
        let (lsn, data) = read().map_err(|e| failure("read", &self.path, &e))?;
        self.remaining = self.remaining.saturating_sub(12 + data.len() as u64);
        Ok(Some((lsn, data)))
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Drop for Spools {
    fn drop(&mut self) {
        for spool in self.open.values() {
            let _ = fs::remove_file(&spool.path);
        }
    }
}
