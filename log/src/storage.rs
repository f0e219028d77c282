//! The file I/O of segment data, behind a trait so that tests can inject faults (torn writes,
//! failing fsyncs) exactly where a crash or a bad disk would strike. [`FileSystem`] is the real
//! thing; index files and small metadata files use std directly (they are derived or written
//! crash-atomically).

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// Where segment files live.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Opens a segment file; `create` creates it (empty) when missing.
    fn open(&self, path: &Path, writable: bool, create: bool) -> io::Result<Arc<dyn SegmentFile>>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes entries created, renamed or removed in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// One open segment file.
pub trait SegmentFile: Send + Sync + Debug {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Durable data (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Durable data and metadata (fsync), after a change of length.
    fn sync_all(&self) -> io::Result<()>;
    /// Time of the last write, for retention and tombstone horizons.
    fn modified(&self) -> io::Result<SystemTime>;
}

/// The local file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileSystem;

impl Storage for FileSystem {
    fn open(&self, path: &Path, writable: bool, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(file))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl SegmentFile for File {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, pos)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }

    fn modified(&self) -> io::Result<SystemTime> {
        self.metadata()?.modified()
    }
}
