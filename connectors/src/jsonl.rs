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
