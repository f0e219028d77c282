//! JSON-lines file sink: one Debezium-envelope JSON object per line, per change event.
//!
//! - `config`: `[[sinks]] kind = "jsonl"`;
//! - `writer`: appending, fsync, and the offsets file that makes restarts exact.
//!
//! Delivery: each write appends lines, fsyncs the file, then replaces `<path>.offsets.json`
//! (crash-atomically) with the file's new length and the next log offset per partition. On open,
//! lines past the recorded length (written, never committed) are cut, and reading resumes at the
//! recorded offsets: after any crash each event is in the file exactly once, with no gap.
//! Tombstones (null values) are not written: they are not events.

pub mod config;
mod writer;

pub use config::JsonlSinkConfig;
pub use writer::{JsonlError, JsonlSink};

sluice_core::reason_error!(
    /// Why the sink's file cannot be written.
    pub Unwritable
);

/// `check --connect` for a JSONL sink: the file (or the directory it goes in, or the nearest
/// one that exists) must be writable, and the file, if there, a file.
pub fn probe(config: &JsonlSinkConfig) -> Result<String, Unwritable> {
    let path = &config.path;
    if path.is_dir() {
        return Err(format!("{} is a directory, not a file", path.display()).into());
    }
    let mut dir = path.parent().unwrap_or(std::path::Path::new("."));
    while !dir.exists() {
        dir = dir.parent().unwrap_or(std::path::Path::new("/"));
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!(
            "{} cannot be created: {} is not a directory",
            path.display(),
            dir.display()
        )
        .into());
    }
    if meta.permissions().readonly() {
        return Err(format!("{} is read-only", dir.display()).into());
    }
    Ok(format!("{} is writable", path.display()))
}
