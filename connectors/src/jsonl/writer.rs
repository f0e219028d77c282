//! Appends event values as lines and commits file length and offsets together.

use crate::reshape::Destination;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_core::retry::{Classify, ErrorKind};
use sluice_core::sink::{Offsets, RecordSink, SinkRecord};
use sluice_schema_registry::avro::decode::is_framed;
use sluice_schema_registry::avro::AvroDecoder;

use super::config::JsonlSinkConfig;

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is {found} bytes but {} says {committed} were committed: the file was truncated or replaced; \
         move both files away to start over",
        path.display(), offsets.display()
    )]
    FileShrank {
        path: PathBuf,
        offsets: PathBuf,
        found: u64,
        committed: u64,
    },
    #[error("{} is unreadable: {reason}", path.display())]
    BadOffsets { path: PathBuf, reason: String },
    #[error(
        "the record at {topic}[{partition}] offset {offset} is Avro and cannot be written as JSON: {reason}"
    )]
    Undecodable {
        topic: String,
        partition: u32,
        offset: u64,
        reason: String,
    },
}

impl Classify for JsonlError {
    fn kind(&self) -> ErrorKind {
        match self {
            // A full disk or a busy file may clear up; a path sluice may not write, a
            // directory that cannot exist (a file in its place), a shrunken file or garbage
            // will not.
            JsonlError::Io { source, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied
                | io::ErrorKind::AlreadyExists
                | io::ErrorKind::ReadOnlyFilesystem
                | io::ErrorKind::NotADirectory
                | io::ErrorKind::IsADirectory
                | io::ErrorKind::InvalidFilename => ErrorKind::Definite,
                _ => ErrorKind::Transient,
            },
            JsonlError::FileShrank { .. }
            | JsonlError::BadOffsets { .. }
            | JsonlError::Undecodable { .. } => ErrorKind::Definite,
        }
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> JsonlError + 'a {
    move |source| JsonlError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Serialize, Deserialize, Default)]
struct Committed {
    file_len: u64,
    offsets: Vec<CommittedOffset>,
}

#[derive(Serialize, Deserialize)]
struct CommittedOffset {
    topic: String,
    partition: u32,
    offset: u64,
}

pub struct JsonlSink {
    config: JsonlSinkConfig,
    file: Option<File>,
    file_len: u64,
    offsets: Offsets,
    buf: Vec<u8>,
    /// Turns Avro values (Confluent wire format) into JSON lines; JSON values pass through.
    decoder: Option<AvroDecoder>,
}

impl JsonlSink {
    pub fn new(config: JsonlSinkConfig, decoder: Option<AvroDecoder>) -> JsonlSink {
        JsonlSink {
            config,
            file: None,
            file_len: 0,
            offsets: Offsets::new(),
            buf: Vec::new(),
            decoder,
        }
    }

    fn load_committed(&self) -> Result<Option<Committed>, JsonlError> {
        let path = self.config.offsets_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| JsonlError::BadOffsets {
                        path,
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(JsonlError::Io {
                action: "read",
                path,
                source: e,
            }),
        }
    }

    fn store_committed(&self) -> Result<(), JsonlError> {
        let committed = Committed {
            file_len: self.file_len,
            offsets: self
                .offsets
                .iter()
                .map(|((topic, partition), offset)| CommittedOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                })
                .collect(),
        };
        let path = self.config.offsets_path();
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&committed).expect("offsets serialize");
        let write = || -> io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new(".")),
            )?
            .sync_all()
        };
        write().map_err(io_error("write", &path))
    }
}

impl RecordSink for JsonlSink {
    type Error = JsonlError;

    async fn open(&mut self) -> Result<Option<Offsets>, JsonlError> {
        let path = self.config.path.clone();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_error("create directory for", &path))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        let found = file.metadata().map_err(io_error("stat", &path))?.len();
        let committed = self.load_committed()?;
        let stored = match committed {
            Some(committed) => {
                if found < committed.file_len {
                    return Err(JsonlError::FileShrank {
                        path,
                        offsets: self.config.offsets_path(),
                        found,
                        committed: committed.file_len,
                    });
                }
                if found > committed.file_len {
                    tracing::info!(path = %path.display(), bytes = found - committed.file_len, "cutting lines written but not committed before the last stop");
                    file.set_len(committed.file_len)
                        .and_then(|()| file.sync_all())
                        .map_err(io_error("truncate", &path))?;
                }
                self.file_len = committed.file_len;
                self.offsets = committed
                    .offsets
                    .into_iter()
                    .map(|o| ((o.topic, o.partition), o.offset))
                    .collect();
                Some(self.offsets.clone())
            }
            None => {
                // First open of this file: record its current length as committed before
                // writing anything, so that a crash before the first commit cuts back to it.
                self.file_len = found;
                self.store_committed()?;
                None
            }
        };
        self.file = Some(file);
        Ok(stored)
    }

    fn resume_from(&mut self, offsets: &Offsets) {
        self.offsets = offsets.clone();
    }

    async fn write(&mut self, records: &[SinkRecord]) -> Result<(), JsonlError> {
        self.append(records, None)
    }

    async fn close(&mut self) -> Result<(), JsonlError> {
        self.file = None;
        Ok(())
    }
}

impl crate::reshape::ReshapedSink for JsonlSink {
    async fn write_reshaped(
        &mut self,
        records: &[SinkRecord],
        to: &[Destination],
    ) -> Result<(), JsonlError> {
        self.append(records, Some(to))
    }
}

impl JsonlSink {
    /// Appends the records' values as lines (with transforms, those not `Dropped`), and
    /// commits.
    fn append(
        &mut self,
        records: &[SinkRecord],
        to: Option<&[Destination]>,
    ) -> Result<(), JsonlError> {
        let path = &self.config.path;
        let file = self.file.as_mut().expect("open before write");
        self.buf.clear();
        for (i, record) in records.iter().enumerate() {
            let dropped = to.is_some_and(|to| to[i] == Destination::Dropped);
            if let Some(value) = record.record.value.as_ref().filter(|_| !dropped) {
                if is_framed(value) {
                    let undecodable = |reason: String| JsonlError::Undecodable {
                        topic: record.topic.to_string(),
                        partition: record.partition,
                        offset: record.record.offset,
                        reason,
                    };
                    let decoder = self.decoder.as_mut().ok_or_else(|| {
                        undecodable("this sink has no schema registry to read it with".into())
                    })?;
                    let json = decoder.to_json(value).map_err(|e| undecodable(e.0))?;
                    serde_json::to_writer(&mut self.buf, &json).expect("writing to a Vec");
                } else {
                    self.buf.extend_from_slice(value);
                }
                self.buf.push(b'\n');
            }
            self.offsets.insert(
                (record.topic.to_string(), record.partition),
                record.record.offset + 1,
            );
        }
        file.write_all(&self.buf)
            .map_err(io_error("append to", path))?;
        file.sync_data().map_err(io_error("fsync", path))?;
        self.file_len += self.buf.len() as u64;
        self.store_committed()
    }
}
